/**
 * InfluxDB 1.x HTTP API: `POST /write?db=&precision=ms` with line
 * protocol, InfluxQL via `POST /query?db=&epoch=ms`, basic auth header when a
 * username is set, `CREATE DATABASE` at start (idempotent in 1.x; failure
 * tolerated while the server is down, retried before the next write).
 */
import type { Config } from '../../config/index.js';
import { Errors } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { networkMessage, outcomeForStatus, type InfluxBackend, type WriteOutcome } from './influx-backend.js';
import {
  aggStatement, countTotal, deleteDeviceStatements, fieldKeyPairs, parseFieldKeys, parseRows, quoteIdent, rawStatement, showFieldKeysStatement,
  type InfluxQLResponse, type InfluxQLResult,
} from './influxql.js';
import type { HistoryPoint, HistoryQuery } from './types.js';
import { isNumericAgg, normaliseQuery } from './windows.js';

type InfluxSettings = Config['influx'];

export class InfluxV1Backend implements InfluxBackend {
  readonly kind = 'influxdb-v1' as const;
  private readonly base: string;
  private readonly headers: Record<string, string> = {};
  private dbReady = false;

  constructor(private readonly cfg: Readonly<InfluxSettings>, private readonly logger: Logger) {
    this.base = (cfg.url ?? 'http://127.0.0.1:8086').replace(/\/+$/, '');
    if (cfg.username) {
      this.headers.authorization = 'Basic ' + Buffer.from(`${cfg.username}:${cfg.password ?? ''}`).toString('base64');
    }
  }

  async init(): Promise<void> {
    const r = await this.influxql(`CREATE DATABASE ${quoteIdent(this.cfg.database)}`, false, AbortSignal.timeout(this.cfg.timeoutMs));
    if (r.error) throw new Error(r.error);
    this.dbReady = true;
  }

  async write(body: string, _lines: number, signal: AbortSignal): Promise<WriteOutcome> {
    if (!this.dbReady) {
      try { await this.init(); } catch (err) { this.logger.debug({ err }, 'influx: CREATE DATABASE not possible yet'); }
    }
    const url = `${this.base}/write?db=${encodeURIComponent(this.cfg.database)}&precision=ms`;
    try {
      const res = await fetch(url, {
        method: 'POST', body, headers: { ...this.headers, 'content-type': 'text/plain; charset=utf-8' },
        signal: AbortSignal.any([signal, AbortSignal.timeout(this.cfg.timeoutMs)]),
      });
      const text = res.status === 204 ? '' : await res.text();
      const out = outcomeForStatus(res.status, serverMessage(text));
      if (!out.ok && out.status === 404) this.dbReady = false; // "database not found": create it again
      return out;
    } catch (err) {
      return { ok: false, retry: true, status: null, message: networkMessage(err) };
    }
  }

  /** Run InfluxQL; returns the first statement's result. Throws on HTTP/network failure. */
  async influxql(q: string, withDb: boolean, signal?: AbortSignal): Promise<InfluxQLResult> {
    const form = new URLSearchParams({ q, epoch: 'ms' });
    if (withDb) form.set('db', this.cfg.database);
    const res = await fetch(`${this.base}/query`, {
      method: 'POST', body: form,
      headers: { ...this.headers, 'content-type': 'application/x-www-form-urlencoded' },
      signal: signal ?? AbortSignal.timeout(this.cfg.timeoutMs),
    });
    const text = await res.text();
    let json: InfluxQLResponse;
    try { json = JSON.parse(text) as InfluxQLResponse; } catch { throw new Error(`InfluxDB answered ${res.status}: ${text.slice(0, 200)}`); }
    if (json.error) throw new Error(json.error);
    if (!res.ok) throw new Error(`InfluxDB answered ${res.status}`);
    return json.results?.[0] ?? {};
  }

  async query(input: HistoryQuery): Promise<HistoryPoint[]> {
    const q = normaliseQuery(input);
    const m = this.cfg.measurement;
    try {
      if (q.everyMs === undefined) {
        if (q.limit === 0) return [];
        return parseRows(this.check(await this.influxql(rawStatement(m, q), true)), undefined, q.limit);
      }
      const agg = q.agg!;
      let fields = q.fields;
      if (!fields.length || isNumericAgg(agg)) {
        const types = parseFieldKeys(this.check(await this.influxql(showFieldKeysStatement(m), true)));
        if (!fields.length) fields = [...types.keys()];
        if (isNumericAgg(agg)) fields = fields.filter((f) => { const t = types.get(f); return t === 'float' || t === 'integer' || t === 'unsigned'; });
      }
      if (!fields.length) return [];
      return parseRows(this.check(await this.influxql(aggStatement(m, q, agg, fields), true)), q.everyMs);
    } catch (err) {
      if (err instanceof NoDatabase) return [];
      throw Errors.STORE_UNAVAILABLE(`InfluxDB query failed: ${(err as Error).message}`);
    }
  }

  async fieldTypes(): Promise<[string, string][]> {
    try {
      return fieldKeyPairs(this.check(await this.influxql(showFieldKeysStatement(this.cfg.measurement), true)));
    } catch (err) {
      if (err instanceof NoDatabase) return [];
      throw err;
    }
  }

  /** Counts the device's readings, then DELETE (a time bound) or DROP SERIES (all of it, index entries too). */
  async deleteDevice(deviceId: string, before: number | null, signal: AbortSignal): Promise<number | null> {
    const sig = (): AbortSignal => AbortSignal.any([signal, AbortSignal.timeout(this.cfg.timeoutMs)]);
    const st = deleteDeviceStatements(this.cfg.measurement, deviceId, before);
    let count: number;
    try {
      count = countTotal(this.check(await this.influxql(st.count, true, sig())));
    } catch (err) {
      if (err instanceof NoDatabase) return 0; // nothing was ever written
      throw err;
    }
    this.check(await this.influxql(st.remove, true, sig()));
    return count;
  }

  private check(r: InfluxQLResult): InfluxQLResult {
    if (r.error) {
      if (/database not found/.test(r.error)) throw new NoDatabase(r.error);
      throw new Error(r.error);
    }
    return r;
  }

  async ping(timeoutMs: number): Promise<boolean> {
    try {
      const res = await fetch(`${this.base}/ping`, { headers: this.headers, signal: AbortSignal.timeout(timeoutMs) });
      await res.arrayBuffer();
      return res.status === 204 || res.ok;
    } catch { return false; }
  }

  async close(): Promise<void> { /* fetch keeps no state to close */ }
}

class NoDatabase extends Error {}

function serverMessage(text: string): string {
  try { const j = JSON.parse(text) as { error?: string; message?: string }; return j.error ?? j.message ?? text; } catch { return text; }
}
