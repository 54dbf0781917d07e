/**
 * Audio for tests that need real files without running ffmpeg to make them:
 * silent PCM WAV written byte by byte, and uploads through the real HTTP API.
 */

/**
 * `seconds` of silence as an 8-bit mono PCM WAV (a valid file ffprobe and
 * ffmpeg accept). A low rate keeps long files small: 2 h at 1000 Hz is 7.2 MB.
 */
export function silentWav(seconds: number, rate = 8000): Buffer {
  const data = Math.round(seconds * rate);
  const b = Buffer.alloc(44 + data, 0x80); // 0x80 is silence in unsigned 8-bit PCM
  b.write('RIFF', 0, 'latin1');
  b.writeUInt32LE(36 + data + (data % 2), 4);
  b.write('WAVE', 8, 'latin1');
  b.write('fmt ', 12, 'latin1');
  b.writeUInt32LE(16, 16); // fmt chunk size
  b.writeUInt16LE(1, 20); // PCM
  b.writeUInt16LE(1, 22); // mono
  b.writeUInt32LE(rate, 24);
  b.writeUInt32LE(rate, 28); // bytes per second
  b.writeUInt16LE(1, 32); // block align
  b.writeUInt16LE(8, 34); // bits per sample
  b.write('data', 36, 'latin1');
  b.writeUInt32LE(data, 40);
  return data % 2 ? Buffer.concat([b, Buffer.alloc(1)]) : b;
}

export interface Upload { status: number; body: any; headers: Headers }

/** POST /api/v1/media (multipart) with `file` and optionally `name` and `areas` (comma-separated). */
export async function uploadAudio(httpUrl: string, token: string, bytes: Buffer, opts: { filename?: string; name?: string; areas?: string } = {}): Promise<Upload> {
  const form = new FormData();
  if (opts.name !== undefined) form.append('name', opts.name);
  if (opts.areas !== undefined) form.append('areas', opts.areas);
  form.append('file', new Blob([new Uint8Array(bytes)], { type: 'application/octet-stream' }), opts.filename ?? 'audio.wav');
  const res = await fetch(`${httpUrl}/api/v1/media`, { method: 'POST', body: form, headers: { authorization: `Bearer ${token}` } });
  const text = await res.text();
  let body: unknown = text;
  try { body = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, body, headers: res.headers };
}
