// A map of the speakers without a map library: their positions in Web
// Mercator, fitted to their bounding box, drawn as SVG (villages named,
// each speaker coloured by its state). That needs no internet, which a
// commune office often lacks. When the server names a tile service
// (config web.mapTileUrl → meta keng-map-tiles) the same projection at a
// whole zoom level places 256 px raster tiles as <img> behind the drawing.
import { useEffect, useRef, useState } from './hooks.mjs';
import { html } from './ui.js';

const TILE = 256;
const MAX_ZOOM = 18;
/** Smallest box shown (in world units, ≈ 800 m): one speaker alone is not drawn at street level. */
const MIN_SPAN = 0.00002;
/** Room around the speakers for the village rings and their names above them. */
const MARGIN = { x: 60, top: 66, bottom: 46 };

export function tileTemplate() {
  return document.querySelector('meta[name="keng-map-tiles"]')?.content || null;
}

function tileCredit() {
  return document.querySelector('meta[name="keng-map-credit"]')?.content || null;
}

/** Web Mercator: longitude/latitude → [0, 1) world units (x east, y south). */
export function project(lat, lon) {
  const s = Math.sin((Math.max(-85, Math.min(85, lat)) * Math.PI) / 180);
  return [(lon + 180) / 360, 0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)];
}

/**
 * Scale (pixels per world unit) and offset that fit the points into w × h.
 * With tiles the scale is a whole zoom level (256 × 2^z), so tiles are drawn at their own size.
 */
export function fit(points, w, h, tiles) {
  let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const [x, y] of points) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
  const dx = Math.max(x1 - x0, MIN_SPAN);
  const dy = Math.max(y1 - y0, MIN_SPAN);
  const room = Math.max(1, Math.min((w - 2 * MARGIN.x) / dx, (h - MARGIN.top - MARGIN.bottom) / dy));
  let scale = Math.min(room, TILE * 2 ** MAX_ZOOM);
  let z = null;
  if (tiles) {
    z = Math.max(1, Math.min(MAX_ZOOM, Math.floor(Math.log2(scale / TILE))));
    scale = TILE * 2 ** z;
  }
  const midY = MARGIN.top + (h - MARGIN.top - MARGIN.bottom) / 2;
  return { scale, z, ox: ((x0 + x1) / 2) * scale - w / 2, oy: ((y0 + y1) / 2) * scale - midY };
}

/** The tiles covering the view: [{key, src, left, top}]. */
export function tilesFor(template, view, w, h) {
  const n = 2 ** view.z;
  const out = [];
  for (let ty = Math.floor(view.oy / TILE); ty * TILE < view.oy + h; ty++) {
    if (ty < 0 || ty >= n) continue;
    for (let tx = Math.floor(view.ox / TILE); tx * TILE < view.ox + w; tx++) {
      const x = ((tx % n) + n) % n;
      const src = template.replaceAll('{z}', String(view.z)).replaceAll('{x}', String(x)).replaceAll('{y}', String(ty));
      out.push({ key: `${tx}/${ty}`, src, left: Math.round(tx * TILE - view.ox), top: Math.round(ty * TILE - view.oy) });
    }
  }
  return out;
}

function useWidth(ref) {
  const [width, setWidth] = useState(0);
  useEffect(() => {
    const el = ref.current;
    if (!el) return undefined;
    const measure = () => setWidth(Math.round(el.clientWidth));
    measure();
    const ro = new ResizeObserver(measure);
    ro.observe(el);
    return () => ro.disconnect();
  }, []);
  return width;
}

/**
 * `speakers`: [{id, name, area, location, online, playing}]; `areaByCode` names the villages;
 * `onPick(id)` when a speaker's dot is tapped.
 */
