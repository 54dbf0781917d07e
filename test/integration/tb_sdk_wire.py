#!/usr/bin/python3
"""Imitations, on the wire, of ThingsBoard device SDKs talking to Keng (paho-mqtt 1.6).

Written from reading the SDKs' source; none of their code is here.

``arduino HOST PORT TOKEN SECONDS [--events] [--reconnect-before-answer]``
    thingsboard-client-sdk (Arduino/ESP32) with PubSubClient: client id = username = the access
    token, no password, clean session, keep-alive 15 s, QoS 0 everywhere. Subscribes to
    ``v1/devices/me/rpc/request/+``; on a request parses the id after the topic prefix with C's
    ``atoi`` semantics (Helper::parseRequestId) and answers the callback's JSON on
    ``v1/devices/me/rpc/response/%u``. The firmware's RPC callback answers ``broadcast.play``
    with ``{"playing": true}`` (no ``status``: ThingsBoard firmware answers any JSON).
    ``--events``: the firmware also publishes playback events (started, then completed after the
    media's length) on ``v1/devices/me/events`` through the same MQTT client.
    ``--reconnect-before-answer``: on the first request the device drops its connection,
    connects again and only then answers it (the answer must still map).

``python HOST PORT TOKEN``
    thingsboard-python-client-sdk 1.7.1 TBDeviceMqttClient: paho Client(protocol=4,
    client_id=""), username = token, QoS 1. ``connect(callback=...)`` writes CONNECT and starts
    the loop; its on_connect sleeps 0.2 s (a connect callback is set) before subscribing to
    ``attributes``, ``attributes/response/+``, ``rpc/request/+``, ``rpc/response/+``. Right after
    connect() the flows of the SDK's examples run: ``request_attributes(["atr1", "atr2"])``
    → ``v1/devices/me/attributes/request/1`` ``{"clientKeys": "atr1,atr2"}``;
    ``send_rpc_call("getSessionLimits", {}, cb)`` → ``v1/devices/me/rpc/request/1``
    ``{"method": "getSessionLimits", "params": {}}``; ``claim("s3cret", 30000)`` →
    ``v1/devices/me/claim`` ``{"secretKey": "s3cret", "durationMs": 30000}``. The SDK times
    requests out after 30 s; here 10 s.

Every line on stdout is JSON: {"event": ..., ...}. Exit status 0 when the flow completed.
"""
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt


