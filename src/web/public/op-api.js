// The API calls of the staff screens that api.js does not cover: errors keep
// the server's `details` (which fields are wrong, which schedule clashes) so
// the form can say it in words, uploads go as multipart, and files (the CSV
// log) come back as a blob: a download link cannot send the bearer token.
import { ApiError } from './api.js';

async function errorOf(res) {
  const text = await res.text().catch(() => '');
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON: a proxy's error page */ }
  const retry = Number(res.headers.get('retry-after'));
  const err = new ApiError(res.status, data?.error?.code ?? `HTTP_${res.status}`, data?.error?.message ?? res.statusText,
    Number.isFinite(retry) && retry > 0 ? retry : undefined);
  err.details = data?.error?.details;
  return err;
}

/**
 * `/api/v1<path>` with the session's token. `body` is sent as JSON, `form`
 * (FormData) as multipart; `as: 'blob'` returns `{blob, filename}`.
 */
export async function request(session, path, { method = 'GET', body, form, as = 'json', signal } = {}) {
  const headers = { authorization: `Bearer ${session.token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res;
  try {
    res = await fetch(`/api/v1${path}`, { method, headers, body: form ?? (body === undefined ? undefined : JSON.stringify(body)), signal });
  } catch (err) {
    if (err?.name === 'AbortError') throw err;
    throw new ApiError(0, 'NETWORK', String(err?.message ?? err));
  }
  if (!res.ok) throw await errorOf(res);
  if (as === 'blob') {
    const cd = res.headers.get('content-disposition') ?? '';
    const filename = /filename="([^"]+)"/.exec(cd)?.[1] ?? 'keng.csv';
    return { blob: await res.blob(), filename };
  }
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

/** Hands a blob to the browser as a file download. */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  // The download has started by the time this runs; the object URL is no longer needed.
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** A page-relative link from the signed media URL the API gives: the page may be reached by another host name than the server sees. */
export function sameOriginUrl(url) {
  try {
    const u = new URL(url, location.href);
    return `${u.pathname}${u.search}`;
  } catch {
    return url;
  }
}