export function SpeakerMap({ speakers, areaByCode, loc, onPick }) {
  const box = useRef(null);
  const w = useWidth(box);
  const template = tileTemplate();
  const placed = speakers.filter((s) => s.location && Number.isFinite(s.location.lat) && Number.isFinite(s.location.lon));
  const h = Math.round(Math.max(240, Math.min(480, w * 0.72)));
  const unplaced = speakers.length - placed.length;

  let body = null;
  if (w > 0 && placed.length > 0) {
    const pts = placed.map((s) => project(s.location.lat, s.location.lon));
    const view = fit(pts, w, h, Boolean(template));
    const at = ([x, y]) => [x * view.scale - view.ox, y * view.scale - view.oy];
    const xy = pts.map(at);
    // Villages: the centre of their speakers, and a ring around them on the plain drawing.
    const groups = new Map();
    placed.forEach((s, i) => {
      const g = groups.get(s.area) ?? { area: s.area, pts: [] };
      g.pts.push(xy[i]);
      groups.set(s.area, g);
    });
    const villages = [...groups.values()].map((g) => {
      const cx = g.pts.reduce((a, p) => a + p[0], 0) / g.pts.length;
      const cy = g.pts.reduce((a, p) => a + p[1], 0) / g.pts.length;
      const r = Math.max(26, ...g.pts.map((p) => Math.hypot(p[0] - cx, p[1] - cy) + 20));
      return { ...g, cx, cy, r, name: areaByCode.get(g.area)?.name ?? g.area };
    });
    body = html`
      ${template && tilesFor(template, view, w, h).map((t) => html`
        <img key=${t.key} class="tile" src=${t.src} alt="" draggable="false" style=${`left:${t.left}px;top:${t.top}px`} />`)}
      <svg class="op-map-svg" width=${w} height=${h} viewBox=${`0 0 ${w} ${h}`} role="img" aria-label=${loc.t('map.label', { n: placed.length })}>
        ${!template && html`<rect class="ground" x="0" y="0" width=${w} height=${h} />
          ${Array.from({ length: Math.ceil(w / 60) }, (_, i) => html`<line class="grid" x1=${i * 60} y1="0" x2=${i * 60} y2=${h} />`)}
          ${Array.from({ length: Math.ceil(h / 60) }, (_, i) => html`<line class="grid" x1="0" y1=${i * 60} x2=${w} y2=${i * 60} />`)}
          ${villages.map((v) => html`<circle class="village" cx=${v.cx} cy=${v.cy} r=${v.r} />`)}`}
        ${placed.map((s, i) => {
          const state = s.playing ? 'playing' : s.online ? 'online' : 'offline';
          return html`<g class=${`spk ${state}`} data-device=${s.id} transform=${`translate(${xy[i][0].toFixed(1)} ${xy[i][1].toFixed(1)})`}
              onClick=${() => onPick?.(s.id)}>
            <title>${s.name}: ${loc.t(`map.${state}`)}</title>
            ${state === 'playing' && html`<circle class="ring" r="16" />`}
            <circle class="dot" r="10" />
            ${state === 'offline' && html`<path class="cross" d="M-4,-4L4,4M4,-4L-4,4" />`}
          </g>`;
        })}
        ${villages.map((v) => html`<text class="village-name" x=${v.cx} y=${Math.max(16, v.cy - v.r - 6)} text-anchor="middle">${v.name}</text>`)}
      </svg>`;
  }

  const credit = template ? tileCredit() : null;
  return html`
    <figure class="card op-map" data-mode=${template ? 'tiles' : 'svg'}>
      <div class="op-map-box" ref=${box} style=${`height:${placed.length ? h : 0}px`}>${body}</div>
      ${placed.length === 0 && html`<p class="muted">${loc.t('map.none')}</p>`}
      <figcaption>
        <span class="key playing">${loc.t('map.playing')}</span>
        <span class="key online">${loc.t('map.online')}</span>
        <span class="key offline">${loc.t('map.offline')}</span>
        ${unplaced > 0 && placed.length > 0 && html`<span class="muted">${loc.t('map.unplaced', { n: unplaced })}</span>`}
        ${credit && html`<span class="credit">${credit}</span>`}
      </figcaption>
    </figure>`;
}
