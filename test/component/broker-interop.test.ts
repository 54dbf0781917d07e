/**
 * Independent clients (not mqtt.js): Debian mosquitto_pub/sub and Python paho-mqtt.
 * These tests fail (never skip) when the tools are missing.
 */
import { spawn } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { startBroker, until, type BrokerHarness } from '../helpers/fakes-broker.js';

let h: BrokerHarness | undefined;
afterEach(async () => { await h?.stop(); h = undefined; });

function run(cmd: string, args: string[], timeoutMs = 10_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('error', (err) => { clearTimeout(timer); reject(new Error(`${cmd} could not be run (is it installed?): ${err.message}`)); });
    p.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

const PAHO_SCRIPT = `
import sys, json, threading
import paho.mqtt.client as mqtt
port, user, pw, topic, sub = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
got = threading.Event(); connected = threading.Event(); result = {}
def on_connect(c, u, flags, rc):
    result['rc'] = rc; connected.set()
def on_message(c, u, m):
    result['msg'] = [m.topic, m.payload.decode()]; got.set()
c = mqtt.Client(client_id="paho-" + user[:8], protocol=mqtt.MQTTv311)
c.username_pw_set(user, pw if pw != "-" else None)
c.on_connect = on_connect; c.on_message = on_message
c.connect("127.0.0.1", int(port), keepalive=30)
c.loop_start()
connected.wait(5)
if result.get('rc') != 0:
    print(json.dumps(result)); sys.exit(2)
info = c.publish(topic, json.dumps({"soil_moisture": 33.5}), qos=1)
info.wait_for_publish()
result['published'] = info.is_published()
if sub != "-":
    r = c.subscribe(sub, qos=1)
    print("SUBSCRIBED", flush=True)
    got.wait(5)
c.disconnect(); c.loop_stop()
print(json.dumps(result))
`;

describe('AedesBroker with independent clients', () => {
  it('mosquitto_pub: QoS 1 telemetry with id + secret reaches the handler', async () => {
    h = await startBroker();
    const r = await run('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(h.port), '-V', 'mqttv311', '-i', 'mosq-soil-01',
      '-u', 'soil-01', '-P', 'secret-soil-01', '-q', '1', '-t', 'v1/devices/soil-01/telemetry', '-m', '{"temperature":24.1}']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(h.handler.messages).toHaveLength(1);
    expect(h.handler.messages[0]).toMatchObject({ type: 'telemetry', qos: 1, identity: { deviceId: 'soil-01' } });
    expect(h.handler.messages[0]!.payload.toString()).toBe('{"temperature":24.1}');
  });

  it('mosquitto_pub with a wrong secret is refused', async () => {
    h = await startBroker();
    const r = await run('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(h.port), '-V', 'mqttv311',
      '-u', 'soil-01', '-P', 'wrong', '-q', '1', '-t', 'v1/devices/soil-01/telemetry', '-m', '{}']);
    expect(r.code).not.toBe(0);
    expect(h.handler.messages).toHaveLength(0);
  });

  it('mosquitto_sub with a token: ThingsBoard me subscription receives server RPC on the me topic', async () => {
    h = await startBroker();
    const sub = spawn('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(h.port), '-V', 'mqttv311', '-i', 'mosq-tb',
      '-u', 'TOKENSPK01xxxxxxxxx', '-q', '1', '-t', 'v1/devices/me/rpc/request/+', '-v', '-C', '1', '-W', '10']);
    let out = '';
    let spawnError: Error | null = null;
    sub.on('error', (e) => { spawnError = e; });
    sub.stdout.on('data', (d) => { out += d; });
    const exited = new Promise<number | null>((r) => sub.on('close', (code) => r(code)));
    await until(() => spawnError !== null || h!.broker.isConnected('spk-01'), 5000, 'mosquitto_sub to connect');
    expect(spawnError).toBeNull();
    await new Promise((r) => setTimeout(r, 200)); // its SUBSCRIBE follows the CONNACK
    await h.broker.publish('v1/devices/spk-01/rpc/request/77', '{"method":"broadcast.stop","params":{}}');
    expect(await exited).toBe(0);
    expect(out.trim()).toBe('v1/devices/me/rpc/request/77 {"method":"broadcast.stop","params":{}}');
  });

  it('python paho-mqtt: QoS 1 telemetry with id + secret reaches the handler', async () => {
    h = await startBroker();
    const r = await run('/usr/bin/python3', ['-c', PAHO_SCRIPT, String(h.port), 'soil-02', 'secret-soil-02', 'v1/devices/soil-02/telemetry', '-']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout.trim().split('\n').pop()!)).toMatchObject({ rc: 0, published: true });
    expect(h.handler.messages).toHaveLength(1);
    expect(h.handler.messages[0]).toMatchObject({ type: 'telemetry', identity: { deviceId: 'soil-02', viaToken: false } });
  });

  it('python paho-mqtt as a ThingsBoard device (token, no password): me telemetry + RPC on me topic', async () => {
    h = await startBroker();
    const p = spawn('/usr/bin/python3', ['-c', PAHO_SCRIPT, String(h.port), 'TOKENSPK01xxxxxxxxx', '-', 'v1/devices/me/telemetry', 'v1/devices/me/rpc/request/+']);
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    const exited = new Promise<number | null>((r) => p.on('close', (code) => r(code)));
    await until(() => out.includes('SUBSCRIBED'), 8000, 'paho to subscribe');
    await new Promise((r) => setTimeout(r, 200));
    await h.broker.publish('v1/devices/spk-01/rpc/request/5', '{"method":"speaker.setVolume","params":{"volume":10}}');
    expect(await exited).toBe(0);
    expect(err).toBe('');
    const result = JSON.parse(out.trim().split('\n').pop()!);
    expect(result).toMatchObject({ rc: 0, published: true, msg: ['v1/devices/me/rpc/request/5', '{"method":"speaker.setVolume","params":{"volume":10}}'] });
    expect(h.handler.messages[0]).toMatchObject({ type: 'telemetry', identity: { deviceId: 'spk-01', viaToken: true } });
  });
});
