/**
 * Keng's own web app (the farmer's view first): a fastify plugin that serves
 * `GET /` and the browser files under `/app/<version>/`.
 *
 * The browser files are plain ES modules (preact + htm, no bundler) in
 * `src/web/public/`, next to this file, so the Docker image that copies
 * `src/web` ships them without a build step. Preact, htm, uPlot and the
 * socket.io client are read from node_modules and served from the same
 * folder, so the app's relative imports (`./preact.mjs`) resolve without an
 * import map (an inline import map would need 'unsafe-inline' or a hash in
 * the Content-Security-Policy).
 *
 * Everything is read once at registration and kept in memory (~250 KB):
 * the version in the URL is a hash of every file, so assets are cached for a
 * year as immutable and a new build changes every URL at once; the page
 * itself is revalidated on each visit (ETag). Compressed copies (brotli,
 * gzip) are made on first request, because phones on a rural 3G link pay for
 * every byte and Keng has no reverse proxy in front of it by default.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { brotliCompressSync, constants as zlib, gzipSync } from 'node:zlib';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';

export interface WebAppOptions {
  /** The commune's time zone (config.tz): the app shows every time in it, whatever the phone's zone. */
  tz: string;
  /** Where the browser files are; found next to this module by default. */
  publicDir?: string;
  /**
   * Raster map tiles for the speakers' map (config web.mapTileUrl, a {z}/{x}/{y} template); the page
   * gets it in a meta tag and its Content-Security-Policy allows the tiles' origin for images.
   * Unset: the map is drawn from the speakers' positions alone (no internet needed).
   */
  mapTileUrl?: string;
  /** Credit shown under tiles (config web.mapTileAttribution). */
  mapTileAttribution?: string;
}

/** URL folder of the app's files; the version follows it. */
export const WEB_ASSET_PREFIX = '/app';

interface Asset {
  body: Buffer;
  type: string;
  etag: string;
  /** Compressed copies, made on first request. */
  br?: Buffer;
  gzip?: Buffer;
}

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.html': 'text/html; charset=utf-8',
};

const YEAR_SEC = 365 * 24 * 3600;

/** The browser files' folder: next to this module in the sources, or src/web/public from dist/src/web. */
export function findPublicDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const candidates = [path.join(here, 'public'), path.resolve(here, '../../../src/web/public')];
  const found = candidates.find((d) => existsSync(path.join(d, 'index.html')));
  if (!found) throw new Error(`web app files not found (looked in ${candidates.join(', ')})`);
  return found;
}

/** Third-party ES modules the app imports, by the name it imports them under. */
function vendorFiles(): Record<string, string> {
  const require = createRequire(import.meta.url);
  // From the package's entry up to its package.json: not every package exports "./package.json".
  const pkg = (name: string): string => {
    for (let dir = path.dirname(require.resolve(name)); dir !== path.dirname(dir); dir = path.dirname(dir)) {
      const file = path.join(dir, 'package.json');
      if (existsSync(file) && (JSON.parse(readFileSync(file, 'utf8')) as { name?: string }).name === name) return dir;
    }
    throw new Error(`package ${name} not found`);
  };
  return {
    'preact.mjs': path.join(pkg('preact'), 'dist/preact.mjs'),
    'hooks.mjs': path.join(pkg('preact'), 'hooks/dist/hooks.mjs'),
    'htm.mjs': path.join(pkg('htm'), 'dist/htm.mjs'),
    'uPlot.esm.js': path.join(pkg('uplot'), 'dist/uPlot.esm.js'),
    'uPlot.min.css': path.join(pkg('uplot'), 'dist/uPlot.min.css'),
    // socket.io's own copy: socket.io-client is only a dev dependency, and the live feed runs with serveClient off.
    'socket.io.esm.min.js': path.join(pkg('socket.io'), 'client-dist/socket.io.esm.min.js'),
    // The schedules view computes a week's occurrences with the very cron library the scheduler runs.
    'croner.js': path.join(pkg('croner'), 'dist/croner.js'),
  };
}

