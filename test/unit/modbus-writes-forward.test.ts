/**
 * Modbus writes from any node (src/modbus/writes.ts), with the poller, the
 * lease table and the calls between nodes replaced: which path a write takes
 * (this node's line, the holder's, none), what each outcome of the call
 * becomes for the operator (the holder's own error with its code; 503 when
 * certainly not written; 504 KENG_ERR_MODBUS_OUTCOME_UNKNOWN when it may have
 * been), and who records the audit entry. With real nodes, Redis and a Modbus
 * gateway: test/integration/cluster-modbus.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { Errors, withDetails, type KengError } from '../../src/core/errors.js';
import { createLogger } from '../../src/core/logger.js';
import { ModbusWrites, forwardTimeoutMs, type ForwardOutcome, type ModbusWritesDeps, type WriteRequest } from '../../src/modbus/writes.js';
import type { PreparedWrite, WriteResult } from '../../src/modbus/write.js';

const logger = createLogger('silent');
const req: WriteRequest = { actor: { kind: 'user', id: 'op-a' }, ip: '10.0.0.9', deviceId: 'pump-1', field: 'level', value: 7, before: { field: 'level', value: 3 } };
const RESULT: WriteResult = { deviceId: 'pump-1', field: 'level', value: 7, function: 'holding', address: 0, sent: [7], confirmation: { address: 0, value: 7 } };
const PREPARED = { settings: { deviceId: 'pump-1', transport: { type: 'modbus-tcp', host: '10.1.1.1', port: 502, unitId: 1 }, registerMap: { registers: [] }, pollIntervalSec: 5 } } as unknown as PreparedWrite;
const LINE = 'tcp:10.1.1.1:502';

function rig(o: { mine?: boolean; holder?: string | null; outcome?: (id: string) => ForwardOutcome; writeFails?: KengError; cluster?: boolean } = {}) {
  const audit: Array<Record<string, unknown>> = [];
  const calls: Array<{ to: string; kind: string; payload: unknown; timeoutMs: number }> = [];
  const writes: Array<{ startBy?: number }> = [];
  const deps: ModbusWritesDeps = {
    poller: {
      prepareWrite: async () => PREPARED,
      mayWriteOn: (key) => key === LINE && o.mine === true,
      write: async (_id, _f, _v, opts = {}) => { writes.push(opts); if (o.writeFails) throw o.writeFails; return RESULT; },
    },
    audit: { record: async (e) => { audit.push(e as unknown as Record<string, unknown>); return undefined as never; } },
    logger,
    ...(o.cluster === false ? {} : {
      cluster: {
        nodeId: 'n2', requestTimeoutMs: 1000,
        holders: async () => new Map(o.holder ? [[LINE, o.holder]] : []),
        calls: { call: async (to, kind, payload, timeoutMs) => { calls.push({ to, kind, payload, timeoutMs }); return o.outcome!('req-1'); } },
      },
    }),
  };
  return { w: new ModbusWrites(deps), audit, calls, writes };
}

async function failure(p: Promise<unknown>): Promise<KengError> {
  try { await p; } catch (e) { return e as KengError; }
  throw new Error('did not fail');
}

describe('Modbus writes from any node', () => {
  it('the forwarding timeout: a request under way on the line, the write at worst, the bus both ways (6.5 s for 1 s)', () => {
    expect(forwardTimeoutMs(1000)).toBe(6_500);
    expect(forwardTimeoutMs(500)).toBe(4_500);
  });

  it('embedded mode, or this node\'s line: written here and audited as always (no node fields in embedded mode)', async () => {
    const e = rig({ cluster: false });
    expect(await e.w.write(req)).toEqual(RESULT);
    expect(e.audit).toEqual([{ actor: req.actor, ip: '10.0.0.9', action: 'device.modbus_write', target: 'device:pump-1', before: req.before,
      after: { field: 'level', value: 7, address: 0, function: 'holding', sent: [7], confirmation: { address: 0, value: 7 } } }]);
    const c = rig({ mine: true, holder: 'n2' });
    await c.w.write(req);
    expect(c.calls).toEqual([]);
    expect(c.audit[0]!.after).toMatchObject({ node: 'n2' });
  });

  it('another node\'s line: sent to it with the caller, answered with its result; the holder audits, not this node', async () => {
    const r = rig({ holder: 'n1', outcome: (id) => ({ status: 'answered', id, answer: { ok: true, result: RESULT } }) });
    expect(await r.w.write(req)).toEqual(RESULT);
    expect(r.calls).toEqual([{ to: 'n1', kind: 'modbus.write', payload: { req }, timeoutMs: 6_500 }]);
    expect(r.writes).toEqual([]);
    expect(r.audit).toEqual([]);
  });

  it('the holder\'s error comes back with its code, status and details', async () => {
    const wire = { code: 'KENG_ERR_MODBUS_EXCEPTION', message: 'The device refused: exception 2 (illegal data address)', details: { exceptionCode: 2, meaning: 'illegal data address' } };
    const r = rig({ holder: 'n1', outcome: (id) => ({ status: 'answered', id, answer: { ok: false, error: wire } }) });
    const e = await failure(r.w.write(req));
    expect({ code: e.code, statusCode: e.statusCode, message: e.message, details: e.details }).toEqual({ ...wire, statusCode: 502 });
    expect(r.audit).toEqual([]);
  });

  it('an answer naming a code this release does not know, or of no known shape: outcome unknown (504)', async () => {
    const r = rig({ holder: 'n1', outcome: (id) => ({ status: 'answered', id, answer: { ok: false, error: { code: 'KENG_ERR_FROM_THE_FUTURE', message: 'x' } } }) });
    expect((await failure(r.w.write(req))).code).toBe('KENG_ERR_MODBUS_OUTCOME_UNKNOWN');
  });

  it('sent, no answer in time: 504 KENG_ERR_MODBUS_OUTCOME_UNKNOWN naming the node and the request, audited here', async () => {
    const r = rig({ holder: 'n1', outcome: (id) => ({ status: 'no_answer', id }) });
    const e = await failure(r.w.write(req));
    expect({ code: e.code, status: e.statusCode }).toEqual({ code: 'KENG_ERR_MODBUS_OUTCOME_UNKNOWN', status: 504 });
    expect(e.details).toEqual({ node: 'n1', requestId: 'req-1', timeoutMs: 6_500 });
    expect(e.message).toMatch(/may or may not have happened.*[Rr]ead the register back/);
    expect(r.audit).toHaveLength(1);
    expect(r.audit[0]).toMatchObject({ actor: req.actor, ip: '10.0.0.9', after: { error: 'KENG_ERR_MODBUS_OUTCOME_UNKNOWN', node: 'n2', forwardedTo: 'n1', requestId: 'req-1' } });
  });

  it('certainly not written: not sent (Redis away), no holder, holder not serving writes → 503', async () => {
    for (const o of [
      { holder: 'n1', outcome: (id: string): ForwardOutcome => ({ status: 'unsent', id }) },
      { holder: null },
      { holder: 'n1', outcome: (id: string): ForwardOutcome => ({ status: 'refused', id, reason: 'old version' }) },
    ]) {
      const r = rig(o);
      const e = await failure(r.w.write(req));
      expect({ code: e.code, status: e.statusCode }).toEqual({ code: 'KENG_ERR_MODBUS_UNREACHABLE', status: 503 });
      expect(e.message).toMatch(/not written/);
      expect(r.writes).toEqual([]);
      expect(r.audit).toHaveLength(1);
    }
  });

  it('serving a forwarded write: done here with a start-by bound, audited with the caller, this node and the asking node', async () => {
    const r = rig({ mine: true, holder: 'n2' });
    const t0 = performance.now();
    const answer = await r.w.serve({ req }, { from: 'n9', id: 'req-7', remainingMs: 6_000 });
    expect(answer).toEqual({ ok: true, result: RESULT });
    // 6 s left, less the write at worst (3.5 s) and the answer's trip (0.75 s): started within about 1.75 s, or refused unsent.
    const startBy = r.writes[0]!.startBy! - t0;
    expect(startBy).toBeGreaterThan(1_600);
    expect(startBy).toBeLessThan(1_800);
    expect(r.audit).toEqual([expect.objectContaining({ actor: { kind: 'user', id: 'op-a' }, ip: '10.0.0.9', before: req.before,
      after: expect.objectContaining({ node: 'n2', via: 'n9', requestId: 'req-7', confirmation: { address: 0, value: 7 } }) })]);
  });

  it('serving: the device\'s error is answered with its code (and audited here); a malformed request is refused unrun', async () => {
    const err = withDetails(Errors.MODBUS_EXCEPTION('exception 2 (illegal data address)'), { exceptionCode: 2 });
    const r = rig({ mine: true, writeFails: err });
    expect(await r.w.serve({ req }, { from: 'n9', id: 'req-8', remainingMs: 6_000 })).toEqual({
      ok: false, error: { code: 'KENG_ERR_MODBUS_EXCEPTION', message: err.message, details: { exceptionCode: 2 } },
    });
    expect(r.audit[0]!.after).toMatchObject({ error: 'KENG_ERR_MODBUS_EXCEPTION', via: 'n9' });
    const bad = await r.w.serve({ req: { ...req, actor: 'admin' } }, { from: 'n9', id: 'req-9', remainingMs: 6_000 });
    expect(bad).toMatchObject({ ok: false, error: { code: 'KENG_ERR_VALIDATION' } });
    expect(r.writes).toHaveLength(1);
  });
});
