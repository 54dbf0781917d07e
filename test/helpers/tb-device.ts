/**
 * A ThingsBoard device imitation in Python paho-mqtt 1.6 (/usr/bin/python3),
 * behaving on the wire as thingsboard-python-client-sdk 1.7.1's
 * TBDeviceMqttClient (written from reading its tb_device_mqtt.py; the SDK's
 * code stays out of this repository):
 *
 * - MQTT 3.1.1, clean session, username = the access token, no password;
 * - at CONNACK it subscribes, QoS 1, to `v1/devices/me/attributes`,
 *   `v1/devices/me/attributes/response/+`, `v1/devices/me/rpc/request/+`,
 *   `v1/devices/me/rpc/response/+`;
 * - get_firmware_update(): subscribes `v2/fw/response/+`, sends
 *   `{"current_fw_title", "current_fw_version"}` as telemetry, requests
 *   `{"sharedKeys": "fw_checksum,fw_checksum_algorithm,fw_size,fw_title,fw_version"}`;
 *   any message on `v1/devices/me/attributes...` (push or response, `shared`
 *   of a response) whose fw_version or fw_title differs from the current one
 *   starts a download: telemetry fw_state DOWNLOADING, then chunk requests on
 *   `v2/fw/request/{id}/chunk/{n}` (payload: the chunk size, '' for the whole
 *   file), appending each `v2/fw/response/{id}/chunk/{n}` until fw_size bytes
 *   arrived; DOWNLOADED, checksum check (VERIFIED or FAILED), UPDATING, then
 *   `{"current_fw_title", "current_fw_version", "fw_state": "UPDATED"}`.
 *
 * The test drives it over stdin (JSON lines: {"op": "pub" | "sub" | "firmware" | "quit", ...})
 * and reads every event it prints (JSON lines: connected, suback, msg, fw).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { waitFor } from './mqtt.js';

const SCRIPT = String.raw`
import sys, json, threading, hashlib, zlib, time, base64
import paho.mqtt.client as mqtt

port, token = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
def out(ev, **kw):
    with lock:
        print(json.dumps(dict(ev=ev, **kw)), flush=True)

c = mqtt.Client(client_id="", clean_session=True, protocol=mqtt.MQTTv311)
c.username_pw_set(token, None)
fw = {"current": {"current_fw_title": "Initial", "current_fw_version": "v0"}, "chunk_size": 0, "req": 0, "data": b"", "chunk": 0, "info": {}, "size": 0}

def telemetry(d):
    # send_telemetry() wraps a dict without "ts" in a list
    c.publish("v1/devices/me/telemetry", json.dumps([d]), qos=1)

def verify(data, alg, checksum):
    alg = (alg or "").upper()
    if alg == "CRC32":
        got = "%08x" % (zlib.crc32(data) & 0xffffffff)
    elif alg in ("SHA256", "SHA384", "SHA512", "MD5"):
        got = hashlib.new(alg.lower(), data).hexdigest()
    else:
        return False
    return got == str(checksum).lower()

def get_chunk():
    size = fw["chunk_size"]
    payload = "" if not size or size > fw["info"].get("fw_size", 0) else str(size)
    c.publish("v2/fw/request/%d/chunk/%d" % (fw["req"], fw["chunk"]), payload, qos=1)

def start_download(info):
    fw["info"] = info
    fw["data"] = b""
    fw["chunk"] = 0
    st = dict(fw["current"]); st["fw_state"] = "DOWNLOADING"; telemetry(st); out("fw", state="DOWNLOADING")
    fw["req"] += 1
    fw["size"] = info["fw_size"]
    get_chunk()

def finish():
    st = dict(fw["current"]); st["fw_state"] = "DOWNLOADED"; telemetry(st); out("fw", state="DOWNLOADED", bytes=len(fw["data"]))
    info = fw["info"]
    if not verify(fw["data"], info.get("fw_checksum_algorithm"), info.get("fw_checksum")):
        st["fw_state"] = "FAILED"; telemetry(st); out("fw", state="FAILED"); return
    st["fw_state"] = "VERIFIED"; telemetry(st); out("fw", state="VERIFIED")
    st["fw_state"] = "UPDATING"; telemetry(st); out("fw", state="UPDATING")
    fw["current"] = {"current_fw_title": info.get("fw_title"), "current_fw_version": info.get("fw_version")}
    done = dict(fw["current"]); done["fw_state"] = "UPDATED"; telemetry(done)
    out("fw", state="UPDATED", sha256=hashlib.sha256(fw["data"]).hexdigest(), chunks=fw["chunk"])

def on_connect(cl, u, flags, rc):
    out("connected", rc=rc)
    if rc == 0:
        for t in ("v1/devices/me/attributes", "v1/devices/me/attributes/response/+", "v1/devices/me/rpc/request/+", "v1/devices/me/rpc/response/+"):
            cl.subscribe(t, qos=1)

def on_subscribe(cl, u, mid, granted):
    out("suback", mid=mid, granted=list(granted))

def on_message(cl, u, m):
    pattern = "v2/fw/response/%d/chunk/" % fw["req"]
    if m.topic.startswith(pattern):
        fw["data"] += m.payload
        fw["chunk"] += 1
        out("fw", state="CHUNK", topic=m.topic, bytes=len(m.payload))
        if len(fw["data"]) == fw["size"]:
            finish()
        elif len(m.payload) == 0:
            out("fw", state="EMPTY_CHUNK")
        else:
            get_chunk()
        return
    try:
        text = m.payload.decode("utf-8")
        out("msg", topic=m.topic, payload=json.loads(text))
    except Exception:
        out("msg", topic=m.topic, raw=base64.b64encode(m.payload).decode())
        return
    # As the SDK: any attributes message (push or response) with another fw_version starts an update.
    if m.topic.startswith("v1/devices/me/attributes"):
        info = json.loads(m.payload)
        if "/response/" in m.topic:
            info = info.get("shared", {}) if isinstance(info, dict) else {}
        cur = fw["current"]
        if (info.get("fw_version") is not None and info.get("fw_version") != cur.get("current_fw_version")) or \
           (info.get("fw_title") is not None and info.get("fw_title") != cur.get("current_fw_title")):
            threading.Thread(target=start_download, args=(info,), daemon=True).start()

c.on_connect = on_connect; c.on_subscribe = on_subscribe; c.on_message = on_message
c.connect("127.0.0.1", port, keepalive=60)
c.loop_start()
for line in sys.stdin:
    cmd = json.loads(line)
    op = cmd["op"]
    if op == "pub":
        c.publish(cmd["topic"], cmd["payload"], qos=cmd.get("qos", 1))
    elif op == "sub":
        c.subscribe(cmd["topic"], qos=1)
    elif op == "firmware":
        fw["chunk_size"] = cmd.get("chunkSize", 0)
        fw["current"] = {"current_fw_title": cmd.get("title", "Initial"), "current_fw_version": cmd.get("version", "v0")}
        c.subscribe("v2/fw/response/+", qos=1)
        telemetry(fw["current"])
        c.publish("v1/devices/me/attributes/request/%d" % cmd.get("requestId", 1),
                  json.dumps({"sharedKeys": "fw_checksum,fw_checksum_algorithm,fw_size,fw_title,fw_version"}), qos=1)
    elif op == "quit":
        break
c.disconnect(); c.loop_stop()
out("bye")
`;

export interface TbEvent { ev: string; [k: string]: any }

export class TbPythonDevice {
  readonly events: TbEvent[] = [];
  private readonly p: ChildProcessWithoutNullStreams;
  private stderr = '';
  private exited: Promise<number | null>;

  constructor(port: number, token: string) {
    this.p = spawn('/usr/bin/python3', ['-u', '-c', SCRIPT, String(port), token], { stdio: ['pipe', 'pipe', 'pipe'] });
    let buf = '';
    this.p.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line.trim()) this.events.push(JSON.parse(line) as TbEvent);
      }
    });
    this.p.stderr.on('data', (d: Buffer) => { this.stderr += d.toString(); });
    this.exited = new Promise((r) => this.p.on('close', (code) => r(code)));
  }

  /** Waits for the CONNACK and the SDK's four SUBACKs. */
  async ready(timeoutMs = 10_000): Promise<void> {
    await waitFor(() => this.events.filter((e) => e.ev === 'suback').length >= 4, timeoutMs).catch(() => {
      throw new Error(`python device not ready: ${JSON.stringify(this.events)} ${this.stderr}`);
    });
  }

  send(cmd: Record<string, unknown>): void { this.p.stdin.write(`${JSON.stringify(cmd)}\n`); }
  publish(topic: string, payload: unknown): void { this.send({ op: 'pub', topic, payload: typeof payload === 'string' ? payload : JSON.stringify(payload) }); }

  /** Messages received on `topic`, in order. */
  messages(topic: string): unknown[] { return this.events.filter((e) => e.ev === 'msg' && e.topic === topic).map((e) => e.payload); }

  async next(topic: string, after: number, timeoutMs = 8000): Promise<unknown> {
    return waitFor(() => this.messages(topic)[after], timeoutMs).catch(() => {
      throw new Error(`no message #${after} on ${topic}: ${JSON.stringify(this.events)} ${this.stderr}`);
    });
  }

  async quit(): Promise<number | null> {
    if (this.p.exitCode === null) this.send({ op: 'quit' });
    const t = setTimeout(() => this.p.kill('SIGKILL'), 5000);
    const code = await this.exited;
    clearTimeout(t);
    return code;
  }

  get errors(): string { return this.stderr; }
}
