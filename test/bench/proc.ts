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

/**
 * Machine-wide interrupt counts from /proc/interrupts, summed over CPUs: TLB shootdowns (a
 * thread of a process unmapping or madvising memory makes every CPU running another thread
 * of it flush its TLB) and rescheduling IPIs. Zeros where the kernel does not list them.
 */
export function interruptCounts(): { tlb: number; resched: number } {
  const out = { tlb: 0, resched: 0 };
  try {
    for (const line of readFileSync('/proc/interrupts', 'utf8').split('\n')) {
      const m = /^\s*(TLB|RES):((?:\s+\d+)+)/.exec(line);
      if (!m) continue;
      const sum = m[2]!.trim().split(/\s+/).reduce((a, b) => a + Number(b), 0);
      if (m[1] === 'TLB') out.tlb = sum;
      else out.resched = sum;
    }
  } catch {
    /* not Linux: zeros */
  }
  return out;
}
