/**
 * A ThingsBoard IoT Gateway imitation: /usr/bin/python3 with paho-mqtt 1.6
 * (MQTT 3.1.1), sending the gateway's messages byte for byte as
 * tb_gateway_mqtt.py (thingsboard-python-client-sdk) does: its subscriptions
 * in its order at connect, and payloads serialised as its orjson.dumps does
 * (compact, UTF-8 kept as is: json.dumps with separators (',', ':') and
 * ensure_ascii=False gives the same bytes for these values).
 *
 * The test drives it line by line: `publish(topic, body)` resolves on the
 * PUBACK; every message the gateway receives is kept in `received`.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { waitFor } from './mqtt.js';

const PYTHON = '/usr/bin/python3';

const SCRIPT = String.raw`
import json, sys, threading
import paho.mqtt.client as mqtt

host, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lock = threading.Lock()
def out(kind, **kw):
    with lock:
        print(json.dumps(dict(kind=kind, **kw), ensure_ascii=False), flush=True)

# tb_device_mqtt._on_connect, then tb_gateway_mqtt._on_connect: every subscription with QoS 1.
TOPICS = ['v1/devices/me/attributes', 'v1/devices/me/attributes/response/+', 'v1/devices/me/rpc/request/+',
          'v1/devices/me/rpc/response/+', 'v1/gateway/attributes', 'v1/gateway/attributes/response', 'v1/gateway/rpc']

def on_connect(client, userdata, flags, rc):
    out('connack', rc=rc)
    if rc == 0:
        for t in TOPICS:
            client.subscribe(t, qos=1)

def on_subscribe(client, userdata, mid, granted):
    out('suback', mid=mid, granted=list(granted))

def on_message(client, userdata, msg):
    text = msg.payload.decode('utf-8')
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    out('msg', topic=msg.topic, payload=text, body=body)

client = mqtt.Client(client_id='', clean_session=True, protocol=mqtt.MQTTv311)
client.username_pw_set(token, None)
client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_message = on_message
client.connect(host, port, keepalive=60)
client.loop_start()

for line in sys.stdin:
    cmd = json.loads(line)
    if cmd['op'] == 'pub':
        # orjson.dumps(data): compact separators, non-ASCII as UTF-8.
        payload = cmd['raw'].encode('utf-8') if 'raw' in cmd else json.dumps(cmd['body'], separators=(',', ':'), ensure_ascii=False).encode('utf-8')
        info = client.publish(cmd['topic'], payload, qos=1)
        info.wait_for_publish(timeout=20)
        out('puback', seq=cmd['seq'], ok=info.is_published(), bytes=payload.decode('utf-8'))
    elif cmd['op'] == 'quit':
        break
client.disconnect()
client.loop_stop()
out('bye')
`;

export interface GatewayLine { kind: string; [k: string]: any }

export class TbGatewayImitation {
  readonly lines: GatewayLine[] = [];
  readonly stderr: string[] = [];
  private seq = 0;
  private readonly proc: ChildProcessWithoutNullStreams;

  constructor(mqttPort: number, token: string) {
    this.proc = spawn(PYTHON, ['-c', SCRIPT, '127.0.0.1', String(mqttPort), token]);
    createInterface({ input: this.proc.stdout }).on('line', (l) => { this.lines.push(JSON.parse(l) as GatewayLine); });
    this.proc.stderr.on('data', (d: Buffer) => this.stderr.push(d.toString()));
  }

  /** CONNACK 0 and the seven SUBACKs; returns the granted QoS of each. */
  async ready(): Promise<number[]> {
    const connack = await this.next((l) => l.kind === 'connack');
    if (connack.rc !== 0) throw new Error(`CONNACK ${connack.rc}`);
    await waitFor(() => this.lines.filter((l) => l.kind === 'suback').length === 7, 10_000);
    return this.lines.filter((l) => l.kind === 'suback').flatMap((l) => l.granted as number[]);
  }

  /** Publishes `body` (or `raw` text) at QoS 1; resolves with the exact bytes sent once PUBACK arrived. */
  async publish(topic: string, body: unknown, raw?: string): Promise<string> {
    const seq = ++this.seq;
    this.proc.stdin.write(JSON.stringify(raw !== undefined ? { op: 'pub', topic, raw, seq } : { op: 'pub', topic, body, seq }) + '\n');
    const ack = await this.next((l) => l.kind === 'puback' && l.seq === seq, 20_000);
    if (!ack.ok) throw new Error(`no PUBACK for ${topic}`);
    return ack.bytes as string;
  }

  async next(pred: (l: GatewayLine) => boolean, timeoutMs = 10_000): Promise<GatewayLine> {
    return waitFor(() => this.lines.find(pred), timeoutMs).catch((err: unknown) => {
      throw new Error(`${String(err)}; gateway said: ${JSON.stringify(this.lines)} ${this.stderr.join('')}`);
    });
  }

  async quit(): Promise<void> {
    if (this.proc.exitCode !== null) return;
    this.proc.stdin.write(JSON.stringify({ op: 'quit' }) + '\n');
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => { this.proc.kill('SIGKILL'); resolve(); }, 5000);
      this.proc.once('exit', () => { clearTimeout(t); resolve(); });
    });
  }
}
