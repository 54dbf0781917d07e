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

Usage: paho_speaker.py HOST PORT DEVICE_ID SECRET [SPEED]
Prints one JSON line per playback event on stdout; exits on SIGTERM/stdin EOF.
"""
import hashlib
import json
import sys
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt

HOST, PORT, DEV, SECRET = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
SPEED = float(sys.argv[5]) if len(sys.argv) > 5 else 1.0
ROOT = "v1/devices/%s" % DEV
answers = {}
lock = threading.Lock()
stops = {}  # broadcastId -> threading.Event
volume = 70


def now_ms():
    return int(time.time() * 1000)


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
    global volume
    rid = msg.topic.rsplit("/", 1)[-1]
    with lock:
        prev = answers.get(rid)
    if prev is not None:  # guide 11.4: repeat the previous answer
        send("%s/rpc/response/%s" % (ROOT, rid), prev)
        return
    try:
        req = json.loads(msg.payload.decode("utf-8"))
        method, params = req.get("method"), req.get("params") or {}
    except Exception:  # noqa: BLE001
        answer(rid, {"status": "rejected", "detail": "bad json"})
        return
    if isinstance(req.get("expiresAt"), (int, float)) and req["expiresAt"] < now_ms():
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
