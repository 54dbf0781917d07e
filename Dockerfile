# Keng controller image.
#
#   docker build -t keng:local .
#   docker run -d -p 1883:1883 -p 8080:8080 -v keng-data:/app/data keng:local
#
# Written with care but NOT built on the development machine (it has no
# Docker engine); build it once in CI or on a host with Docker before relying
# on it.
#
# Two stages: the build stage has compilers for the native modules
# (better-sqlite3, serialport bindings) in case no prebuilt binary fits;
# the runtime stage has only Node.js, the compiled code and production
# dependencies, and runs as the unprivileged "node" user (uid 1000).

FROM node:20-bookworm-slim AS build
WORKDIR /app
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# Dependencies first (cached while package*.json do not change).
COPY package.json package-lock.json ./
RUN npm ci

# Sources named one by one: the repository has no .dockerignore, and a
# local node_modules, dist or data/ (device secrets!) must not leak into the
# image. Only src/ is needed to build the server (bench/ is not shipped).
COPY tsconfig.json ./
COPY src ./src
RUN npm run build \
 && npm prune --omit=dev \
 && mkdir -p src/web

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    KENG_DATA_DIR=/app/data \
    KENG_HTTP_PORT=8080 \
    KENG_MQTT_PORT=1883 \
    KENG_TZ=Asia/Ho_Chi_Minh
WORKDIR /app
COPY --from=build --chown=node:node /app/package.json /app/package-lock.json ./
COPY --from=build --chown=node:node /app/node_modules ./node_modules
COPY --from=build --chown=node:node /app/dist ./dist
# Non-TypeScript assets that the server may read at run time (web UI files
# kept next to their sources); an empty directory when there are none.
COPY --from=build --chown=node:node /app/src/web ./src/web
RUN mkdir -p /app/data && chown node:node /app/data
USER node
VOLUME ["/app/data"]
EXPOSE 1883 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.KENG_HTTP_PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"

# Run node directly (not "npm start"): signals reach Keng, which stops
# cleanly on SIGTERM (flushes buffers within 30 s).
CMD ["node", "dist/src/main.js"]
