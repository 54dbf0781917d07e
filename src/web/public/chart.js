// A sensor's history as a line chart (uPlot), loaded on first use: the
// farmer's first visit does not pay for the chart library.
import { h } from './preact.mjs';
import { useEffect, useRef, useState } from './hooks.mjs';
import htm from './htm.mjs';
import { api } from './api.js';
import { FIELDS } from './sensors.js';

const html = htm.bind(h);
const HOUR = 3_600_000;

/** Range → how far back and the aggregation window (about 100 points each, a phone's width). */
export const RANGES = {
  day: { back: 24 * HOUR, every: '15m' },
  week: { back: 7 * 24 * HOUR, every: '2h' },
  month: { back: 30 * 24 * HOUR, every: '6h' },
};

let uplotLoading = null;
function loadUplot() {
  if (!uplotLoading) {
    const link = document.createElement('link');
    link.rel = 'stylesheet';
    link.href = new URL('./uPlot.min.css', import.meta.url).href;
    document.head.append(link);
    uplotLoading = import('./uPlot.esm.js').then((m) => m.default);
  }
  return uplotLoading;
}

export function Chart({ device, fields, loc, token, onUnauthorized }) {
  const [range, setRange] = useState('day');
  const [field, setField] = useState(fields.includes('soil_moisture') ? 'soil_moisture' : fields[0]);
  const [state, setState] = useState({ loading: true });
  const box = useRef(null);

  useEffect(() => {
    const ctrl = new AbortController();
    let plot = null;
    let onResize = null;
    setState({ loading: true });
    const { back, every } = RANGES[range];
    const q = new URLSearchParams({ fields: field, from: String(Date.now() - back), every, agg: 'mean' });
    Promise.all([api(`/devices/${encodeURIComponent(device.id)}/telemetry?${q}`, { token, signal: ctrl.signal }), loadUplot()])
      .then(([hist, UPlot]) => {
        if (ctrl.signal.aborted) return;
        const points = hist.points.filter((p) => typeof p.values[field] === 'number');
        if (!points.length) { setState({ empty: true }); return; }
        setState({});
        const xs = points.map((p) => Date.parse(p.ts) / 1000);
        const ys = points.map((p) => p.values[field]);
        const spec = FIELDS[field];
        const unit = spec?.unit ? ` ${spec.unit}` : '';
        const digits = spec?.digits ?? 2;
        const el = box.current;
        const width = () => Math.max(240, el.clientWidth);
        plot = new UPlot({
          width: width(),
          height: 220,
          legend: { show: true },
          cursor: { drag: { x: false, y: false } },
          series: [
            { label: loc.t('chart.time'), value: (_, ts) => (ts == null ? '–' : loc.dateTime(ts * 1000)) },
            {
              label: spec ? spec[loc.lang] : field,
              stroke: '#1f5f2e', width: 2, fill: 'rgba(31,95,46,0.08)', spanGaps: false,
              value: (_, v) => (v == null ? '–' : loc.number(v, digits) + unit),
            },
          ],
          axes: [
            { values: (_, splits) => splits.map((s) => (range === 'day' ? loc.time(s * 1000) : loc.dayMonth(s * 1000))) },
            { values: (_, splits) => splits.map((v) => loc.number(v, digits)), size: 56 },
          ],
        }, [xs, ys], el);
        onResize = () => plot?.setSize({ width: width(), height: 220 });
        window.addEventListener('resize', onResize);
      })
      .catch((err) => {
        if (ctrl.signal.aborted) return;
        if (err?.code === 'KENG_ERR_UNAUTHENTICATED') onUnauthorized();
        setState({ error: err?.code ?? 'ERROR' });
      });
    return () => {
      ctrl.abort();
      if (onResize) window.removeEventListener('resize', onResize);
      plot?.destroy();
    };
  }, [device.id, range, field, loc.lang]);

  return html`
    <div class="chart">
      <div class="chips" role="group">
        ${Object.keys(RANGES).map((r) => html`
          <button type="button" class=${r === range ? 'chip on' : 'chip'} aria-pressed=${r === range} onClick=${() => setRange(r)}>${loc.t(`chart.${r}`)}</button>`)}
      </div>
      ${fields.length > 1 && html`
        <div class="chips" role="group">
          ${fields.map((f) => html`
            <button type="button" class=${f === field ? 'chip on' : 'chip'} aria-pressed=${f === field} onClick=${() => setField(f)}>${FIELDS[f]?.[loc.lang] ?? f}</button>`)}
        </div>`}
      ${state.loading && html`<p class="muted">${loc.t('loading')}</p>`}
      ${state.empty && html`<p class="muted">${loc.t('chart.empty')}</p>`}
      ${state.error && html`<p class="error">${loc.t('error.generic', { code: state.error })}</p>`}
      <div class="plot" ref=${box}></div>
    </div>`;
}
