/**
 * The live feed with an independent socket.io implementation: python-socketio
 * (Debian's python3-socketio, run with /usr/bin/python3). Debian ships it
 * without `requests` and `websocket-client`, so the script gives engineio a
 * tiny `requests` stand-in over urllib (HTTP only; the Engine.IO/Socket.IO
 * protocol is python-socketio's own) and uses the polling transport.
 * Fails, never skips, when python-socketio is missing.
 */
import { spawn, spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { connectDevice, end, publish, waitFor } from '../helpers/mqtt.js';
import { seedAreas, seedDevices } from '../helpers/seed.js';
import { attachLiveFeedForTest } from '../helpers/live.js';

const PYTHON = '/usr/bin/python3';

const SCRIPT = String.raw`
import json, sys, types, urllib.request, urllib.error

# --- a minimal "requests" for engineio's polling transport, over urllib ---
class RequestException(Exception):
    pass
class Response:
    def __init__(self, status, content):
        self.status_code = status
        self.content = content
    def json(self):
        return json.loads(self.content.decode('utf-8'))
class Session:
    def __init__(self):
        self.cookies = []
        self.auth = None
        self.cert = None
        self.proxies = {}
        self.verify = True
    def request(self, method, url, headers=None, data=None, timeout=None):
        if isinstance(data, str):
            data = data.encode('utf-8')
        req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return Response(r.status, r.read())
        except urllib.error.HTTPError as e:
            return Response(e.code, e.read())
        except Exception as e:
            raise RequestException(str(e))
requests = types.ModuleType('requests')
requests.Session = Session
requests.exceptions = types.SimpleNamespace(RequestException=RequestException)
sys.modules['requests'] = requests

import socketio

def out(kind, **kw):
    print(json.dumps(dict(kind=kind, **kw)), flush=True)

url, token, area = sys.argv[1], sys.argv[2], sys.argv[3]
sio = socketio.Client(reconnection=False)
got = []

@sio.on('telemetry')
def on_telemetry(data):
    out('telemetry', data=data)
    sio.disconnect()

@sio.on('connect_error')
def on_connect_error(data):
    out('connect_error', data=data)

try:
    sio.connect(url, auth={'token': token}, transports=['polling'], wait_timeout=5)
except socketio.exceptions.ConnectionError as e:
    out('refused', message=str(e), args=[a if isinstance(a, (str, dict, list)) else str(a) for a in e.args])
    sys.exit(0)
ack = sio.call('subscribe', {'areas': [area]}, timeout=10)
out('subscribed', ack=ack)
bad = sio.call('subscribe', {'areas': 'not-a-list'}, timeout=10)
out('bad', ack=bad)
sio.wait()
out('done')
`;

interface Line { kind: string; [k: string]: any }

function runPython(args: string[]): { lines: Line[]; stderr: () => string; exited: Promise<number | null> } {
  const p = spawn(PYTHON, ['-c', SCRIPT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: Line[] = [];
  let buf = '';
  let err = '';
  p.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const l = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (l) lines.push(JSON.parse(l) as Line);
    }
  });
  p.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  const exited = new Promise<number | null>((resolve) => p.once('exit', (code) => resolve(code)));
  setTimeout(() => p.kill('SIGKILL'), 25_000).unref();
  return { lines, stderr: () => err, exited };
}

let t: TestApp;
let stopFeed: () => Promise<void>;
let secret = '';

beforeAll(async () => {
  t = await startTestApp();
  ({ stop: stopFeed } = await attachLiveFeedForTest(t.app));
  await seedAreas(t, [{ code: 'pyp', name: 'Tỉnh Python', level: 'province' }, { code: 'py', name: 'Xã Python', level: 'commune', parent: 'pyp' }]);
  secret = (await seedDevices(t, [{ id: 'py-soil', kind: 'sensor', name: 'py', area: 'py' }]))['py-soil']!.secret;
});

afterAll(async () => {
  await stopFeed?.();
  await t?.stop();
});

describe('live feed with python-socketio', () => {
  it('python-socketio is installed', () => {
    const r = spawnSync(PYTHON, ['-c', 'import socketio, engineio; print(socketio.Client.__name__)'], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('Client');
  });

  it('connects with a token, subscribes and receives a telemetry event', async () => {
    const py = runPython([t.httpUrl, t.adminToken, 'py']);
    const sub = await waitFor(() => py.lines.find((l) => l.kind === 'bad'), 15_000, 50).catch((e) => { throw new Error(`${e}\n${py.stderr()}`); });
    expect(sub.ack.error.code).toBe('KENG_ERR_VALIDATION');
    expect(py.lines.find((l) => l.kind === 'subscribed')!.ack).toEqual({ ok: true, devices: 1 });
    const dev = await connectDevice(t.mqttUrl, 'py-soil', secret);
    await publish(dev, 'v1/devices/py-soil/telemetry', '{"soil_moisture": 42.5}');
    const tel = await waitFor(() => py.lines.find((l) => l.kind === 'telemetry'), 15_000, 50).catch((e) => { throw new Error(`${e}\n${py.stderr()}`); });
    expect(tel.data).toMatchObject({ deviceId: 'py-soil', values: { soil_moisture: 42.5 } });
    expect(tel.data.ts).toMatch(/\+07:00$/);
    expect(await py.exited).toBe(0);
    await end(dev);
  });

  it('is refused with a bad token', async () => {
    const py = runPython([t.httpUrl, 'wrong-token-0123456789', 'py']);
    expect(await py.exited).toBe(0);
    expect(py.lines.find((l) => l.kind === 'refused'), py.stderr()).toBeDefined();
    const e = py.lines.find((l) => l.kind === 'connect_error');
    expect(e?.data).toEqual({ message: 'Missing or invalid bearer token', data: { code: 'KENG_ERR_UNAUTHENTICATED' } });
    expect(py.lines.some((l) => l.kind === 'subscribed')).toBe(false);
  });
});
