/** Result table and the machine-readable BENCH_RESULT line. */
export type Row = [label: string, value: string];

export function table(title: string, rows: Row[]): string {
  const w = Math.max(...rows.map(([l]) => l.length), 10);
  const line = '-'.repeat(w + 3 + Math.max(...rows.map(([, v]) => v.length), 10));
  return [title, line, ...rows.map(([l, v]) => `${l.padEnd(w)} | ${v}`), line].join('\n');
}

export function fmt(n: number | null | undefined, digits = 0): string {
  if (n === null || n === undefined || Number.isNaN(n)) return 'n/a';
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

export function mib(bytes: number | null | undefined): string {
  return bytes ? `${(bytes / 1048576).toFixed(0)} MiB` : 'n/a';
}

/** Rounds numbers for the JSON line. */
export function round(n: number | null | undefined, digits = 2): number | null {
  if (n === null || n === undefined || !Number.isFinite(n)) return null;
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
