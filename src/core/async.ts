/** Bounded waiting, one way for every part (stop sequences, health checks, worker pings). */

/** `p`, or a rejection naming the bound if it does not settle within `ms`. The timer never outlives the race. */
export function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => { timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms); }),
  ]);
}

/** Wait for `p` at most `ms` (a stop phase that must not hang): true when it settled in time. Never rejects. */
export async function settleWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  try {
    await withTimeout(p.catch(() => undefined), ms);
    return true;
  } catch {
    return false;
  }
}

/** Poll `cond` every `stepMs` until it holds or `ms` passed: true when it held. */
export async function waitUntil(cond: () => boolean, ms: number, stepMs = 10): Promise<boolean> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() >= until) return false;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return true;
}
