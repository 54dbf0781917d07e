// Placeholder: the device simulator is being written (keng simulate). Replaced by its real implementation.
import type { Command } from 'commander';
export function registerSimulate(program: Command): void {
  program.command('simulate').description('simulate devices (not yet available)').action(() => {
    process.stderr.write('keng simulate: not available in this build\n');
    process.exitCode = 1;
  });
}
