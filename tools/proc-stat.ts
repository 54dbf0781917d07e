/**
 * Linux `/proc/<pid>/stat`: the fields after the command name. The name (field 2) may hold spaces and
 * parentheses, so the text is split after its last ')'; index 0 is then the state (field 3), 1 the parent
 * pid, 11 and 12 utime and stime (proc(5)).
 */
import { readFileSync } from 'node:fs';

export function statFields(stat: string): string[] {
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** The fields of a process's or thread's stat file (`/proc/<pid>/stat` for a number); null when it is gone. */
export function readStatFields(pidOrFile: number | string): string[] | null {
  try {
    return statFields(readFileSync(typeof pidOrFile === 'number' ? `/proc/${pidOrFile}/stat` : pidOrFile, 'utf8'));
  } catch {
    return null;
  }
}
