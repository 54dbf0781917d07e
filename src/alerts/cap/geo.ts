/**
 * Geometry of CAP 1.2 areas (CAP-v1.2-os §3.2.4 "area"): which point lies in
 * an alert's polygon or circle, and the text forms of both.
 *
 * Coordinates are WGS 84 (§3.3.1 "WGS-84 Note") latitude/longitude in decimal
 * degrees, written as a coordinate pair "lat,lon" without spaces (§1.5).
 *
 * Polygon edges are straight lines in the lat/lon plane, not great circles:
 * CAP does not say how to join the vertices, and over a commune or a district
 * (a few tens of km) the two differ by metres. Rings that cross the
 * antimeridian (lon ±180) are not supported; Vietnam lies at lon 102-110.
 *
 * Points exactly on the boundary count as inside, for polygons and circles
 * alike: a loudspeaker on the line of a warned area must play the warning.
 * "Exactly" allows for floating-point noise: within EDGE_EPSILON_DEG (about
 * 0.1 mm) of a polygon edge, within CIRCLE_EPSILON_KM (1 mm) of a circle.
 */

export interface LatLon {
  lat: number;
  lon: number;
}

/** A closed ring (first point = last point), at least 4 points (§3.2.4 polygon). */
export type Polygon = LatLon[];

export interface Circle {
  center: LatLon;
  /** Radius in kilometres (§3.2.4 circle); 0 is a point. */
  radiusKm: number;
}

/** Mean Earth radius (IUGG), in km: the sphere the haversine formula uses. */
export const EARTH_RADIUS_KM = 6371.0088;
/** Distance to a polygon edge under which a point counts as on it (degrees; ~0.1 mm). */
export const EDGE_EPSILON_DEG = 1e-9;
/** Distance beyond a circle's radius under which a point still counts as on it (km; 1 mm). */
export const CIRCLE_EPSILON_KM = 1e-6;
/** Half the Earth's circumference: a circle this wide covers every point, a larger radius is a mistake. */
export const MAX_RADIUS_KM = 20_038;
/** §3.2.4 polygon: "A minimum of 4 coordinate pairs MUST be present". */
export const MIN_POLYGON_POINTS = 4;

// ---------------------------------------------------------------- containment

/**
 * True when `p` lies inside `ring` or on its boundary (even-odd rule, ray
 * casting along the longitude axis). The ring may be closed (as CAP requires)
 * or open; the closing point is not counted twice.
 */
export function pointInPolygon(p: LatLon, ring: readonly LatLon[]): boolean {
  const n = ring.length > 1 && samePoint(ring[0]!, ring[ring.length - 1]!) ? ring.length - 1 : ring.length;
  if (n === 0) return false;
  for (let i = 0, j = n - 1; i < n; j = i++) {
    if (onSegment(p, ring[j]!, ring[i]!)) return true;
  }
  let inside = false;
  for (let i = 0, j = n - 1; i < n; j = i++) {
    const a = ring[i]!, b = ring[j]!;
    // Half-open test on latitude: a vertex exactly at p.lat is counted for one of its two edges only.
    if ((a.lat > p.lat) !== (b.lat > p.lat)) {
      const lonAtLat = a.lon + ((p.lat - a.lat) * (b.lon - a.lon)) / (b.lat - a.lat);
      if (p.lon < lonAtLat) inside = !inside;
    }
  }
  return inside;
}

/** True when `p` is within the circle, its edge included (haversine distance ≤ radius). */
export function pointInCircle(p: LatLon, c: Circle): boolean {
  return distanceKm(p, c.center) <= c.radiusKm + CIRCLE_EPSILON_KM;
}

/** Great-circle distance in km (haversine on a sphere of EARTH_RADIUS_KM; error under 0.5 %). */
export function distanceKm(a: LatLon, b: LatLon): number {
  const rad = Math.PI / 180;
  const dLat = (b.lat - a.lat) * rad;
  const dLon = (b.lon - a.lon) * rad;
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * EARTH_RADIUS_KM * Math.asin(Math.min(1, Math.sqrt(h)));
}

function samePoint(a: LatLon, b: LatLon): boolean {
  return a.lat === b.lat && a.lon === b.lon;
}

