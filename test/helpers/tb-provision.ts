/**
 * ThingsBoard firmware provisioning itself, imitated from reading the SDKs'
 * source (their code stays out of the repository), run with /usr/bin/python3:
 * - the Python SDK 1.7.1 (tb_device_mqtt.py): `ProvisionClient`, a paho
 *   client whose username is `provision`, which subscribes to
 *   `/provision/response` and publishes the request (json.dumps, QoS 0)
 *   in on_connect, disconnects on the first message and otherwise lets
 *   loop_forever() reconnect; then `TBDeviceMqttClient(host, token)` sending
 *   telemetry at QoS 1;
 * - the Arduino/ESP32 SDK (PubSubClient under Provision.h), byte for byte:
 *   CONNECT (MQTT 3.1.1, clean session, keep-alive 15 s, client id and
 *   username `provision`, no password), SUBSCRIBE `/provision/response` QoS 0
 *   (packet id 1), the request as ArduinoJson writes it (compact, keys in
 *   insertion order: deviceName, then provisionDeviceKey,
 *   provisionDeviceSecret) at QoS 0, then UNSUBSCRIBE (id 2) and DISCONNECT
 *   once answered, and a new connection with the token (client id = token).
 */
import { spawn } from 'node:child_process';

export const PYTHON = '/usr/bin/python3';

const SDK_171 = String.raw`
import json, sys, threading
import paho.mqtt.client as paho

host, port, key, secret, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
extra = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
state = {"connects": 0, "refused": [], "response": None}

# TBDeviceMqttClient.provision(): the request dict, built in the SDK's order.
provision_request = {"provisionDeviceKey": key, "provisionDeviceSecret": secret}
if extra.get("access_token") is not None:
    provision_request["token"] = extra["access_token"]
    provision_request["credentialsType"] = "ACCESS_TOKEN"
elif extra.get("username") is not None or extra.get("password") is not None or extra.get("client_id") is not None:
    provision_request["username"] = extra.get("username")
    provision_request["password"] = extra.get("password")
    provision_request["clientId"] = extra.get("client_id")
    provision_request["credentialsType"] = "MQTT_BASIC"
if name:
    provision_request["deviceName"] = name

class ProvisionClient(paho.Client):
    PROVISION_REQUEST_TOPIC = "/provision/request"
    PROVISION_RESPONSE_TOPIC = "/provision/response"

    def __init__(self, host, port, provision_request):
        super().__init__()
        self._host = host
        self._port = port
        self._username = "provision"
        self.on_connect = self.__on_connect
        self.on_message = self.__on_message
        self.__provision_request = provision_request

    def __on_connect(self, client, _, __, rc):
        state["connects"] += 1
        if rc == 0:
            client.subscribe(self.PROVISION_RESPONSE_TOPIC)
            client.publish(self.PROVISION_REQUEST_TOPIC, json.dumps(self.__provision_request))
        else:
            state["refused"].append(rc)

    def __on_message(self, _, __, msg):
        state["response"] = json.loads(msg.payload.decode("UTF-8"))
        self.disconnect()

    def provision(self):
        self.connect(self._host, self._port, 60)
        self.loop_forever()

client = ProvisionClient(host, port, provision_request)
# Only a guard for the test: the SDK itself would loop (reconnect) forever.
guard = threading.Timer(12, client.disconnect)
guard.daemon = True
guard.start()
client.provision()
print(json.dumps(state))
`;

const SDK_171_TELEMETRY = String.raw`
import json, sys, time
import paho.mqtt.client as paho

host, port, token, telemetry = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
state = {"rc": None, "published": False}
c = paho.Client(protocol=4, client_id="")
c.username_pw_set(token, password=None)
def on_connect(client, userdata, flags, rc, *extra):
    state["rc"] = rc
    if rc == 0:
        for t in ("v1/devices/me/attributes", "v1/devices/me/attributes/response/+", "v1/devices/me/rpc/request/+", "v1/devices/me/rpc/response/+"):
            client.subscribe(t, qos=1)
c.on_connect = on_connect
c.connect(host, port, keepalive=120)
c.loop_start()
deadline = time.time() + 10
while state["rc"] is None and time.time() < deadline:
    time.sleep(0.05)
if state["rc"] == 0:
    info = c.publish("v1/devices/me/telemetry", json.dumps(telemetry), qos=1)
    info.wait_for_publish(timeout=10)
    state["published"] = info.is_published()
c.disconnect()
c.loop_stop()
print(json.dumps(state))
`;

