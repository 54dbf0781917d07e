# Keng controller image.
#
#   docker build -t keng:local .
#   docker run -d -p 1883:1883 -p 8080:8080 -v keng-data:/app/data \
#     -e KENG_MEDIA_PUBLIC_BASE_URL=http://<this host's LAN address>:8080 keng:local
#   docker exec <container> keng backup /app/backups/$(date +%F)   # the CLI is on PATH
#
# NOT built on the development machine (it has no Docker engine). What can be
# checked without one is: the build steps live in scripts/image-steps.sh, and
# test/unit/image-steps.test.ts checks that every Debian package they name is
# installable on Debian 12 (bookworm, the base of node:20-bookworm-slim) and
# runs the steps that put `keng` on PATH and verify the tools against a built
# checkout. Build the image once in CI or on a host with Docker before relying on it.
#
# Two stages: the build stage has compilers for the native modules
# (better-sqlite3, serialport bindings) in case no prebuilt binary fits;
# the runtime stage has Node.js, the compiled code, production dependencies,
# ffmpeg/ffprobe (audio checks, MP3 encoding) and espeak-ng with its data
# (the Vietnamese voice), and runs as the unprivileged "node" user (uid 1000).

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY scripts/image-steps.sh /usr/local/lib/keng/image-steps.sh
RUN bash /usr/local/lib/keng/image-steps.sh build-deps

# Sources named one by one: the repository has no .dockerignore, and a
# local node_modules, dist or data/ (device secrets!) must not leak into the
# image. Only src/ is needed to build the server (bench/ is not shipped).
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
COPY bin ./bin
RUN bash /usr/local/lib/keng/image-steps.sh app \
 && mkdir -p src/web

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    KENG_DATA_DIR=/app/data \
    KENG_HTTP_PORT=8080 \
    KENG_MQTT_PORT=1883 \
    KENG_TZ=Asia/Ho_Chi_Minh
WORKDIR /app
COPY scripts/image-steps.sh /usr/local/lib/keng/image-steps.sh
RUN bash /usr/local/lib/keng/image-steps.sh runtime-deps
COPY --from=build --chown=node:node /app/package.json /app/package-lock.json ./
COPY --from=build --chown=node:node /app/node_modules ./node_modules
COPY --from=build --chown=node:node /app/dist ./dist
COPY --from=build --chown=node:node /app/bin ./bin
# Non-TypeScript assets that the server may read at run time (web UI files
# kept next to their sources); an empty directory when there are none.
COPY --from=build --chown=node:node /app/src/web ./src/web
# The Modbus register maps Keng ships (read at start by src/modbus/maps.ts).
COPY --chown=node:node firmware-protocols/modbus ./firmware-protocols/modbus
# `keng` on PATH, then the build fails here unless the CLI runs and ffmpeg,
# ffprobe and espeak-ng's Vietnamese voice work (Keng itself would only log
# them missing at start and report them degraded in /readyz).
RUN bash /usr/local/lib/keng/image-steps.sh keng-bin verify \
 && mkdir -p /app/data /app/backups && chown node:node /app/data /app/backups
USER node
# /app/backups: where `keng backup` writes inside the container (outside the data directory).
VOLUME ["/app/data", "/app/backups"]
EXPOSE 1883 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.KENG_HTTP_PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"

# Run node directly (not "npm start"): signals reach Keng, which stops
# cleanly on SIGTERM (flushes buffers within 30 s).
CMD ["node", "dist/src/main.js"]
