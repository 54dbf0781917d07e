#!/usr/bin/env bash
# Installs the real servers and clients the tests run against (Debian packages),
# then the npm dependencies. Run as root, or as a user who may use sudo (used for
# apt-get only, and only when not root). Fails (does not skip) when
# something cannot be installed: a test that needs a real part must not pass without it.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t pkgs < <(grep -vE '^\s*(#|$)' scripts/system-deps.txt)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Debian's influxdb package may start a system instance on :8086; the tests start their own on free ports.
for bin in /usr/bin/influxd /usr/bin/mosquitto_pub /usr/bin/espeak-ng /usr/bin/ffmpeg /usr/bin/chromium /usr/bin/socat; do
  [ -x "$bin" ] || { echo "setup: $bin is missing after install" >&2; exit 1; }
done
/usr/bin/python3 -c 'import paho.mqtt.client, pymodbus, serial, serial_asyncio, socketio, lxml.etree' || { echo "setup: Debian python modules missing" >&2; exit 1; }
if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
