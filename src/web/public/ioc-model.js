// The overview's arithmetic, kept apart from the screen: which row (commune)
// each area falls in, and the counts per row. Areas form the tree province →
// commune → village (two-tier local government since July 2025: no
// districts), so a row is a commune with its villages.

/**
 * The rows of the overview from the areas the caller can see: one per
 * commune, grouped by province. An area whose commune the caller cannot see
 * (an account scoped to one village) is a row of its own, and so is a
 * province for the devices placed on the province itself.
 */
export function areaIndex(areas) {
  const byCode = new Map(areas.map((a) => [a.code, a]));
  const parentOf = (code) => byCode.get(code)?.parent ?? null;
  const ancestors = (code) => {
    const out = [];
    for (let p = parentOf(code); p && byCode.has(p) && out.length < 8; p = parentOf(p)) out.push(p);
    return out;
  };
  /** The row an area's devices are counted in. */
  const rowOf = (code) => {
    if (!byCode.has(code)) return null;
    const chain = [code, ...ancestors(code)];
    return chain.find((c) => byCode.get(c).level === 'commune') ?? chain[chain.length - 1];
  };
  const provinceOf = (code) => [code, ...ancestors(code)].find((c) => byCode.get(c)?.level === 'province') ?? null;
  const byName = (a, b) => a.name.localeCompare(b.name, 'vi');
  const rows = areas.filter((a) => rowOf(a.code) === a.code && a.level !== 'province').sort(byName);
  const groups = [];
  for (const p of areas.filter((a) => a.level === 'province').sort(byName)) {
    groups.push({ province: p, rows: rows.filter((r) => provinceOf(r.code) === p.code) });
  }
  const loose = rows.filter((r) => provinceOf(r.code) === null);
  if (loose.length) groups.push({ province: null, rows: loose });
  return { byCode, rowOf, ancestors, groups };
}

/** Whether an alert for `alertAreas` concerns the row `row` (it names the row, one of its villages, or its province). */
export function alertConcerns(index, alertAreas, row) {
  const up = new Set([row, ...index.ancestors(row)]);
  return alertAreas.some((a) => up.has(a) || index.ancestors(a).includes(row));
}

/** The alerts API's reply as a list, whatever its envelope. */
export function alertList(reply) {
  if (Array.isArray(reply)) return reply;
  return reply?.alerts ?? reply?.items ?? [];
}

const emptyCounts = () => ({
  sensors: { total: 0, online: 0, disabled: 0 }, speakers: { total: 0, online: 0, disabled: 0 },
  playing: 0, alerts: 0, pending: 0, offlineNames: [],
});

/**
 * Counts per row and in all: devices online of those enabled (a disabled
 * device is staff's choice, not a fault, so it is counted apart), speakers
 * playing now, alerts active and awaiting approval. `playing` is the set of
 * speaker ids playing; `alerts` is null when the alerts API is not there.
 */
export function summarize(index, devices, playing, alerts) {
  const rows = new Map();
  const total = emptyCounts();
  const countsOf = (row) => {
    let c = rows.get(row);
    if (!c) rows.set(row, c = emptyCounts());
    return c;
  };
  for (const d of devices.values()) {
    const row = index.rowOf(d.area);
    for (const c of row ? [countsOf(row), total] : [total]) {
      const k = d.kind === 'speaker' ? c.speakers : c.sensors;
      if (!d.enabled) { k.disabled += 1; continue; }
      k.total += 1;
      if (d.online) k.online += 1;
      else c.offlineNames.push(d.name);
      if (d.kind === 'speaker' && d.online && playing.has(d.id)) c.playing += 1;
    }
  }
  if (alerts) {
    for (const a of alerts) {
      const field = a.state === 'active' ? 'alerts' : a.state === 'pending_approval' ? 'pending' : null;
      if (!field) continue;
      total[field] += 1;
      const areas = Array.isArray(a.areas) ? a.areas : [];
      for (const g of index.groups) for (const r of g.rows) if (alertConcerns(index, areas, r.code)) countsOf(r.code)[field] += 1;
    }
  }
  for (const c of [...rows.values(), total]) c.offlineNames.sort((a, b) => a.localeCompare(b, 'vi'));
  return { rows, total, countsOf: (row) => rows.get(row) ?? emptyCounts() };
}

/** The speakers playing now, from recent broadcasts (their speakers' states). */
export function playingFrom(broadcasts) {
  const playing = new Map();
  for (const b of broadcasts ?? []) {
    for (const t of b.targets ?? []) if (t.state === 'playing') playing.set(playKey(b.id, t.deviceId), t.deviceId);
  }
  return playing;
}

export const playKey = (broadcastId, deviceId) => `${broadcastId}\u0000${deviceId}`;
