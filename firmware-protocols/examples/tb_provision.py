#!/usr/bin/env python3
"""Register a device with a Keng provisioning key, then send one reading.

The same exchange as ThingsBoard's device provisioning (see
../provisioning.md), written with paho-mqtt 1.6 only:

  1. connect with username "provision" (no password),
  2. subscribe to /provision/response and publish the request to
     /provision/request,
  3. read the answer: {"status": "SUCCESS", "credentialsType": "ACCESS_TOKEN",
     "credentialsValue": "<token>"} or {"status": "NOT_FOUND"|"FAILURE",
     "errorMsg": "..."}; disconnect either way, and do NOT retry a refusal in
     a loop (a wrong key stays wrong; the server also limits requests per
     address),
  4. keep the token (here: a JSON file) and log in with it as the username,
     like any ThingsBoard device: v1/devices/me/telemetry.

Usage:
  python3 tb_provision.py --host 192.168.1.10 --key <provisionDeviceKey> \
      --secret <provisionDeviceSecret> --name "Cảm biến đất 07" \
      --save credentials.json --telemetry '{"soilMoisture": 31.5}'

A second run with the same --save file skips provisioning and uses the
stored token: provisioning is done once per device, at first start.
Exit status: 0 on success, 2 when the server refused the request, 1 otherwise.
"""
import argparse
import json
import os
import sys
import threading

import paho.mqtt.client as mqtt


def provision(host, port, key, secret, name, timeout=20):
    """One provision request; returns the server's answer (a dict) or None on timeout."""
    done = threading.Event()
    answer = {}
    request = {"deviceName": name, "provisionDeviceKey": key, "provisionDeviceSecret": secret}

    def on_connect(client, userdata, flags, rc):
        if rc != 0:
            answer.update({"status": "CONNECT_REFUSED", "errorMsg": "CONNACK %d" % rc})
            done.set()
            return
        client.subscribe("/provision/response", qos=1)
        client.publish("/provision/request", json.dumps(request), qos=1)

    def on_message(client, userdata, msg):
        answer.update(json.loads(msg.payload.decode("utf-8")))
        done.set()

    client = mqtt.Client()
    client.username_pw_set("provision")
    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(host, port, keepalive=30)
    client.loop_start()
    done.wait(timeout)
    client.disconnect()
    client.loop_stop()
    return answer or None


def send_telemetry(host, port, token, values, timeout=20):
    client = mqtt.Client()
    client.username_pw_set(token)  # the access token is the username; no password
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc: connected.set() if rc == 0 else None
    client.connect(host, port, keepalive=60)
    client.loop_start()
    if not connected.wait(timeout):
        client.loop_stop()
        return False
    info = client.publish("v1/devices/me/telemetry", json.dumps(values), qos=1)
    info.wait_for_publish(timeout)  # PUBACK: the reading is on the server's disk
    ok = info.is_published()
    client.disconnect()
    client.loop_stop()
    return ok


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--key", required=True, help="provisionDeviceKey")
    p.add_argument("--secret", required=True, help="provisionDeviceSecret")
    p.add_argument("--name", required=True, help="device name; the device id is made from it")
    p.add_argument("--save", help="JSON file keeping the token between runs")
    p.add_argument("--telemetry", help='one reading to send, e.g. \'{"soilMoisture": 31.5}\'')
    a = p.parse_args()

    token = None
    if a.save and os.path.exists(a.save):
        with open(a.save, encoding="utf-8") as f:
            token = json.load(f)["accessToken"]
    if token is None:
        answer = provision(a.host, a.port, a.key, a.secret, a.name)
        if not answer:
            print("no answer from the server", file=sys.stderr)
            return 1
        if answer.get("status") != "SUCCESS":
            print("provisioning refused: %s %s" % (answer.get("status"), answer.get("errorMsg")), file=sys.stderr)
            return 2
        token = answer["credentialsValue"]
        if a.save:
            with open(a.save, "w", encoding="utf-8") as f:
                json.dump({"accessToken": token}, f)
    print(json.dumps({"accessToken": token}))
    if a.telemetry and not send_telemetry(a.host, a.port, token, json.loads(a.telemetry)):
        print("telemetry not acknowledged", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
