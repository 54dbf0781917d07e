import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { quietDebug } from '../../src/core/quiet-debug.js';

// `debug` as the MQTT parser under aedes requires it (from its own folder).
const fromParser = createRequire(createRequire(import.meta.url).resolve('mqtt-packet'));

describe('quiet debug loggers', () => {
  it('a logger whose namespace is off is an empty function; one that is on is the real logger', () => {
    expect(quietDebug()).toBe(true);
    const create = fromParser('debug') as ((ns: string) => ((...a: unknown[]) => void) & { enabled: boolean; extend: (s: string) => { enabled: boolean } })
      & { enable: (ns: string) => void; disable: () => string; keng_quiet?: boolean };
    expect(create.keng_quiet).toBe(true);
    const off = create('mqtt-packet:parser');
    expect(off.enabled).toBe(false);
    expect(off.length).toBe(0);
    expect(off('parse: %s', 'x')).toBeUndefined();
    expect(off.extend('sub').enabled).toBe(false);
    const before = create.disable();
    try {
      create.enable('keng-test:on');
      const on = create('keng-test:on');
      expect(on.enabled).toBe(true);
      expect(on.toString()).not.toBe(off.toString());
    } finally {
      create.enable(before);
    }
  });

  it('the entry point installs it before anything else loads (aedes would load its parser first)', () => {
    const main = readFileSync(new URL('../../src/main.ts', import.meta.url), 'utf8');
    const firstImport = /^import\s[^;]*;/m.exec(main)?.[0];
    expect(firstImport).toBe("import './core/quiet-debug.js';");
  });
});
