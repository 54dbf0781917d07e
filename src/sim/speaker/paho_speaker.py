#!/usr/bin/env python3
"""An independent Keng loudspeaker written with paho-mqtt (1.x or 2.x API).

A second implementation of the loudspeaker side of device protocol v1
(firmware-protocols/device-protocol.md), used by the tests to check that the
controller works with a client that shares no code with it. It implements:
connect with id + secret, Last Will, retained status, subscribe to
rpc/request/+ at QoS 1, broadcast.play (validate, accepted, fetch the media,
check sha256, play in accelerated time, playback events started/completed or
failed), broadcast.stop, speaker.setVolume, unknown methods rejected, repeated
request ids answered again without acting twice.

Signed commands (device protocol 11.6): given KEYS_FILE, a JSON file holding the
reply of GET /api/v1/command-keys, the speaker verifies broadcast.play and
broadcast.stop (Ed25519, with the `cryptography` package, imported only then),
acts only on what `signed` says, and refuses (rejected + detail) an unsigned
one (`unsigned`), an unknown kid (`unknown_key`), a bad signature
(`bad_signature`), another device's (`wrong_device`) or another topic's
(`wrong_request_id`) command, an expired one (`expired`) and a request id it
already executed (`replayed`). Without KEYS_FILE it ignores the extra keys, as
firmware that does not verify does.

Usage: paho_speaker.py HOST PORT DEVICE_ID SECRET [SPEED] [KEYS_FILE]
Prints one JSON line per playback event (and per refused signed command,
{"refused": R, "detail": reason}) on stdout; exits on SIGTERM/stdin EOF.
"""
import base64
import hashlib
import json
import sys
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt

HOST, PORT, DEV, SECRET = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
SPEED = float(sys.argv[5]) if len(sys.argv) > 5 else 1.0
KEYS_FILE = sys.argv[6] if len(sys.argv) > 6 else None
ROOT = "v1/devices/%s" % DEV
SIGNED_METHODS = ("broadcast.play", "broadcast.stop")
answers = {}
executed = {}  # request id -> expiresAt of the signed commands carried out (11.6: replays are refused)
lock = threading.Lock()
stops = {}  # broadcastId -> threading.Event
volume = 70


def now_ms():
    return int(time.time() * 1000)


