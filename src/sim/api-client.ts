/** Minimal client for the parts of the Keng REST API the simulator and benchmark use. */
export interface ApiReply<T = unknown> {
  status: number;
  body: T;
}

export class ApiError extends Error {
  constructor(readonly status: number, readonly body: unknown, what: string) {
    super(`${what}: HTTP ${status} ${typeof body === 'string' ? body.slice(0, 200) : JSON.stringify(body)?.slice(0, 300)}`);
  }
}

export class KengApi {
  constructor(readonly baseUrl: string, private readonly token: string) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
  }

  async request<T = unknown>(method: string, route: string, body?: unknown): Promise<ApiReply<T>> {
    const res = await fetch(this.baseUrl + route, {
      method,
      headers: {
        authorization: `Bearer ${this.token}`,
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    let parsed: unknown = text;
    try { parsed = text ? JSON.parse(text) : undefined; } catch { /* not JSON */ }
    return { status: res.status, body: parsed as T };
  }

  async listAreaCodes(): Promise<string[]> {
    const r = await this.request('GET', '/api/v1/areas');
    if (r.status !== 200) throw new ApiError(r.status, r.body, 'GET /api/v1/areas');
    return listOf(r.body, 'areas').map((a) => (a as { code?: unknown }).code).filter((c): c is string => typeof c === 'string');
  }

  /** Creates an area; an existing one (409) is fine. */
  async ensureArea(area: { code: string; name: string; level: 'province' | 'commune' | 'village'; parent?: string }): Promise<'created' | 'exists'> {
    const r = await this.request('POST', '/api/v1/areas', area);
    if (r.status === 201 || r.status === 200) return 'created';
    if (r.status === 409) return 'exists';
    throw new ApiError(r.status, r.body, `POST /api/v1/areas ${area.code}`);
  }

  /** Registers a device; returns null when it already exists (409). */
  async createDevice(d: { id: string; kind: 'sensor' | 'speaker' | 'gateway'; name: string; area: string; model?: string; location?: { lat: number; lon: number } }): Promise<{ secret: string; accessToken: string } | null> {
    const r = await this.request<{ secret?: unknown; accessToken?: unknown }>('POST', '/api/v1/devices', d);
    if (r.status === 409) return null;
    if (r.status !== 201 && r.status !== 200) throw new ApiError(r.status, r.body, `POST /api/v1/devices ${d.id}`);
    const { secret, accessToken } = r.body ?? {};
    if (typeof secret !== 'string' || typeof accessToken !== 'string') throw new ApiError(r.status, r.body, `POST /api/v1/devices ${d.id}: no secret/accessToken in reply`);
    return { secret, accessToken };
  }

  /** The public keys speakers verify signed commands with (device protocol §11.6). */
  async commandKeys(): Promise<Array<{ kid: string; alg: string; publicKey: string }>> {
    const r = await this.request('GET', '/api/v1/command-keys');
    if (r.status !== 200 || !Array.isArray(r.body)) throw new ApiError(r.status, r.body, 'GET /api/v1/command-keys');
    return (r.body as Array<Record<string, unknown>>).filter((k) => typeof k.kid === 'string' && typeof k.alg === 'string' && typeof k.publicKey === 'string')
      .map((k) => ({ kid: k.kid as string, alg: k.alg as string, publicKey: k.publicKey as string }));
  }

  async deleteDevice(id: string): Promise<void> {
    const r = await this.request('DELETE', `/api/v1/devices/${encodeURIComponent(id)}`);
    if (r.status >= 300 && r.status !== 404) throw new ApiError(r.status, r.body, `DELETE /api/v1/devices/${id}`);
  }

  async telemetry(id: string, q: { from: number; to: number; fields: string[] }): Promise<Array<{ ts: number; values: Record<string, unknown> }>> {
    const params = new URLSearchParams({ from: String(q.from), to: String(q.to), fields: q.fields.join(',') });
    const route = `/api/v1/devices/${encodeURIComponent(id)}/telemetry?${params}`;
    const r = await this.request<{ points?: unknown }>('GET', route);
    if (r.status !== 200) throw new ApiError(r.status, r.body, `GET ${route}`);
    const points = Array.isArray(r.body?.points) ? r.body.points : [];
    return points.map((p: { ts?: unknown; values?: unknown }) => ({
      ts: typeof p.ts === 'number' ? p.ts : Date.parse(String(p.ts)),
      values: (p.values && typeof p.values === 'object' ? p.values : {}) as Record<string, unknown>,
    }));
  }
}

/** A list reply may be a bare array or wrapped ({"areas": [...]}, {"items": [...]}). */
function listOf(body: unknown, key: string): unknown[] {
  if (Array.isArray(body)) return body;
  if (body && typeof body === 'object') {
    const o = body as Record<string, unknown>;
    for (const k of [key, 'items', 'data']) if (Array.isArray(o[k])) return o[k] as unknown[];
  }
  return [];
}
