// The REST API (/api/v1) with the session's bearer token. Errors keep the
// server's code (KENG_ERR_...) so the page can say what happened in words.

export class ApiError extends Error {
  constructor(status, code, message, retryAfterSec, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfterSec = retryAfterSec;
    // The failing fields of a KENG_ERR_VALIDATION ([{field, message}]): a form names each in the page's words.
    this.details = details;
  }
}

export async function api(path, { token, method = 'GET', body, signal } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res;
  try {
    res = await fetch(`/api/v1${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
  } catch (err) {
    if (err?.name === 'AbortError') throw err;
    throw new ApiError(0, 'NETWORK', String(err?.message ?? err));
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON: a proxy's error page */ }
  if (!res.ok) {
    const retry = Number(res.headers.get('retry-after'));
    throw new ApiError(res.status, data?.error?.code ?? `HTTP_${res.status}`, data?.error?.message ?? res.statusText,
      Number.isFinite(retry) && retry > 0 ? retry : undefined, Array.isArray(data?.error?.details) ? data.error.details : undefined);
  }
  return data;
}