/** `p` within EDGE_EPSILON_DEG of segment a-b (distance to the line, and inside the segment's box). */
function onSegment(p: LatLon, a: LatLon, b: LatLon): boolean {
  const dx = b.lon - a.lon, dy = b.lat - a.lat;
  const cross = dx * (p.lat - a.lat) - dy * (p.lon - a.lon);
  if (Math.abs(cross) > EDGE_EPSILON_DEG * Math.hypot(dx, dy)) return false;
  return p.lon >= Math.min(a.lon, b.lon) - EDGE_EPSILON_DEG && p.lon <= Math.max(a.lon, b.lon) + EDGE_EPSILON_DEG
    && p.lat >= Math.min(a.lat, b.lat) - EDGE_EPSILON_DEG && p.lat <= Math.max(a.lat, b.lat) + EDGE_EPSILON_DEG;
}

// ---------------------------------------------------------------- text forms

export type Parsed<T> = { ok: true; value: T } | { ok: false; message: string };

/** A plain decimal ("105.8", "-0.5", ".5"): no exponent, no "NaN", no hex. */
const DECIMAL_RE = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$/;

function parsePair(s: string): LatLon | string {
  const parts = s.split(',');
  if (parts.length !== 2 || !DECIMAL_RE.test(parts[0]!) || !DECIMAL_RE.test(parts[1]!)) {
    return `"${s.slice(0, 40)}" is not a coordinate pair "lat,lon"`;
  }
  const lat = Number(parts[0]), lon = Number(parts[1]);
  if (lat < -90 || lat > 90) return `latitude ${parts[0]} is outside -90..90`;
  if (lon < -180 || lon > 180) return `longitude ${parts[1]} is outside -180..180`;
  return { lat, lon };
}

/**
 * A CAP polygon: whitespace-delimited coordinate pairs, at least 4, the first
 * and the last the same (§3.2.4 polygon: "A minimum of 4 coordinate pairs
 * MUST be present and the first and last pairs of coordinates MUST be the same").
 */
export function parsePolygon(text: string): Parsed<Polygon> {
  const tokens = text.trim().split(/\s+/).filter(Boolean);
  const ring: LatLon[] = [];
  for (const t of tokens) {
    const p = parsePair(t);
    if (typeof p === 'string') return { ok: false, message: p };
    ring.push(p);
  }
  if (ring.length < MIN_POLYGON_POINTS) {
    return { ok: false, message: `needs at least ${MIN_POLYGON_POINTS} coordinate pairs "lat,lon" (a closed ring), got ${ring.length}` };
  }
  if (!samePoint(ring[0]!, ring[ring.length - 1]!)) return { ok: false, message: 'the first and last coordinate pairs must be the same (a closed ring)' };
  return { ok: true, value: ring };
}

/** A CAP circle: a coordinate pair, a space, a radius in km (§3.2.4 circle). */
export function parseCircle(text: string): Parsed<Circle> {
  const tokens = text.trim().split(/\s+/).filter(Boolean);
  if (tokens.length !== 2) return { ok: false, message: 'must be "lat,lon radiusKm"' };
  const center = parsePair(tokens[0]!);
  if (typeof center === 'string') return { ok: false, message: center };
  const r = tokens[1]!;
  if (!DECIMAL_RE.test(r) || Number(r) < 0 || Number(r) > MAX_RADIUS_KM) {
    return { ok: false, message: `radius "${r.slice(0, 20)}" is not a number of km in 0..${MAX_RADIUS_KM}` };
  }
  return { ok: true, value: { center, radiusKm: Number(r) } };
}

/** A decimal without exponent, at most 7 places (1 cm at the equator): what CAP readers expect. */
export function formatDecimal(n: number): string {
  const s = n.toFixed(7).replace(/\.?0+$/, '');
  return s === '-0' ? '0' : s;
}

const formatPair = (p: LatLon): string => `${formatDecimal(p.lat)},${formatDecimal(p.lon)}`;

export function formatPolygon(ring: readonly LatLon[]): string {
  return ring.map(formatPair).join(' ');
}

export function formatCircle(c: Circle): string {
  return `${formatPair(c.center)} ${formatDecimal(c.radiusKm)}`;
}
