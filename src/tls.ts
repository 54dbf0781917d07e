/**
 * TLS material for the HTTP API (HTTPS on http.port) and the MQTT broker
 * (MQTT over TLS on mqtt.tlsPort), so that a commune can encrypt device and
 * staff traffic with nothing but a certificate (firmware-protocols/
 * device-protocol.md §1.0 tells device makers what changes for them).
 *
 * Settings: tls.certFile + tls.keyFile (both or neither), tls.caFile
 * optional. When neither is set, nothing changes. When set, the files are
 * read and checked once at start (the first component that needs them): an
 * unreadable file, a file that is not PEM, an encrypted key or a key that
 * does not belong to the certificate stops the start with one ConfigError
 * line naming the setting.
 *
 * Certificates are read at start only: after renewing, restart Keng.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import type { Config } from './config/index.js';
import { ConfigError } from './config/load.js';

export type TlsSettings = Readonly<Config['tls']>;

export interface TlsMaterial {
  key: Buffer;
  cert: Buffer;
  ca?: Buffer;
  /** Certificate subject and expiry, for the start log. */
  subject: string;
  validTo: string;
}

const NAMES = {
  certFile: 'tls.certFile (KENG_TLS_CERT_FILE)',
  keyFile: 'tls.keyFile (KENG_TLS_KEY_FILE)',
  caFile: 'tls.caFile (KENG_TLS_CA_FILE)',
} as const;

function bad(setting: keyof typeof NAMES, file: string | undefined, why: string): ConfigError {
  return new ConfigError(`Invalid setting ${NAMES[setting]}${file !== undefined ? `=${file}` : ''}: ${why}`);
}

function read(setting: keyof typeof NAMES, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw bad(setting, file, `cannot read file (${err.code ?? err.message})`);
  }
}

function firstLine(e: unknown): string {
  return String((e as Error)?.message ?? e).split('\n')[0]!;
}

/** Read and check the TLS files. Null when TLS is not configured; throws ConfigError naming the setting otherwise. */
export function loadTls(settings: TlsSettings): TlsMaterial | null {
  const { certFile, keyFile, caFile } = settings;
  if (certFile === undefined && keyFile === undefined) {
    if (caFile !== undefined) throw bad('caFile', caFile, 'set, but tls.certFile and tls.keyFile are not (both are needed for TLS)');
    return null;
  }
  if (certFile === undefined) throw bad('certFile', undefined, 'missing: tls.keyFile is set, TLS needs both');
  if (keyFile === undefined) throw bad('keyFile', undefined, 'missing: tls.certFile is set, TLS needs both');

  const cert = read('certFile', certFile);
  const key = read('keyFile', keyFile);
  const ca = caFile !== undefined ? read('caFile', caFile) : undefined;

  let x509: X509Certificate;
  try { x509 = new X509Certificate(cert); } catch (e) { throw bad('certFile', certFile, `not a PEM certificate (${firstLine(e)})`); }
  let privateKey: ReturnType<typeof createPrivateKey>;
  try { privateKey = createPrivateKey(key); } catch (e) {
    throw bad('keyFile', keyFile, `not an unencrypted PEM private key (${firstLine(e)})`);
  }
  if (!x509.checkPrivateKey(privateKey)) throw bad('keyFile', keyFile, `the key does not belong to the certificate in ${NAMES.certFile}`);
  if (ca !== undefined) {
    try { tls.createSecureContext({ ca }); } catch (e) { throw bad('caFile', caFile, `not a PEM CA bundle (${firstLine(e)})`); }
  }
  try {
    tls.createSecureContext({ key, cert, ...(ca ? { ca } : {}) });
  } catch (e) {
    throw bad('keyFile', keyFile, `TLS cannot use this key and certificate (${firstLine(e)})`);
  }
  return { key, cert, ...(ca ? { ca } : {}), subject: x509.subject.replace(/\n/g, ', '), validTo: x509.validTo };
}

/**
 * The TLS material shared by the broker and the API: loaded once, on first
 * use (at start), so both listeners use the same files and a bad setting
 * fails the start of the first of them.
 */
export class TlsSource {
  private material: TlsMaterial | null | undefined;
  constructor(private readonly settings: TlsSettings) {}

  /** TLS is configured (either file set; load() then checks the rest). */
  get configured(): boolean {
    return this.settings.certFile !== undefined || this.settings.keyFile !== undefined || this.settings.caFile !== undefined;
  }

  /** The checked material, or null when TLS is not configured. Throws ConfigError (see loadTls). */
  load(): TlsMaterial | null {
    if (this.material === undefined) this.material = loadTls(this.settings);
    return this.material;
  }
}
