#!/usr/bin/env node
/**
 * Self time of a V8 .cpuprofile (node --cpu-prof) by function and by file,
 * optionally within a time window, plus a timeline of how busy the thread was.
 * Used to find where the time of `npm run bench:broadcast` goes.
 *
 *   node scripts/cpuprofile-top.mjs FILE.cpuprofile [--from US] [--to US] [--top 30] [--timeline MS]
 *
 * --from/--to: absolute monotonic microseconds (the profile's own clock, which
 * is CLOCK_MONOTONIC on Linux, the same as process.hrtime.bigint()/1000 in any
 * process), so a window printed by another process can be applied here.
 * --under RE: only samples with a matching frame on the stack; --callers RE: call paths of matching leaves.
 * --timeline MS: busy % (non-idle samples) and the top function per MS bucket.
 */
import { readFileSync } from 'node:fs';

const argv = process.argv.slice(2);
const file = argv.find((a) => !a.startsWith('--') && !/^\d/.test(a));
const opt = (name, def) => { const i = argv.indexOf(`--${name}`); return i >= 0 ? Number(argv[i + 1]) : def; };
if (!file) { console.error('usage: cpuprofile-top.mjs FILE.cpuprofile [--from US] [--to US] [--top N] [--timeline MS] [--under RE] [--callers RE]'); process.exit(2); }

const prof = JSON.parse(readFileSync(file, 'utf8'));
const from = opt('from', -Infinity);
const to = opt('to', Infinity);
const top = opt('top', 30);
const timelineMs = opt('timeline', 0);
// --callers PATTERN: for samples whose leaf function matches, the inclusive call paths (5 frames up).
const ci = argv.indexOf('--callers');
const callers = ci >= 0 ? new RegExp(argv[ci + 1]) : null;
const byPath = new Map();
// --under PATTERN: only samples with a frame matching PATTERN on their stack.
const ui = argv.indexOf('--under');
const under = ui >= 0 ? new RegExp(argv[ui + 1]) : null;
// Inclusive time: each function counted once per sample it is on the stack of.
const incl = new Map();

const nodes = new Map(prof.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const label = (n) => {
  const f = n.callFrame;
  const url = (f.url || '').replace(/^file:\/\//, '').replace(/.*node_modules\//, 'nm/').replace(/.*\/dist\//, 'dist/');
  return { fn: `${f.functionName || '(anonymous)'} ${url}:${f.lineNumber + 1}`, file: url || `(${f.functionName})` };
};

const byFn = new Map();
const byFile = new Map();
const buckets = new Map();
let t = prof.startTime;
let total = 0;
let idle = 0;
for (let i = 0; i < prof.samples.length; i++) {
  t += prof.timeDeltas[i];
  const dt = prof.timeDeltas[i + 1] ?? 0; // a sample stands for the time until the next one
  if (t < from || t > to) continue;
  const n = nodes.get(prof.samples[i]);
  if (under) {
    let hit = false;
    for (let id = n.id; id !== undefined && !hit; id = parent.get(id)) hit = under.test(label(nodes.get(id)).fn);
    if (!hit) continue;
  }
  const { fn, file: f } = label(n);
  total += dt;
  if (n.callFrame.functionName === '(idle)') idle += dt;
  byFn.set(fn, (byFn.get(fn) ?? 0) + dt);
  byFile.set(f, (byFile.get(f) ?? 0) + dt);
  const seen = new Set();
  for (let id = n.id; id !== undefined; id = parent.get(id)) {
    const k = label(nodes.get(id)).fn;
    if (seen.has(k)) continue;
    seen.add(k);
    incl.set(k, (incl.get(k) ?? 0) + dt);
  }
  if (callers && callers.test(fn)) {
    const path = [];
    for (let id = parent.get(n.id); id !== undefined && path.length < 6; id = parent.get(id)) path.push(label(nodes.get(id)).fn.replace(/ .*\//, ' '));
    const k = path.join(' < ');
    byPath.set(k, (byPath.get(k) ?? 0) + dt);
  }
  if (timelineMs > 0) {
    const k = Math.floor((t - prof.startTime) / 1000 / timelineMs);
    const b = buckets.get(k) ?? { busy: 0, fns: new Map() };
    if (n.callFrame.functionName !== '(idle)') { b.busy += dt; b.fns.set(fn, (b.fns.get(fn) ?? 0) + dt); }
    buckets.set(k, b);
  }
}

const ms = (us) => (us / 1000).toFixed(1).padStart(9);
const pct = (us) => `${((100 * us) / Math.max(1, total)).toFixed(1).padStart(5)}%`;
console.log(`${file}\nwindow ${ms(total)} ms, idle ${ms(idle)} ms (${pct(idle)}), busy ${ms(total - idle)} ms`);
console.log(`profile start ${prof.startTime} us, end ${prof.endTime} us`);
console.log('\n-- self time by file');
for (const [k, v] of [...byFile].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${ms(v)} ms ${pct(v)}  ${k}`);
console.log('\n-- self time by function');
for (const [k, v] of [...byFn].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${ms(v)} ms ${pct(v)}  ${k}`);
console.log('\n-- inclusive time by function');
for (const [k, v] of [...incl].filter(([k]) => !/^\((root|program|idle)\)/.test(k)).sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${ms(v)} ms ${pct(v)}  ${k}`);
if (callers) {
  console.log(`\n-- callers of ${callers}`);
  for (const [k, v] of [...byPath].sort((a, b) => b[1] - a[1]).slice(0, 12)) console.log(`${ms(v)} ms  ${k}`);
}
if (timelineMs > 0) {
  console.log(`\n-- timeline (${timelineMs} ms buckets from profile start)`);
  for (const [k, b] of [...buckets].sort((a, c) => a[0] - c[0])) {
    const best = [...b.fns].sort((x, y) => y[1] - x[1])[0];
    console.log(`${String(k * timelineMs).padStart(8)} ms busy ${((100 * b.busy) / (timelineMs * 1000)).toFixed(0).padStart(3)}%  ${best ? best[0] : ''}`);
  }
}