def out(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def atoi(s):
    """C atoi: optional whitespace and sign, then leading digits; 0 when there are none."""
    s = s.lstrip()
    sign, i = 1, 0
    if s[:1] in ("+", "-"):
        sign, i = (-1 if s[0] == "-" else 1), 1
    n = 0
    while i < len(s) and s[i].isdigit():
        n = n * 10 + int(s[i])
        i += 1
    return sign * n


RPC_REQUEST = "v1/devices/me/rpc/request/"


def arduino(host, port, token, seconds, events, reconnect_first):
    done = threading.Event()
    state = {"held": None, "answered": 0}

    def make_client():
        # PubSubClient: MQTT 3.1.1, clean session, client id and username = token, no password.
        c = mqtt.Client(client_id=token, clean_session=True, protocol=mqtt.MQTTv311)
        c.username_pw_set(token, None)
        c.on_connect = on_connect
        c.on_message = on_message
        return c

    def on_connect(c, _u, _f, rc):
        out(event="connected", rc=rc)
        if rc == 0:
            # ThingsBoard::Resubscribe_Topics → Server_Side_RPC: subscribe(RPC_SUBSCRIBE_TOPIC), QoS 0.
            c.subscribe(RPC_REQUEST + "+", qos=0)
            if state["held"] is not None:
                # Reconnected: answer the request received on the previous connection.
                time.sleep(0.3)
                topic, body = state.pop("held")
                state["held"] = None
                answer(c, topic, body)

    def answer(c, topic, data):
        request_id = atoi(topic[len(RPC_REQUEST):])
        method = data.get("method")
        if method == "broadcast.play":
            resp = {"playing": True}
        else:
            resp = {"ok": True}
        c.publish("v1/devices/me/rpc/response/%u" % request_id, json.dumps(resp, separators=(",", ":")), qos=0)
        state["answered"] += 1
        out(event="answered", topic=topic, requestId=request_id, method=method)
        if events and method == "broadcast.play":
            params = data.get("params") or {}
            bid = params.get("broadcastId")
            length = float((params.get("media") or {}).get("durationSec") or 0.2)

            def play():
                ev = lambda st: c.publish("v1/devices/me/events", json.dumps(
                    {"type": "playback", "broadcastId": bid, "state": st, "at": int(time.time() * 1000)}), qos=0)
                ev("started")
                time.sleep(length)
                ev("completed")
                out(event="played", broadcastId=bid)
            threading.Thread(target=play, daemon=True).start()

    def on_message(c, _u, msg):
        if not msg.topic.startswith(RPC_REQUEST):
            return
        try:
            data = json.loads(msg.payload)
        except ValueError:
            return
        out(event="request", topic=msg.topic, method=data.get("method"), signedRequestId=json.loads(data["signed"])["requestId"] if "signed" in data else None)
        if "method" not in data:
            return
        if reconnect_first and state["answered"] == 0 and state["held"] is None and not state.get("dropped"):
            state["held"] = (msg.topic, data)
            state["dropped"] = True
            out(event="dropping")
            c.disconnect()
            return
        answer(c, msg.topic, data)

    client = make_client()
    client.connect(host, port, keepalive=15)
    client.loop_start()
    deadline = time.time() + seconds
    while time.time() < deadline and not done.is_set():
        if state.get("dropped") and state["held"] is not None and not client.is_connected():
            time.sleep(0.2)
            client.loop_stop()
            client = make_client()
            client.connect(host, port, keepalive=15)
            client.loop_start()
            while not client.is_connected() and time.time() < deadline:
                time.sleep(0.05)
        time.sleep(0.1)
    client.loop_stop()
    client.disconnect()
    return 0


def python_sdk(host, port, token):
    answers = {}
    got = threading.Event()

    client = mqtt.Client(protocol=4, client_id="")
    client.username_pw_set(token, password=None)

    def on_connect(c, _u, _f, rc, *extra):
        # TBDeviceMqttClient._on_connect with a connect callback: sleep(.2), then the four subscriptions.
        time.sleep(.2)
        out(event="connected", rc=rc)
        if rc == 0:
            c.subscribe("v1/devices/me/attributes", qos=1)
            c.subscribe("v1/devices/me/attributes/response/+", qos=1)
            c.subscribe("v1/devices/me/rpc/request/+", qos=1)
            c.subscribe("v1/devices/me/rpc/response/+", qos=1)
            out(event="subscribed")

    def on_message(_c, _u, msg):
        body = json.loads(msg.payload)
        out(event="message", topic=msg.topic, body=body)
        if msg.topic.startswith("v1/devices/me/attributes/response/"):
            answers["attributes"] = (int(msg.topic[len("v1/devices/me/attributes/response/"):]), body)
        elif msg.topic.startswith("v1/devices/me/rpc/response/"):
            answers["rpc"] = (int(msg.topic[len("v1/devices/me/rpc/response/"):]), body)
        if len(answers) == 2:
            got.set()

    client.on_connect = on_connect
    client.on_message = on_message
    # TBDeviceMqttClient.connect(): connect (CONNECT written), loop_start.
    client.connect(host, port, keepalive=120)
    client.loop_start()
    # Right after connect(): the SDK examples' calls, published at once (the socket is open).
    client.publish("v1/devices/me/attributes/request/1", json.dumps({"clientKeys": "atr1,atr2"}), qos=1)
    client.publish("v1/devices/me/rpc/request/1", json.dumps({"method": "getSessionLimits", "params": {}}), qos=1)
    client.publish("v1/devices/me/claim", json.dumps({"secretKey": "s3cret", "durationMs": 30000}), qos=1)
    out(event="requested")
    ok = got.wait(10)
    out(event="done", ok=ok, answers={k: {"id": v[0], "body": v[1]} for k, v in answers.items()})
    time.sleep(0.3)
    client.loop_stop()
    client.disconnect()
    return 0 if ok else 1


if __name__ == "__main__":
    mode, host, port, token = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    if mode == "arduino":
        sys.exit(arduino(host, port, token, float(sys.argv[5]), "--events" in sys.argv, "--reconnect-before-answer" in sys.argv))
    sys.exit(python_sdk(host, port, token))
