/**
 * The package binaries: <dataDir>/firmware/<id>.bin (0600), kept in memory
 * (up to 64 MiB) while a rollout downloads them.
 *
 * In cluster mode the packages' metadata is shared through PostgreSQL but the
 * files are not: a package uploaded through one node exists as a file on that
 * node only, unless <dataDir>/firmware is shared storage or the operator copies
 * the file to every node (docs/cluster.md). A node without the file answers
 * KENG_ERR_FIRMWARE_FILE_MISSING (HTTP) or `FAILURE` (MQTT), counts it and logs
 * where the file should be, once per package until it appears.
 */
import { mkdirSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Registry } from 'prom-client';
import { Errors } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { counterOn } from '../core/metrics.js';
import { writePrivateFileAtomic } from '../core/private-files.js';

const CACHE_BYTES = 64 * 1024 * 1024;

export class PackageFiles {
  readonly dir: string;
  private readonly cache = new Map<string, Buffer>();
  /** Packages whose missing file was logged (logged again after it was found once). */
  private readonly reported = new Set<string>();
  private readonly missing;

  constructor(dataDir: string, private readonly logger: Logger, metrics?: Registry) {
    this.dir = path.join(dataDir, 'firmware');
    this.missing = counterOn(metrics, 'keng_firmware_file_missing_total',
      'Downloads of a firmware package whose file is not in this node\'s <dataDir>/firmware (cluster mode: copy it or share the directory)');
  }

  start(): void { mkdirSync(this.dir, { recursive: true, mode: 0o700 }); }
  stop(): void { this.cache.clear(); }

  path(id: string): string { return path.join(this.dir, `${id}.bin`); }

  write(id: string, data: Buffer): void { writePrivateFileAtomic(this.path(id), data); }

  async remove(id: string): Promise<void> {
    this.cache.delete(id);
    await rm(this.path(id), { force: true });
  }

  /** The bytes; throws FIRMWARE_FILE_MISSING when this node has no file for the package. */
  async read(id: string): Promise<Buffer> {
    const hit = this.cache.get(id);
    if (hit) return hit;
    let data: Buffer;
    try {
      data = await readFile(this.path(id));
    } catch (err) {
      if ((err as { code?: string }).code !== 'ENOENT') throw err;
      this.missing.inc();
      if (!this.reported.has(id)) {
        this.reported.add(id);
        this.logger.warn({ packageId: id, file: this.path(id) },
          'firmware package file missing on this node: devices cannot download it here (copy the file from the node it was uploaded to, or share <dataDir>/firmware)');
      }
      throw Errors.FIRMWARE_FILE_MISSING(id);
    }
    this.reported.delete(id);
    let total = data.length;
    for (const b of this.cache.values()) total += b.length;
    while (total > CACHE_BYTES && this.cache.size) {
      const [k, b] = this.cache.entries().next().value as [string, Buffer];
      this.cache.delete(k);
      total -= b.length;
    }
    this.cache.set(id, data);
    return data;
  }
}