def b64url(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def load_keys(path):
    """kid -> Ed25519 public key, from the GET /api/v1/command-keys reply."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    with open(path, encoding="utf-8") as f:
        listed = json.load(f)
    return {k["kid"]: Ed25519PublicKey.from_public_bytes(b64url(k["publicKey"]))
            for k in listed if k.get("alg") == "Ed25519"}


KEYS = load_keys(KEYS_FILE) if KEYS_FILE else None


def check_signed(rid, req):
    """Device protocol 11.6. Returns (method, params, expiresAt, signed) to act on, or a refusal reason."""
    signed, sig, kid = req.get("signed"), req.get("sig"), req.get("kid")
    if KEYS is None or (signed is None and sig is None and kid is None):
        if KEYS is not None and req.get("method") in SIGNED_METHODS:
            return "unsigned"
        return req.get("method"), req.get("params") or {}, req.get("expiresAt"), False
    if not all(isinstance(v, str) for v in (signed, sig, kid)):
        return "bad_signature"
    key = KEYS.get(kid)
    if key is None:
        return "unknown_key"
    try:  # over the UTF-8 bytes of `signed` exactly as received
        key.verify(b64url(sig), signed.encode("utf-8"))
        cmd = json.loads(signed)
    except Exception:  # noqa: BLE001 (InvalidSignature, bad base64)
        return "bad_signature"
    if cmd.get("deviceId") != DEV:
        return "wrong_device"
    if cmd.get("requestId") != rid:
        return "wrong_request_id"
    exp = cmd.get("expiresAt")
    if not isinstance(exp, (int, float)) or exp < now_ms():
        return "expired"
    with lock:
        if rid in executed:
            return "replayed"
    return cmd.get("method"), cmd.get("params") or {}, exp, True


def remember_executed(rid, exp):
    with lock:
        executed[rid] = exp
        if len(executed) > 1024:  # forget the expired ones, then the oldest
            for k in [k for k, e in executed.items() if e < now_ms()]:
                del executed[k]
            while len(executed) > 1024:
                del executed[next(iter(executed))]


def make_client():
    try:  # paho-mqtt 2.x
        return mqtt.Client(mqtt.CallbackAPIVersion.VERSION1, client_id=DEV, clean_session=True, protocol=mqtt.MQTTv311)
    except AttributeError:  # 1.x
        return mqtt.Client(client_id=DEV, clean_session=True, protocol=mqtt.MQTTv311)


client = make_client()
client.username_pw_set(DEV, SECRET)
client.will_set(ROOT + "/status", json.dumps({"online": False}), qos=1, retain=True)


def send(topic, body):
    client.publish(topic, json.dumps(body), qos=1)


def answer(rid, body):
    with lock:
        answers[rid] = body
    send("%s/rpc/response/%s" % (ROOT, rid), body)


def event(bid, state, detail=None):
    e = {"type": "playback", "broadcastId": bid, "state": state, "at": now_ms()}
    if detail:
        e["detail"] = detail
    print(json.dumps(e), flush=True)
    send(ROOT + "/events", e)


def play(p):
    bid = p["broadcastId"]
    stop = threading.Event()
    stops[bid] = stop
    media = p["media"]
    try:
        with urllib.request.urlopen(media["url"], timeout=20) as r:
            data = r.read()
    except Exception as exc:  # noqa: BLE001
        event(bid, "failed", "download failed: %s" % exc)
        return
    if hashlib.sha256(data).hexdigest() != media["sha256"].lower():
        event(bid, "failed", "sha256 mismatch")
        return
    if now_ms() > p["notAfter"]:
        event(bid, "failed", "notAfter passed")
        return
    event(bid, "started")
    send(ROOT + "/telemetry", {"ts": now_ms(), "values": {"volume": p["volume"], "playing": True}})
    if stop.wait(float(media["durationSec"]) / SPEED):
        event(bid, "stopped", "broadcast.stop")
    else:
        event(bid, "completed")
    send(ROOT + "/telemetry", {"ts": now_ms(), "values": {"volume": volume, "playing": False}})


def on_connect(c, _userdata, _flags, rc):
    if rc != 0:
        print(json.dumps({"connack": rc}), flush=True)
        return
    c.subscribe(ROOT + "/rpc/request/+", qos=1)


def on_subscribe(c, _userdata, _mid, _granted):
    c.publish(ROOT + "/status", json.dumps({"online": True, "firmware": "paho-ref-1.0"}), qos=1, retain=True)
    c.publish(ROOT + "/attributes", json.dumps({"model": "paho-reference-speaker", "capabilities": ["broadcast.play", "broadcast.stop", "speaker.setVolume"]}), qos=1)
    print(json.dumps({"ready": True}), flush=True)


def on_message(_c, _userdata, msg):
    rid = msg.topic.rsplit("/", 1)[-1]
    try:
        req = json.loads(msg.payload.decode("utf-8"))
        checked = check_signed(rid, req)
    except Exception:  # noqa: BLE001
        answer(rid, {"status": "rejected", "detail": "bad json"})
        return
    if isinstance(checked, str):  # refused; not kept as the answer to rid (a forgery must not decide it)
        print(json.dumps({"refused": rid, "detail": checked}), flush=True)
        send("%s/rpc/response/%s" % (ROOT, rid), {"status": "rejected", "detail": checked})
        return
    with lock:
        prev = answers.get(rid)
    if prev is not None:  # guide 11.4: repeat the previous answer
        send("%s/rpc/response/%s" % (ROOT, rid), prev)
        return
    method, params, expires_at, signed = checked
    act(rid, method, params, expires_at)
    with lock:
        done = answers.get(rid, {}).get("status") in ("accepted", "ok")
    if signed and done:
        remember_executed(rid, expires_at)


def act(rid, method, params, expires_at):
    global volume
    if isinstance(expires_at, (int, float)) and expires_at < now_ms():
        answer(rid, {"status": "rejected", "detail": "expired"})
    elif method == "broadcast.play":
        media = params.get("media")
        if not isinstance(params.get("broadcastId"), str) or not isinstance(media, dict) \
                or not isinstance(params.get("notAfter"), (int, float)) or params["notAfter"] < now_ms():
            answer(rid, {"status": "rejected", "detail": "bad params"})
            return
        answer(rid, {"status": "accepted"})
        threading.Thread(target=play, args=(params,), daemon=True).start()
    elif method == "broadcast.stop":
        answer(rid, {"status": "ok"})
        bid = params.get("broadcastId")
        for k, ev in list(stops.items()):
            if bid is None or k == bid:
                ev.set()
    elif method == "speaker.setVolume":
        v = params.get("volume")
        if isinstance(v, (int, float)) and 0 <= v <= 100:
            volume = int(v)
            answer(rid, {"status": "ok", "volume": volume})
        else:
            answer(rid, {"status": "rejected", "detail": "volume out of range"})
    else:
        answer(rid, {"status": "rejected", "detail": "unknown method"})


client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_message = on_message
client.connect(HOST, PORT, keepalive=60)
client.loop_start()
try:
    sys.stdin.read()  # until the parent closes stdin
finally:
    client.publish(ROOT + "/status", json.dumps({"online": False, "reason": "shutdown"}), qos=1, retain=True)
    time.sleep(0.1)
    client.disconnect()
    client.loop_stop()
