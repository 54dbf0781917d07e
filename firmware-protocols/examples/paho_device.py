#!/usr/bin/env python3
"""A minimal Keng device (device protocol v1) in Python with paho-mqtt.

It shows the parts of the protocol that matter most (see ../device-protocol.md):

* login with device id + secret (or a ThingsBoard-style access token),
  client id = device id, keep-alive 60 s, clean session;
* Last Will ``{"online": false}`` (QoS 1, retained) and a retained
  ``{"online": true}`` status after each connect;
* telemetry at QoS 1 with ``ts`` in epoch ms; every reading stays in the
  backlog until its PUBACK arrives (PUBACK = on the server's disk), and the
  backlog is sent oldest first, as an array when there is more than one;
* RPC: subscribes to ``rpc/request/+`` at QoS 1, answers every request once
  (unknown methods ``rejected``, expired requests ``rejected``, repeated
  request ids get the same answer again);
* ``--kind speaker``: a simulated loudspeaker cluster (cụm loa) that
  implements ``broadcast.play`` / ``broadcast.stop`` / ``speaker.setVolume``
  with the priority rules and playback events;
* ``--session-limits`` (token login only): asks ``getSessionLimits`` by
  ThingsBoard client-side RPC and prints the answer.

Works with paho-mqtt 1.6 and 2.x (``pip install paho-mqtt`` or Debian's
``python3-paho-mqtt``). Examples::

    python3 paho_device.py --host 192.168.1.10 --device soil-thon3-01 --secret S3CRET
    python3 paho_device.py --device loa-thon3-01 --secret S3CRET --kind speaker --interval 30
    python3 paho_device.py --token A1B2C3D4 --session-limits --count 1

Stop with Ctrl-C: the device publishes ``{"online": false}`` and disconnects
cleanly.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import random
import ssl
import sys
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt

BATCH_MAX = 100          # readings per backlog message
KEEPALIVE_S = 60


def now_ms() -> int:
    return int(time.time() * 1000)


def connack_code(rc) -> int:
    """CONNACK return code as MQTT 3.1.1 numbers, for paho 1.x (int) and 2.x (ReasonCode)."""
    value = getattr(rc, "value", rc)
    # paho 2.x maps 3.1.1 codes to MQTT 5 reason codes
    return {132: 1, 133: 2, 136: 3, 134: 4, 135: 5}.get(value, value)


class Device:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.kind = args.kind
        self.via_token = args.token is not None
        self.base = "v1/devices/me" if self.via_token else f"v1/devices/{args.device}"
        client_id = args.device or f"tb-{args.token[:8]}"

        try:  # paho-mqtt 2.x
            self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                      clean_session=True, protocol=mqtt.MQTTv311)
        except AttributeError:  # paho-mqtt 1.x
            self.client = mqtt.Client(client_id=client_id, clean_session=True, protocol=mqtt.MQTTv311)
        if self.via_token:
            self.client.username_pw_set(args.token)           # password ignored by Keng
        else:
            self.client.username_pw_set(args.device, args.secret)
        if args.tls:
            self.client.tls_set(ca_certs=args.cafile, cert_reqs=ssl.CERT_REQUIRED)
        self.client.will_set(f"{self.base}/status", json.dumps({"online": False}), qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=300)  # exponential back-off
        self.client.on_connect = self.on_connect
        self.client.on_disconnect = self.on_disconnect
        self.client.on_publish = self.on_publish
        self.client.on_message = self.on_message

        self.lock = threading.RLock()
        self.connected = threading.Event()
        self.backlog: collections.deque[dict] = collections.deque(maxlen=10_000)
        self.inflight: tuple[int, int] | None = None   # (mid, number of readings)
        self.answers: collections.OrderedDict[str, dict] = collections.OrderedDict()
        self.client_rpc_id = 0
        self.fatal: str | None = None
        self.started = time.monotonic()

        # sensor state
        self.soil = 35.0
        # speaker state
        self.volume = 70
        self.playing: dict | None = None      # {"broadcastId", "priority", "timer"}

    # ------------------------------------------------------------------ MQTT callbacks
    def on_connect(self, client, userdata, flags, rc, *rest) -> None:
        code = connack_code(rc)
        if code != 0:
            meaning = {4: "bad username or password (unknown device, wrong secret or token)",
                       5: "not authorized (device disabled)"}.get(code, "refused")
            self.fatal = f"CONNACK {code}: {meaning}"
            print(self.fatal, file=sys.stderr)
            return
        print(f"connected as {'token' if self.via_token else self.args.device}")
        with self.lock:
            self.inflight = None  # an unacknowledged batch is still in the backlog: send it again
        client.subscribe(f"{self.base}/rpc/request/+", qos=1)
        if self.via_token:  # what ThingsBoard SDKs subscribe to
            client.subscribe([(f"{self.base}/rpc/response/+", 1), (f"{self.base}/attributes/response/+", 1),
                              (f"{self.base}/attributes", 1)])
        client.publish(f"{self.base}/status", json.dumps({"online": True, "firmware": "paho-demo-1.0"}),
                       qos=1, retain=True)
        client.publish(f"{self.base}/attributes", json.dumps(self.attributes()), qos=1)
        self.connected.set()
        if self.args.session_limits and self.via_token:
            self.client_rpc_id += 1
            client.publish(f"{self.base}/rpc/request/{self.client_rpc_id}",
                           json.dumps({"method": "getSessionLimits", "params": {}}), qos=1)

    def on_disconnect(self, client, userdata, *args) -> None:
        self.connected.clear()
        with self.lock:
            self.inflight = None
        print("disconnected (paho reconnects with back-off unless we are stopping)")

    def on_publish(self, client, userdata, mid, *args) -> None:
        # QoS 1: called when the PUBACK arrives, i.e. the readings are on Keng's disk.
        with self.lock:
            if self.inflight and self.inflight[0] == mid:
                for _ in range(self.inflight[1]):
                    self.backlog.popleft()
                print(f"PUBACK {mid}: {self.inflight[1]} reading(s) stored, {len(self.backlog)} left")
                self.inflight = None

    def on_message(self, client, userdata, msg) -> None:
        topic = msg.topic
        if topic.startswith(f"{self.base}/rpc/request/"):
            self.handle_rpc(topic.rsplit("/", 1)[1], msg.payload)
        elif topic.startswith(f"{self.base}/rpc/response/"):
            print("client-side RPC answer:", msg.payload.decode("utf-8", "replace"))
        else:
            print(f"{topic}: {msg.payload.decode('utf-8', 'replace')}")

    # ------------------------------------------------------------------ telemetry
    def attributes(self) -> dict:
        if self.kind == "speaker":
            return {"firmware": "paho-demo-1.0", "model": "PY-SPEAKER-SIM",
                    "capabilities": ["broadcast.play", "broadcast.stop", "speaker.setVolume", "stream"],
                    "codecs": ["audio/mpeg", "audio/ogg", "audio/wav"]}
        return {"firmware": "paho-demo-1.0", "model": "PY-SOIL-SIM",
                "capabilities": ["soil_moisture", "temperature", "battery_v"],
                "interval_s": int(self.args.interval) if self.args.interval >= 1 else self.args.interval}

    def sample(self) -> None:
        if self.kind == "speaker":
            values = {"volume": self.volume, "playing": self.playing is not None, "rssi": random.randint(-80, -55),
                      "power_source": "ac", "amp_temp_c": round(random.uniform(35, 50), 1),
                      "uptime_s": int(time.monotonic() - self.started)}
        else:
            self.soil = min(60.0, max(10.0, self.soil + random.uniform(-0.5, 0.4)))
            values = {"soil_moisture": round(self.soil, 1), "temperature": round(random.uniform(22, 31), 1),
                      "battery_v": round(random.uniform(3.7, 4.1), 2)}
        with self.lock:
            self.backlog.append({"ts": now_ms(), "values": values})

    def send_backlog(self) -> None:
        """One batch in flight at a time; it leaves the backlog only on PUBACK."""
        with self.lock:
            if self.inflight or not self.backlog or not self.connected.is_set():
                return
            batch = list(self.backlog)[:BATCH_MAX]
            payload = batch[0] if len(batch) == 1 else batch      # oldest first
            info = self.client.publish(f"{self.base}/telemetry", json.dumps(payload, separators=(",", ":")), qos=1)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                self.inflight = (info.mid, len(batch))

    # ------------------------------------------------------------------ RPC
    def respond(self, request_id: str, answer: dict) -> None:
        self.answers[request_id] = answer
        while len(self.answers) > 64:
            self.answers.popitem(last=False)
        self.client.publish(f"{self.base}/rpc/response/{request_id}", json.dumps(answer), qos=1)
        print(f"rpc {request_id} -> {answer}")

    def handle_rpc(self, request_id: str, raw: bytes) -> None:
        if request_id in self.answers:           # QoS 1 redelivery: same answer, no second action
            self.respond(request_id, self.answers[request_id])
            return
        try:
            req = json.loads(raw)
            method, params = req["method"], req.get("params") or {}
        except (ValueError, KeyError, TypeError):
            self.respond(request_id, {"status": "rejected", "detail": "bad request"})
            return
        print(f"rpc {request_id} <- {method} {json.dumps(params)}")
        expires = req.get("expiresAt")
        if isinstance(expires, (int, float)) and expires < now_ms():
            self.respond(request_id, {"status": "rejected", "detail": "expired"})
            return
        handler = {"broadcast.play": self.rpc_play, "broadcast.stop": self.rpc_stop,
                   "speaker.setVolume": self.rpc_set_volume}.get(method) if self.kind == "speaker" else None
        if handler is None:
            self.respond(request_id, {"status": "rejected", "detail": "unknown method"})
            return
        handler(request_id, params)

    def event(self, broadcast_id: str, state: str, detail: str | None = None) -> None:
        ev = {"type": "playback", "broadcastId": broadcast_id, "state": state, "at": now_ms()}
        if detail:
            ev["detail"] = detail
        self.client.publish(f"{self.base}/events", json.dumps(ev), qos=1)
        print("event", ev)

    def rpc_set_volume(self, request_id: str, params: dict) -> None:
        vol = params.get("volume")
        if not isinstance(vol, (int, float)) or isinstance(vol, bool) or not 0 <= vol <= 100:
            self.respond(request_id, {"status": "rejected", "detail": "volume out of range"})
            return
        self.volume = int(vol)
        self.respond(request_id, {"status": "ok", "volume": self.volume})

    def rpc_stop(self, request_id: str, params: dict) -> None:
        with self.lock:
            cur = self.playing
            if cur and params.get("broadcastId") in (None, cur["broadcastId"]):
                cur["timer"].cancel()
                self.playing = None
                self.event(cur["broadcastId"], "stopped", "broadcast.stop")
        self.respond(request_id, {"status": "ok"})       # stop is idempotent

    def rpc_play(self, request_id: str, p: dict) -> None:
        bid, prio, media, stream = p.get("broadcastId"), p.get("priority", "normal"), p.get("media"), p.get("stream")
        if not isinstance(bid, str) or prio not in ("normal", "priority", "emergency") \
                or (media is None) == (stream is None):
            self.respond(request_id, {"status": "rejected", "detail": "bad params"})
            return
        not_after = p.get("notAfter")
        if isinstance(not_after, (int, float)) and not_after < now_ms():
            self.respond(request_id, {"status": "rejected", "detail": "notAfter passed"})
            return
        with self.lock:
            cur = self.playing
            if cur and prio != "emergency":
                # normal never interrupts; priority waits (this simulator has no queue)
                self.respond(request_id, {"status": "rejected", "detail": "busy"})
                return
            self.respond(request_id, {"status": "accepted"})
            if cur:  # an emergency interrupts anything playing
                cur["timer"].cancel()
                self.playing = None
                self.event(cur["broadcastId"], "preempted", f"preempted by {bid}")
        threading.Thread(target=self.play, args=(bid, prio, media, stream), daemon=True).start()

    def play(self, bid: str, prio: str, media: dict | None, stream: dict | None) -> None:
        duration = float(self.args.stream_seconds)
        if media:
            duration = float(media.get("durationSec") or 1)
            if self.args.fetch_media:  # fetch the signed URL at once, check SHA-256
                try:
                    with urllib.request.urlopen(media["url"], timeout=30) as resp:
                        data = resp.read()
                except Exception as exc:  # noqa: BLE001 - report any download problem
                    self.event(bid, "failed", f"download failed: {exc}")
                    return
                if hashlib.sha256(data).hexdigest() != str(media.get("sha256", "")).lower():
                    self.event(bid, "failed", "sha256 mismatch")
                    return
        with self.lock:
            if self.playing and prio != "emergency":
                self.event(bid, "failed", "busy")
                return
            timer = threading.Timer(duration / self.args.speed, self.finished, args=(bid,))
            self.playing = {"broadcastId": bid, "priority": prio, "timer": timer}
            timer.start()
        self.event(bid, "started")

    def finished(self, bid: str) -> None:
        with self.lock:
            if not self.playing or self.playing["broadcastId"] != bid:
                return
            self.playing = None
        self.event(bid, "completed")

    # ------------------------------------------------------------------ main loop
    def run(self) -> int:
        self.client.connect_async(self.args.host, self.args.port, keepalive=KEEPALIVE_S)
        self.client.loop_start()
        next_sample, samples = time.monotonic(), 0
        try:
            while self.fatal is None:
                if time.monotonic() >= next_sample and (self.args.count == 0 or samples < self.args.count):
                    self.sample()
                    samples += 1
                    next_sample += self.args.interval
                self.send_backlog()
                done = self.args.count and samples >= self.args.count and not self.backlog and not self.playing
                if done:
                    time.sleep(1.0)  # let RPC answers and events go out
                    break
                time.sleep(0.1)
        except KeyboardInterrupt:
            pass
        if self.fatal:
            self.client.loop_stop()
            return 2
        # planned disconnect: say so (the will is not sent after DISCONNECT)
        if self.connected.is_set():
            self.client.publish(f"{self.base}/status", json.dumps({"online": False, "reason": "shutdown"}),
                                qos=1, retain=True).wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()
        if self.backlog:
            print(f"{len(self.backlog)} reading(s) not acknowledged", file=sys.stderr)
        return 0


def main() -> int:
    ap = argparse.ArgumentParser(description="Minimal Keng device (protocol v1) with paho-mqtt")
    ap.add_argument("--host", default="localhost")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--device", help="device id (username); with --secret")
    ap.add_argument("--secret", help="device secret (password)")
    ap.add_argument("--token", help="ThingsBoard-style access token (username); uses v1/devices/me/...")
    ap.add_argument("--kind", choices=["sensor", "speaker"], default="sensor")
    ap.add_argument("--interval", type=float, default=60.0, help="seconds between readings (default 60)")
    ap.add_argument("--count", type=int, default=0, help="stop after this many readings (0 = run forever)")
    ap.add_argument("--tls", action="store_true", help="TLS (port 8883 usually)")
    ap.add_argument("--cafile", help="CA certificate for --tls")
    ap.add_argument("--session-limits", action="store_true", help="ask getSessionLimits (token login)")
    ap.add_argument("--fetch-media", action="store_true", help="speaker: really download media.url and check sha256")
    ap.add_argument("--speed", type=float, default=1.0, help="speaker: play N times faster (tests)")
    ap.add_argument("--stream-seconds", type=float, default=60.0, help="speaker: how long a stream plays")
    args = ap.parse_args()
    if args.token is None and not (args.device and args.secret):
        ap.error("give --device and --secret, or --token")
    return Device(args).run()


if __name__ == "__main__":
    sys.exit(main())