const ARDUINO = String.raw`
import json, socket, struct, sys, time

host, port, key, secret, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
mode = sys.argv[6] if len(sys.argv) > 6 else "sdk"
telemetry = sys.argv[7] if len(sys.argv) > 7 else '{"temperature":24.5}'

def s16(s):
    b = s.encode("utf-8")
    return struct.pack(">H", len(b)) + b

def rl(n):
    out = b""
    while True:
        d = n % 128
        n //= 128
        if n:
            d |= 0x80
        out += bytes([d])
        if not n:
            return out

def pkt(first, body):
    return bytes([first]) + rl(len(body)) + body

def connect(client_id, username):
    # PubSubClient: "MQTT", level 4, flags clean session + user name, keep-alive MQTT_KEEPALIVE (15 s).
    return pkt(0x10, s16("MQTT") + bytes([4, 0x82]) + struct.pack(">H", 15) + s16(client_id) + s16(username))

def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf

def read_packet(sock):
    h = read_exact(sock, 1)
    if h is None:
        return None
    mult, length = 1, 0
    while True:
        b = read_exact(sock, 1)
        if b is None:
            return None
        length += (b[0] & 0x7F) * mult
        mult *= 128
        if not b[0] & 0x80:
            break
    body = read_exact(sock, length) if length else b""
    return (h[0], body)

def open_session(client_id, username):
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(connect(client_id, username))
    p = read_packet(sock)
    return sock, (p[1][1] if p and p[0] == 0x20 else None)

out = {}
sock, rc = open_session("provision", "provision")
out["connack"] = rc
if rc == 0:
    sock.sendall(pkt(0x82, struct.pack(">H", 1) + s16("/provision/response") + bytes([0])))
    req = '{' + ('"deviceName":' + json.dumps(name, ensure_ascii=False, separators=(",", ":")) + ',' if name else '') \
        + '"provisionDeviceKey":' + json.dumps(key) + ',"provisionDeviceSecret":' + json.dumps(secret) + '}'
    sock.sendall(pkt(0x30, s16("/provision/request") + req.encode("utf-8")))
    t0 = time.time()
    while True:
        p = read_packet(sock)
        if p is None:
            out["closedBeforeAnswer"] = True
            break
        if p[0] == 0x90:
            out["suback"] = list(p[1][2:])
        elif p[0] >> 4 == 3:
            tl = struct.unpack(">H", p[1][:2])[0]
            qos = (p[0] >> 1) & 3
            out["topic"] = p[1][2:2 + tl].decode()
            out["response"] = json.loads(p[1][2 + tl + (2 if qos else 0):].decode())
            break
    if mode == "sdk":
        sock.sendall(pkt(0xA2, struct.pack(">H", 2) + s16("/provision/response")))
        sock.sendall(bytes([0xE0, 0]))
        sock.close()
    else:
        # A client that stays: when does the server close the connection?
        sock.settimeout(90)
        while read_packet(sock) is not None:
            pass
        out["closedByServerAfterMs"] = int((time.time() - t0) * 1000)
        sock.close()
resp = out.get("response") or {}
if mode == "sdk" and resp.get("status") == "SUCCESS":
    token = resp["credentialsValue"]
    sock, rc = open_session(token, token)
    out["tokenConnack"] = rc
    if rc == 0:
        sock.sendall(pkt(0x30, s16("v1/devices/me/telemetry") + telemetry.encode()))
        time.sleep(0.3)
        sock.sendall(bytes([0xE0, 0]))
    sock.close()
print(json.dumps(out))
`;

export function runPython(script: string, args: string[], timeoutMs = 30_000): Promise<any> {
  return new Promise((resolve, reject) => {
    const p = spawn(PYTHON, ['-c', script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`python timed out; stderr: ${err}`)); }, timeoutMs);
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    p.on('close', (code) => {
      clearTimeout(timer);
      const last = out.trim().split('\n').pop() ?? '';
      try { resolve(JSON.parse(last)); } catch { reject(new Error(`python exited ${code}: ${out} ${err}`)); }
    });
  });
}

export interface SdkProvisionResult { connects: number; refused: number[]; response: any }

/** The Python SDK 1.7.1's TBDeviceMqttClient.provision(host, key, secret, port, device_name, …). */
export function sdkProvision(port: number, key: string, secret: string, deviceName = '', extra: Record<string, string> = {}): Promise<SdkProvisionResult> {
  return runPython(SDK_171, ['127.0.0.1', String(port), key, secret, deviceName, JSON.stringify(extra)]);
}

/** TBDeviceMqttClient(host, token): connect, subscribe like the SDK, one telemetry message at QoS 1. */
export function sdkTelemetry(port: number, token: string, telemetry: Record<string, unknown>): Promise<{ rc: number; published: boolean }> {
  return runPython(SDK_171_TELEMETRY, ['127.0.0.1', String(port), token, JSON.stringify(telemetry)]);
}

/** The Arduino SDK's provisioning exchange; mode `stay` keeps the connection open after the answer. */
export function arduinoProvision(port: number, key: string, secret: string, deviceName: string, mode: 'sdk' | 'stay' = 'sdk', telemetry?: string): Promise<any> {
  return runPython(ARDUINO, ['127.0.0.1', String(port), key, secret, deviceName, mode, ...(telemetry ? [telemetry] : [])], 120_000);
}
