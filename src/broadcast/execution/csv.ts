/**
 * CSV export of the broadcast log (proof of play that staff open in a spreadsheet).
 * RFC 4180: fields separated by commas, records by CRLF; a field containing a
 * comma, double quote, CR or LF is enclosed in double quotes and its quotes
 * are doubled. UTF-8 with a byte-order mark so that Excel shows Vietnamese
 * names (Thôn Đông, loa Đình làng) intact.
 *
 * Formula injection: text that starts with `=`, `+`, `-`, `@`, TAB or CR would
 * run as a formula in a spreadsheet (detail strings come from devices), so
 * such text fields get a leading `'` (OWASP "CSV Injection"). Numbers are
 * written as they are.
 */
export const UTF8_BOM = '\uFEFF';

export type CsvValue = string | number | boolean | null | undefined;

const NEEDS_QUOTES = /[",\r\n]/;
const FORMULA_START = /^[=+\-@\t\r]/;

export function csvField(v: CsvValue): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'number') return Number.isFinite(v) ? String(v) : '';
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  let s = v;
  if (FORMULA_START.test(s)) s = `'${s}`;
  return NEEDS_QUOTES.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function csvRecord(fields: readonly CsvValue[]): string {
  return fields.map(csvField).join(',');
}

/** The whole document: BOM, header, records, each record ended by CRLF. */
export function toCsv(header: readonly string[], rows: Iterable<readonly CsvValue[]>, opts: { bom?: boolean } = {}): string {
  const out: string[] = [csvRecord(header)];
  for (const r of rows) out.push(csvRecord(r));
  return (opts.bom === false ? '' : UTF8_BOM) + out.join('\r\n') + '\r\n';
}
