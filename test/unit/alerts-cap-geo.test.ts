/**
 * CAP area geometry (src/alerts/cap/geo.ts): point in polygon and in circle,
 * boundary points inside, and the CAP text forms (CAP-v1.2-os §3.2.4).
 */
import { describe, expect, it } from 'vitest';
import {
  distanceKm, EARTH_RADIUS_KM, formatCircle, formatDecimal, formatPolygon, parseCircle, parsePolygon, pointInCircle, pointInPolygon,
  type LatLon,
} from '../../src/alerts/cap/geo.js';

const pt = (lat: number, lon: number): LatLon => ({ lat, lon });
const ring = (text: string): LatLon[] => {
  const r = parsePolygon(text);
  if (!r.ok) throw new Error(r.message);
  return r.value;
};

describe('pointInPolygon', () => {
  // A square 1°x1° with its closing point, as CAP writes it.
  const square = ring('10,100 10,101 11,101 11,100 10,100');

  it('tells inside from outside', () => {
    expect(pointInPolygon(pt(10.5, 100.5), square)).toBe(true);
    expect(pointInPolygon(pt(9.99, 100.5), square)).toBe(false);
    expect(pointInPolygon(pt(10.5, 101.01), square)).toBe(false);
  });

  it('counts points on an edge or a vertex as inside', () => {
    expect(pointInPolygon(pt(10, 100.5), square)).toBe(true);   // bottom edge
    expect(pointInPolygon(pt(10.5, 101), square)).toBe(true);   // right edge
    expect(pointInPolygon(pt(11, 101), square)).toBe(true);     // vertex
    expect(pointInPolygon(pt(10, 100), square)).toBe(true);     // the closing vertex
    expect(pointInPolygon(pt(10.5, 101 + 1e-7), square)).toBe(false); // ~1 cm outside
  });

  it('handles a concave polygon: the notch of a "U" is outside', () => {
    // U shape opening to the north: arms at lon 0-1 and 2-3, base lat 0-1.
    const u = ring('0,0 0,3 3,3 3,2 1,2 1,1 3,1 3,0 0,0');
    expect(pointInPolygon(pt(0.5, 1.5), u)).toBe(true);  // base
    expect(pointInPolygon(pt(2, 0.5), u)).toBe(true);    // left arm
    expect(pointInPolygon(pt(2, 2.5), u)).toBe(true);    // right arm
    expect(pointInPolygon(pt(2, 1.5), u)).toBe(false);   // in the notch
    expect(pointInPolygon(pt(1, 1.5), u)).toBe(true);    // on the notch's floor (an edge)
    // Rays at exactly a vertex's latitude: the vertex is counted for one of its two edges only.
    expect(pointInPolygon(pt(1, 0.5), u)).toBe(true);
    expect(pointInPolygon(pt(3, -1), u)).toBe(false);
    expect(pointInPolygon(pt(1, -0.5), u)).toBe(false);
  });

  it('works near lon 105 (Vietnam): a flood zone along the Red River by Hà Nội', () => {
    const zone = ring('21.05,105.80 21.08,105.86 21.02,105.90 20.98,105.87 21.00,105.82 21.05,105.80');
    expect(pointInPolygon(pt(21.03, 105.85), zone)).toBe(true);   // Long Biên bridge area
    expect(pointInPolygon(pt(21.0285, 105.8048), zone)).toBe(false); // west of the zone
    expect(pointInPolygon(pt(20.99, 105.815), zone)).toBe(false);    // south-west, outside the slanted edge
  });

  it('accepts an open ring as well and refuses nothing it cannot judge', () => {
    expect(pointInPolygon(pt(10.5, 100.5), square.slice(0, 4))).toBe(true);
    expect(pointInPolygon(pt(10.5, 100.5), [])).toBe(false);
  });
});

describe('pointInCircle and distanceKm', () => {
  it('measures one degree of latitude as 2πR/360', () => {
    expect(distanceKm(pt(21, 105.8), pt(22, 105.8))).toBeCloseTo((2 * Math.PI * EARTH_RADIUS_KM) / 360, 6);
  });

  it('measures Hà Nội to Hồ Chí Minh City as about 1,140 km', () => {
    const d = distanceKm(pt(21.0285, 105.8542), pt(10.8231, 106.6297));
    expect(d).toBeGreaterThan(1130);
    expect(d).toBeLessThan(1145);
  });

  it('counts the edge as inside, and a point 1 m beyond it as outside', () => {
    const center = pt(21.0285, 105.8542);
    const edge = pt(21.0285, 105.9);
    const r = distanceKm(center, edge);
    expect(pointInCircle(edge, { center, radiusKm: r })).toBe(true);
    expect(pointInCircle(edge, { center, radiusKm: r - 0.001 })).toBe(false);
    expect(pointInCircle(pt(21.03, 105.855), { center, radiusKm: 1 })).toBe(true);
  });

  it('a radius 0 (the earthquake example of CAP 1.2) holds its centre only', () => {
    const c = parseCircle('32.9525,-115.5527 0');
    expect(c.ok && pointInCircle(pt(32.9525, -115.5527), c.value)).toBe(true);
    expect(c.ok && pointInCircle(pt(32.9526, -115.5527), c.value)).toBe(false);
  });
});

describe('CAP text forms', () => {
  it('parses and writes polygons and circles', () => {
    const text = '38.47,-120.14 38.34,-119.95 38.52,-119.74 38.62,-119.89 38.47,-120.14';
    expect(formatPolygon(ring(text))).toBe(text);
    expect(formatPolygon(ring(`\n  ${text.replace(/ /g, '\n\t')}  `))).toBe(text);
    const c = parseCircle('21.0285,105.8542 5.5');
    expect(c).toEqual({ ok: true, value: { center: pt(21.0285, 105.8542), radiusKm: 5.5 } });
    expect(c.ok && formatCircle(c.value)).toBe('21.0285,105.8542 5.5');
  });

  it.each([
    ['10,100 10,101 10,100', 'at least 4'],
    ['10,100 10,101 11,101 11,100', 'closed ring'],
    ['10,100 10,101 11 11,100 10,100', 'coordinate pair'],
    ['10, 100 10,101 11,101 10,100', 'coordinate pair'],
    ['91,100 10,101 11,101 91,100', 'latitude'],
    ['10,181 10,101 11,101 10,181', 'longitude'],
    ['1e1,100 10,101 11,101 1e1,100', 'coordinate pair'],
    ['', 'at least 4'],
  ])('refuses polygon %j (%s)', (text, why) => {
    const r = parsePolygon(text);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.message).toContain(why);
  });

  it.each([
    ['21,105', 'lat,lon radiusKm'],
    ['21,105 -1', 'radius'],
    ['21,105 5 km', 'lat,lon radiusKm'],
    ['21 105 5', 'lat,lon radiusKm'],
    ['21;105 5', 'coordinate pair'],
    ['21,105 50000', 'radius'],
  ])('refuses circle %j', (text, why) => {
    const r = parseCircle(text);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.message).toContain(why);
  });

  it('writes decimals without exponent or trailing zeros', () => {
    expect(formatDecimal(1e-7)).toBe('0.0000001');
    expect(formatDecimal(-0)).toBe('0');
    expect(formatDecimal(105)).toBe('105');
    expect(formatDecimal(105.85)).toBe('105.85');
    expect(formatDecimal(-1e-9)).toBe('0');
  });
});
