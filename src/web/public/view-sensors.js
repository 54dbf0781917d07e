// The sensors of the caller's areas with live values (the farmer's view, and
// every role's first tab): names, latest values with units, soil state, charts.
import { useState } from './hooks.mjs';
import { api } from './api.js';
import { html, useLiveView } from './ui.js';
import { FIELDS, fieldOrder, soilState } from './sensors.js';

export default function Sensors({ session, loc, onUnauthorized }) {
  const { token } = session;
  const [devices, setDevices] = useState(null);
  const [areaNames, setAreaNames] = useState({});
  const { error, live, retry } = useLiveView(session, onUnauthorized, async (signal, setLive) => {
    const [list, areas] = await Promise.all([
      api('/devices', { token, signal }),
      api('/areas', { token, signal }).catch(() => []),
    ]);
    if (signal.aborted) return null;
    const shown = list.filter((d) => d.kind !== 'speaker');
    setDevices(shown);
    setAreaNames(Object.fromEntries(areas.map((a) => [a.code, a.name])));
    // Whole areas for a scoped user (new sensors come along); the listed devices for an all-areas account.
    const everywhere = session.role === 'admin' || session.areas.includes('*');
    const ids = shown.slice(0, 1000).map((d) => d.id);
    const subscription = everywhere ? (ids.length ? { devices: ids } : null) : { areas: session.areas };
    // Without the live feed the values still show; the badge says they are not live.
    return connectLiveFeed(token, subscription, setDevices, setLive, onUnauthorized).catch(() => null);
  });

  if (error) {
    return html`<section class="card"><p class="error" role="alert">${error.code === 'NETWORK' ? loc.t('error.network') : loc.t('error.generic', { code: error.code })}</p>
      <button type="button" class="primary" onClick=${retry}>${loc.t('retry')}</button></section>`;
  }
  if (!devices) return html`<p class="muted center">${loc.t('loading')}</p>`;
  return html`
    <div class="head">
      <h1>${loc.t('sensors.title')}</h1>
      <span class=${live ? 'live on' : 'live'} role="status">${live ? loc.t('live.on') : loc.t('live.off')}</span>
    </div>
    ${devices.length === 0 && html`<section class="card"><p>${loc.t('sensors.none')}</p></section>`}
    <div class="grid">
      ${devices.map((d) => html`<${DeviceCard} key=${d.id} device=${d} areaName=${areaNames[d.area] ?? d.area} loc=${loc} token=${token} onUnauthorized=${onUnauthorized} />`)}
    </div>`;
}

async function connectLiveFeed(token, subscription, setDevices, setLive, onUnauthorized) {
  const { connectLive, withReading, withStatus } = await import('./live.js');
  return connectLive({
    token, subscription, onState: setLive, onUnauthorized,
    on: {
      telemetry: (m) => setDevices((list) => list?.map((d) => withReading(d, m))),
      status: (m) => setDevices((list) => list?.map((d) => withStatus(d, m))),
    },
  });
}

function DeviceCard({ device, areaName, loc, token, onUnauthorized }) {
  const [chart, setChart] = useState(false);
  const [ChartView, setChartView] = useState(null);
  const names = fieldOrder(Object.keys(device.latest ?? {}));
  const numeric = names.filter((n) => typeof device.latest[n].value === 'number');
  const newest = names.reduce((m, n) => Math.max(m, Date.parse(device.latest[n].ts)), 0);
  const soil = soilState(device.latest?.soil_moisture?.value, device.model);
  const seen = device.lastSeen ? Date.parse(device.lastSeen) : null;

  const toggleChart = async () => {
    if (!ChartView) {
      const { Chart } = await import('./chart.js');
      setChartView(() => Chart);
    }
    setChart((c) => !c);
  };

  return html`
    <article class=${device.online ? 'card device' : 'card device offline'} data-device=${device.id}>
      <header>
        <h2>${device.name}</h2>
        <p class="muted">${areaName}</p>
      </header>
      <p class=${device.online ? 'state ok' : 'state bad'}>
        ${device.online
          ? (newest ? loc.t('device.updated', { t: loc.when(newest) }) : '')
          : seen ? loc.t('device.offlineSince', { t: loc.when(seen) }) : loc.t('device.neverSeen')}
      </p>
      ${soil && html`<p class=${`soil ${soil}`}>${loc.t(`soil.${soil}`)}</p>`}
      ${names.length === 0
        ? html`<p class="muted">${loc.t('sensors.noValues')}</p>`
        : html`<dl class="values">${names.map((n) => html`<${Value} key=${n} name=${n} value=${device.latest[n].value} loc=${loc} />`)}</dl>`}
      ${numeric.length > 0 && html`
        <button type="button" class="secondary" aria-expanded=${chart} onClick=${toggleChart}>${chart ? loc.t('chart.hide') : loc.t('chart.show')}</button>`}
      ${chart && ChartView && html`<${ChartView} device=${device} fields=${numeric} loc=${loc} token=${token} onUnauthorized=${onUnauthorized} />`}
    </article>`;
}

function Value({ name, value, loc }) {
  const spec = FIELDS[name];
  const shown = typeof value === 'number'
    ? `${loc.number(value, spec?.digits ?? 2)}${spec?.unit ? ` ${spec.unit}` : ''}`
    : String(value);
  return html`<div class="value" data-field=${name}><dt>${spec ? spec[loc.lang] : name}</dt><dd>${shown}</dd></div>`;
}
