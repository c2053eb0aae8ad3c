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

/** What a thread has done so far besides using CPU: minor page faults, and context switches, voluntary (it waited) or not (it was preempted). */
export interface ThreadCounters {
  minorFaults: number;
  voluntarySwitches: number;
  involuntarySwitches: number;
}

export const noThreadCounters = (): ThreadCounters => ({ minorFaults: 0, voluntarySwitches: 0, involuntarySwitches: 0 });

/** Adds `after − before` to `into`. */
export function addThreadCounters(into: ThreadCounters, after: ThreadCounters, before: ThreadCounters = noThreadCounters()): void {
  into.minorFaults += after.minorFaults - before.minorFaults;
  into.voluntarySwitches += after.voluntarySwitches - before.voluntarySwitches;
  into.involuntarySwitches += after.involuntarySwitches - before.involuntarySwitches;
}

/** A thread's ThreadCounters so far; zeros once it is gone. */
export function threadCounters(pid: number, tid: number): ThreadCounters {
  try {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
    const field = (name: string) => Number(new RegExp(`^${name}:\\s*(\\d+)`, 'm').exec(status)?.[1] ?? 0);
    return {
      minorFaults: Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7]),
      voluntarySwitches: field('voluntary_ctxt_switches'),
      involuntarySwitches: field('nonvoluntary_ctxt_switches'),
    };
  } catch {
    return noThreadCounters();
  }
}

/** The interrupts the benches count, by their /proc/interrupts names. */
const INTERRUPTS = { TLB: 'tlb', RES: 'resched', CAL: 'call', LOC: 'timer' } as const;
export type InterruptKind = (typeof INTERRUPTS)[keyof typeof INTERRUPTS];
/** Per kind, a count per CPU (index = CPU number). */
export type InterruptCounts = Record<InterruptKind, number[]>;

/**
 * Interrupt counts per CPU from /proc/interrupts: TLB shootdowns (a thread of a process
 * unmapping or madvising memory makes every CPU running another thread of it flush its
 * TLB), rescheduling IPIs, function-call IPIs (other CPUs asking this one to run something:
 * remote TLB flushes under paravirtualization among them) and local timer interrupts. Empty
 * where the kernel does not list them.
 */
export function interruptCounts(): InterruptCounts {
  const out: InterruptCounts = { tlb: [], resched: [], call: [], timer: [] };
  try {
    for (const line of readFileSync('/proc/interrupts', 'utf8').split('\n')) {
      const m = /^\s*(TLB|RES|CAL|LOC):((?:\s+\d+)+)/.exec(line);
      if (!m) continue;
      out[INTERRUPTS[m[1] as keyof typeof INTERRUPTS]] = m[2]!.trim().split(/\s+/).map(Number);
    }
  } catch {
    /* not Linux: nothing */
  }
  return out;
}

/** `after − before`, per kind and CPU, added into `into`. */
export function addInterrupts(into: InterruptCounts, before: InterruptCounts, after: InterruptCounts): void {
  for (const kind of Object.values(INTERRUPTS)) {
    const a = after[kind];
    const acc = into[kind];
    for (let cpu = 0; cpu < a.length; cpu++) acc[cpu] = (acc[cpu] ?? 0) + a[cpu]! - (before[kind][cpu] ?? 0);
  }
}
