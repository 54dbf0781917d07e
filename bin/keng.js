#!/usr/bin/env node
// `keng` command: a thin shim over the compiled CLI (npm run build → dist/).
let cli;
try {
  cli = await import('../dist/src/cli/index.js');
} catch (err) {
  if (err && err.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('dist/src/cli/index.js')) {
    process.stderr.write('keng: KENG_ERR_NOT_READY: the CLI is not built yet; run `npm run build` first\n');
    process.exit(1);
  }
  throw err;
}
await cli.runCli(process.argv);
