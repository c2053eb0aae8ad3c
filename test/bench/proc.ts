// /proc readings the benches share.
import { readFileSync } from 'node:fs';

const USER_HZ = 100; // clock ticks per second of /proc/*/stat on Linux

/** CPU seconds (user + system) a process, or one thread of it, has used so far; 0 once it is gone. */
export function cpuSeconds(pid: number, tid?: number): number {
  try {
    const stat = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may hold spaces.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / USER_HZ;
  } catch {
    return 0;
  }
}
