/**
 * The checksums ThingsBoard offers for an OTA package and firmware verifies
 * (the Arduino SDK: MD5, SHA256, SHA384, SHA512; the Python SDK also CRC32),
 * as lower-case hex: CRC32 as 8 digits, the way ThingsBoard shows it.
 */
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';

export const CHECKSUM_ALGORITHMS = ['SHA256', 'SHA384', 'SHA512', 'MD5', 'CRC32'] as const;
export type ChecksumAlgorithm = typeof CHECKSUM_ALGORITHMS[number];

export function checksum(data: Buffer, alg: ChecksumAlgorithm): string {
  if (alg === 'CRC32') return (crc32(data) >>> 0).toString(16).padStart(8, '0');
  return createHash(alg.toLowerCase()).update(data).digest('hex');
}
