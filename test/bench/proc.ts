// /proc readings the benches share.
import { readdirSync, readFileSync } from 'node:fs';

const USER_HZ = 100; // clock ticks per second of /proc/*/stat on Linux

/** The fields of a /proc/…/stat line after the command name (in parentheses, may hold spaces): index 0 is the state. */
function statFields(stat: string): string[] {
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** A number field of a /proc/…/status file (`Name:   123`, or `Name:   123 kB`); 0 when absent. */
function statusNumber(status: string, name: string): number {
  return Number(new RegExp(`^${name}:\\s*(\\d+)`, 'm').exec(status)?.[1] ?? 0);
}

/** CPU seconds (user + system) a process, or one thread of it, has used so far; 0 once it is gone. */
export function cpuSeconds(pid: number, tid?: number): number {
  try {
    const stat = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8');
    const f = statFields(stat);
    return (Number(f[11]) + Number(f[12])) / USER_HZ;
  } catch {
    return 0;
  }
}

/**
 * What a thread has done so far besides using CPU: page faults, minor or major (the page had
 * to be read back in: on a VM whose kernel pages cold file pages out, code run rarely), and
 * context switches, voluntary (it waited) or not (it was preempted).
 */
export interface ThreadCounters {
  minorFaults: number;
  majorFaults: number;
  voluntarySwitches: number;
  involuntarySwitches: number;
}

export const noThreadCounters = (): ThreadCounters => ({ minorFaults: 0, majorFaults: 0, voluntarySwitches: 0, involuntarySwitches: 0 });

/** Adds `after − before` to `into`. */
export function addThreadCounters(into: ThreadCounters, after: ThreadCounters, before: ThreadCounters = noThreadCounters()): void {
  into.minorFaults += after.minorFaults - before.minorFaults;
  into.majorFaults += after.majorFaults - before.majorFaults;
  into.voluntarySwitches += after.voluntarySwitches - before.voluntarySwitches;
  into.involuntarySwitches += after.involuntarySwitches - before.involuntarySwitches;
}

/** `c` divided by `n` (e.g. per request). */
export function threadCountersPer(c: ThreadCounters, n: number): ThreadCounters {
  return { minorFaults: c.minorFaults / n, majorFaults: c.majorFaults / n, voluntarySwitches: c.voluntarySwitches / n, involuntarySwitches: c.involuntarySwitches / n };
}

/** A thread's ThreadCounters so far; zeros once it is gone. */
export function threadCounters(pid: number, tid: number): ThreadCounters {
  try {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
    const f = statFields(stat);
    return {
      minorFaults: Number(f[7]),
      majorFaults: Number(f[9]),
      voluntarySwitches: statusNumber(status, 'voluntary_ctxt_switches'),
      involuntarySwitches: statusNumber(status, 'nonvoluntary_ctxt_switches'),
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

/**
 * Kernel threads of DAMON (`kdamond.N`), the kernel's memory-access monitor. Some VMs run it
 * with a `pageout` scheme, and it then holds a CPU for milliseconds at a time: on the
 * development VM the largest source of the pipeline bench's p99 (docs/benchmarks.md).
 */
export function memoryMonitorThreads(): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').startsWith('kdamond')) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** Seconds a thread has spent running so far, to the nanosecond (/proc/<pid>/schedstat); 0 once it is gone. */
export function runSeconds(pid: number): number {
  try {
    return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]) / 1e9;
  } catch {
    return 0;
  }
}

/**
 * A process's resident memory, MiB: all of it, the anonymous part, and glibc's main malloc
 * arena (the `[heap]` mapping: Buffers and native allocations of the main thread). glibc
 * gives the arena back only from its top, so what a backlog once filled stays resident
 * (docs/benchmarks.md). Zeros once the process is gone.
 */
export interface ProcessMemory {
  rssMiB: number;
  anonMiB: number;
  mallocArenaMiB: number;
}

export function processMemory(pid: number): ProcessMemory {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const smaps = readFileSync(`/proc/${pid}/smaps`, 'utf8');
    const heap = /\[heap\]\n(?:.*\n)*?Rss:\s*(\d+) kB/.exec(smaps);
    return { rssMiB: statusNumber(status, 'VmRSS') / 1024, anonMiB: statusNumber(status, 'RssAnon') / 1024, mallocArenaMiB: Number(heap?.[1] ?? 0) / 1024 };
  } catch {
    return { rssMiB: 0, anonMiB: 0, mallocArenaMiB: 0 };
  }
}