function vendorText(text: string): string {
  // Bare specifiers become relative ones, so the browser needs no import map; source maps are not shipped.
  return text
    .replace(/from\s*["']preact["']/g, 'from"./preact.mjs"')
    .replace(/^\/\/# sourceMappingURL=.*$/gm, '');
}

const etagOf = (b: Buffer): string => `"${createHash('sha256').update(b).digest('base64url').slice(0, 22)}"`;

/** Reads every file once: the app's own and the vendored ones, and the page with their versioned URLs. */
export function loadWebAssets(opts: WebAppOptions): { version: string; assets: Map<string, Asset>; page: Asset } {
  const dir = opts.publicDir ?? findPublicDir();
  const files = new Map<string, Buffer>();
  for (const [name, file] of Object.entries(vendorFiles())) files.set(name, Buffer.from(vendorText(readFileSync(file, 'utf8'))));
  for (const name of readdirSync(dir).sort()) {
    if (name === 'index.html' || !TYPES[path.extname(name)]) continue;
    files.set(name, readFileSync(path.join(dir, name)));
  }
  const h = createHash('sha256');
  for (const [name, body] of files) h.update(name).update('\0').update(body);
  const version = h.digest('hex').slice(0, 12);
  const assets = new Map<string, Asset>();
  for (const [name, body] of files) assets.set(name, { body, type: TYPES[path.extname(name)]!, etag: etagOf(body) });

  const base = `${WEB_ASSET_PREFIX}/${version}/`;
  const html = readFileSync(path.join(dir, 'index.html'), 'utf8')
    .replaceAll('%BASE%', base)
    .replaceAll('%TZ%', escapeAttr(opts.tz))
    .replace('</head>', `${mapMeta(opts)}</head>`);
  const pageBody = Buffer.from(html);
  return { version, assets, page: { body: pageBody, type: TYPES['.html']!, etag: etagOf(pageBody) } };
}

/** The map settings as meta tags, only when tiles are configured (the page stays as it was otherwise). */
function mapMeta(opts: WebAppOptions): string {
  if (!opts.mapTileUrl) return '';
  const credit = opts.mapTileAttribution ? `<meta name="keng-map-credit" content="${escapeAttr(opts.mapTileAttribution)}">\n` : '';
  return `<meta name="keng-map-tiles" content="${escapeAttr(opts.mapTileUrl)}">\n${credit}`;
}

/** The origin of a tile URL template (`https://tiles.example.vn:8443`), for the page's img-src. */
export function tileOrigin(template: string): string {
  // The placeholders are not valid in a host, so only the part before the path is parsed.
  return new URL(/^[a-z]+:\/\/[^/]+/i.exec(template)?.[0] ?? template).origin;
}

/**
 * The page's Content-Security-Policy (set by helmet for every reply) with the
 * tile origin added to img-src: the map draws tiles as <img> elements.
 */
export function withTileImages(csp: string, origin: string): string {
  const parts = csp.split(';').map((p) => p.trim()).filter(Boolean);
  const i = parts.findIndex((p) => /^img-src\s/i.test(p) || p.toLowerCase() === 'img-src');
  if (i >= 0) parts[i] = `${parts[i]} ${origin}`;
  else parts.push(`img-src 'self' data: ${origin}`);
  return parts.join(';');
}

function escapeAttr(s: string): string {
  return s.replace(/[&"<>]/g, (c) => `&#${c.charCodeAt(0)};`);
}

function send(req: FastifyRequest, reply: FastifyReply, a: Asset, cacheControl: string): FastifyReply {
  reply.header('cache-control', cacheControl).header('etag', a.etag).header('vary', 'accept-encoding').type(a.type);
  if (req.headers['if-none-match'] === a.etag) return reply.status(304).send();
  const accept = String(req.headers['accept-encoding'] ?? '');
  if (a.body.length > 1024 && /\bbr\b/.test(accept)) {
    a.br ??= brotliCompressSync(a.body, { params: { [zlib.BROTLI_PARAM_QUALITY]: 9, [zlib.BROTLI_PARAM_SIZE_HINT]: a.body.length } });
    return reply.header('content-encoding', 'br').send(a.br);
  }
  if (a.body.length > 1024 && /\bgzip\b/.test(accept)) {
    a.gzip ??= gzipSync(a.body, { level: 9 });
    return reply.header('content-encoding', 'gzip').send(a.gzip);
  }
  return reply.send(a.body);
}

/** The plugin: `GET /` (the page) and `GET /app/<version>/<file>`. */
export function webApp(opts: WebAppOptions): FastifyPluginAsync {
  return async (app) => {
    const { version, assets, page } = loadWebAssets(opts);
    const tiles = opts.mapTileUrl ? tileOrigin(opts.mapTileUrl) : null;
    app.get('/', { schema: { hide: true } }, async (req, reply) => {
      const csp = reply.getHeader('content-security-policy');
      if (tiles && typeof csp === 'string') reply.header('content-security-policy', withTileImages(csp, tiles));
      return send(req, reply, page, 'no-cache');
    });
    app.get<{ Params: { version: string; name: string } }>(`${WEB_ASSET_PREFIX}/:version/:name`, { schema: { hide: true } }, async (req, reply) => {
      const a = assets.get(req.params.name);
      if (!a) return reply.callNotFound();
      // A tab opened before an upgrade asks for the old version: it gets today's file, but not for keeps.
      return send(req, reply, a, req.params.version === version ? `public, max-age=${YEAR_SEC}, immutable` : 'no-cache');
    });
  };
}
