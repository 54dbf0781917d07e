#!/usr/bin/env bash
# The build steps of the Keng container image. The Dockerfile runs each step
# with `RUN bash scripts/image-steps.sh <step>`; the steps live here, not in
# the Dockerfile, so that a test can run them on a machine without Docker
# (test/unit/image-steps.test.ts):
#
#   --dry-run build-deps runtime-deps   checks that every Debian package named
#                                       has an install candidate (apt-cache policy)
#                                       and prints what it would install
#   --dry-run app                       prints the npm commands without running them
#   keng-bin verify                     run for real against KENG_APP_DIR (e.g. the
#                                       repository with dist/ built) and KENG_BIN_DIR
#
# Steps:
#   build-deps    compilers for native modules (better-sqlite3, serialport) when no prebuilt binary fits
#   runtime-deps  what media checks and text-to-speech need: ffmpeg (includes ffprobe), espeak-ng and
#                 espeak-ng-data (holds the Vietnamese voice "vi"); ca-certificates for an HTTPS InfluxDB
#   app           npm ci, build, drop dev dependencies
#   keng-bin      puts the `keng` CLI on PATH (KENG_BIN_DIR/keng → KENG_APP_DIR/bin/keng.js)
#   verify        fails the build unless `keng --help` runs and ffmpeg, ffprobe and espeak-ng's "vi" voice work
set -euo pipefail

APP_DIR="${KENG_APP_DIR:-/app}"
BIN_DIR="${KENG_BIN_DIR:-/usr/local/bin}"
BUILD_PACKAGES=(python3 make g++ ca-certificates)
RUNTIME_PACKAGES=(ffmpeg espeak-ng espeak-ng-data ca-certificates)

dry_run=0
steps=()
for a in "$@"; do
  case "$a" in
    --dry-run) dry_run=1 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) steps+=("$a") ;;
  esac
done
[ ${#steps[@]} -gt 0 ] || { echo "image-steps: name a step: build-deps runtime-deps app keng-bin verify" >&2; exit 2; }

say() { echo "image-steps: $*"; }

apt_install() {
  if [ "$dry_run" = 1 ]; then
    local bad=()
    for p in "$@"; do
      # A package is installable when apt knows a candidate version for it (not "(none)", not unknown).
      local cand
      cand=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2; exit}')
      if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then bad+=("$p"); else say "would install $p ($cand)"; fi
    done
    if [ ${#bad[@]} -gt 0 ]; then echo "image-steps: no Debian package candidate for: ${bad[*]}" >&2; exit 1; fi
    return 0
  fi
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
  rm -rf /var/lib/apt/lists/*
}

run() {
  if [ "$dry_run" = 1 ]; then say "would run: $*"; else say "$*"; "$@"; fi
}

step_app() {
  if [ "$dry_run" = 1 ]; then say "would run in $APP_DIR:"; else cd "$APP_DIR"; fi
  run npm ci --no-audit --no-fund
  run npm run build
  run npm prune --omit=dev --no-audit --no-fund
}

step_keng_bin() {
  [ -f "$APP_DIR/bin/keng.js" ] || { echo "image-steps: $APP_DIR/bin/keng.js missing" >&2; exit 1; }
  run chmod 0755 "$APP_DIR/bin/keng.js"
  run mkdir -p "$BIN_DIR"
  # A symlink: node resolves it, so bin/keng.js finds ../dist next to its real path.
  run ln -sf "$APP_DIR/bin/keng.js" "$BIN_DIR/keng"
}

step_verify() {
  # Run for real even with --dry-run: it only reads.
  # Outputs are captured before they are searched: `tool | grep -q` would fail under pipefail when grep stops reading early.
  local help version encoders voices
  help=$(PATH="$BIN_DIR:$PATH" keng --help) || { echo "image-steps: keng --help failed" >&2; exit 1; }
  [[ "$help" == *backup* ]] || { echo "image-steps: keng --help lacks the backup command" >&2; exit 1; }
  version=$(ffmpeg -hide_banner -version) && say "${version%%$'\n'*}"
  version=$(ffprobe -hide_banner -version) && say "${version%%$'\n'*}"
  encoders=$(ffmpeg -hide_banner -encoders 2>/dev/null)
  [[ "$encoders" == *libmp3lame* ]] || { echo "image-steps: ffmpeg lacks the MP3 encoder (libmp3lame) text-to-speech uses" >&2; exit 1; }
  voices=$(espeak-ng --voices=vi)
  awk 'NR > 1 && $2 == "vi" { found = 1 } END { exit !found }' <<<"$voices" \
    || { echo "image-steps: espeak-ng has no Vietnamese voice (vi): is espeak-ng-data installed?" >&2; exit 1; }
  say "verified: keng CLI on PATH, ffmpeg, ffprobe, espeak-ng with voice vi"
}

for s in "${steps[@]}"; do
  case "$s" in
    build-deps) apt_install "${BUILD_PACKAGES[@]}" ;;
    runtime-deps) apt_install "${RUNTIME_PACKAGES[@]}" ;;
    app) step_app ;;
    keng-bin) step_keng_bin ;;
    verify) step_verify ;;
    *) echo "image-steps: unknown step $s (build-deps runtime-deps app keng-bin verify)" >&2; exit 2 ;;
  esac
done
