// Scheduling priority of the forwarder's threads (Linux). With a recorder, relay threads
// relay and every other thread of the process records: completing captures, building and
// compressing records, Kafka, the spool, and V8's helper threads doing their garbage
// collection. Measured on 2 cores (docs/benchmarks.md), that work competing with the relay
// at equal priority added tens of percent to end-to-end latency; at nice 19 still ~+34 %,
// because a lower-weighted thread is not preempted at once when a relay thread wakes up.
// SCHED_IDLE threads are: the kernel runs them only on CPU nobody else wants, so recording
// yields the CPU to relaying at once. The price is that under sustained CPU saturation
// recording falls behind: records wait in the disk spool, and past the recording backlog's
// bound new requests are refused (503 record_backlog_full), all counted in metrics; the
// admin port, served by the main thread, answers late.
//
// Policies are per thread and inherited by threads created later, and an unprivileged
// process cannot raise a thread back: relay threads are started first, then everything
// else is lowered. A relay thread replaced after a crash is started by the (lowered) main
// thread and inherits its policy; the forwarder logs that.
//
// Node has no sched_setscheduler binding, so SCHED_IDLE is set with `chrt` (util-linux, on
// every Debian/Ubuntu system); without it the threads get nice 19 (os.setPriority) instead.
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import { setFlagsFromString } from 'node:v8';

export type RecordingPriority = 'idle' | 'normal';

export interface LoweredThreads {
  /** How the threads were lowered: `sched_idle` (chrt), `nice` (nice 19, chrt missing or refused), or `none`. */
  mechanism: 'sched_idle' | 'nice' | 'none';
  /** Thread ids lowered. */
  lowered: number[];
  /** Why nothing (or only nice) was applied, for the log. */
  detail?: string;
}

/**
 * Whether V8's GC helper threads are shared by every isolate of this process (node started
 * without --single-threaded-gc). They are: the relay workers' isolates and the recording
 * main thread's hand GC work to the same few platform threads, which are lowered with the
 * recording side. Measured on 2 cores (docs/benchmarks.md), recording added +5.5–9 % to
 * end-to-end latency with shared helpers and +0.6–4 % with --single-threaded-gc, where each
 * isolate collects on its own thread at its own thread's priority. `glitch` starts node with it.
 */
export function gcHelpersShared(execArgv: readonly string[]): boolean {
  return missingForwarderFlags(execArgv).includes('--single-threaded-gc');
}

/**
 * The old generation V8 lets grow before it starts a full (mark-compact) collection, in MB,
 * as node's `--initial-old-space-size`: set by the embedder, it is also the floor of every
 * later limit. Without it the recording main thread, whose live heap is ~20 MB and which
 * allocates a few hundred KB per record, was marked and compacted every ~60–90 records at
 * 300 records/s (a third of its CPU); with it, once or twice a minute (docs/benchmarks.md).
 * The relay isolates keep the same floor: a recording forwarder's relay thread allocates for
 * its captures, and with V8's own sizing it used ~60 µs more CPU per request and added ~8 %
 * more latency (a variant in the same pipeline-bench run). Each isolate may then hold up to
 * this much garbage before a full collection: RSS levels off higher, it does not keep growing.
 */
export const OLD_SPACE_FLOOR_MB = 64;

/**
 * The young generation (V8 semi-space) of the process's main isolate, where recording runs,
 * in MB; V8's default is 16. Recording allocates a few hundred KB per record, and with 16 MB
 * semi-spaces it ran through ~30 MB of fresh memory a second. With 4 MB the recording
 * forwarder's added latency was 3.7 and 4.8 % lower in two pipeline-bench runs (each against
 * a 16 MB one in the same run; the same slot with nothing changed measured +3.0 %), and
 * with 2 MB 4.6 and 3.7 % lower again (each against 4 MB); the main thread's CPU was the
 * same in all four (docs/benchmarks.md). Scavenges come more often but stay as cheap: what
 * survives them (records in flight) is the same.
 */
export const RECORDING_SEMI_SPACE_MB = 2;

/**
 * The relay isolates' young generation, in MB: V8's default. A relay thread's garbage is
 * short-lived per-request state, and the bench measured it with this size.
 */
export const RELAY_SEMI_SPACE_MB = 16;

const semiSpaceFlag = (mb: number) => `--max-semi-space-size=${mb}`;
const RECORDING_SEMI_SPACE_FLAG = semiSpaceFlag(RECORDING_SEMI_SPACE_MB);

/** Node flags the forwarder process should run with (the `glitch` command's shebang passes them). */
export const FORWARDER_NODE_FLAGS: readonly string[] = ['--single-threaded-gc', `--initial-old-space-size=${OLD_SPACE_FLOOR_MB}`, RECORDING_SEMI_SPACE_FLAG];

/**
 * The V8 flag to set before relay workers start, or null: when node was started with the
 * recording isolate's young generation (RECORDING_SEMI_SPACE_MB), relay isolates get theirs
 * back. A flag given at start sizes the main isolate; one set with v8.setFlagsFromString
 * before `new Worker` sizes the isolates created after it (a Worker's `resourceLimits`
 * cannot: the flag overrides them). Any other value given by hand is left alone. A relay
 * running in the main thread (no recorder, one thread) keeps the small one.
 */
export function relayIsolateFlag(execArgv: readonly string[]): string | null {
  return execArgv.includes(RECORDING_SEMI_SPACE_FLAG) ? semiSpaceFlag(RELAY_SEMI_SPACE_MB) : null;
}

/** Sets relayIsolateFlag's flag, if any, for the relay isolates created from now on. */
export function sizeRelayIsolates(execArgv: readonly string[]): void {
  const flag = relayIsolateFlag(execArgv);
  if (flag !== null) setFlagsFromString(flag);
}

/** Which of FORWARDER_NODE_FLAGS `execArgv` lacks (a flag given with another value counts as present). */
export function missingForwarderFlags(execArgv: readonly string[]): string[] {
  return FORWARDER_NODE_FLAGS.filter((f) => {
    const name = f.split('=')[0]!;
    return !execArgv.some((a) => a === f || a.startsWith(`${name}=`));
  });
}

/** Whether node runs without the old-space floor (OLD_SPACE_FLOOR_MB), which recording needs. */
export function lacksOldSpaceFloor(execArgv: readonly string[]): boolean {
  return missingForwarderFlags(execArgv).includes(`--initial-old-space-size=${OLD_SPACE_FLOOR_MB}`);
}

/** Kernel policy numbers as in /proc/<pid>/task/<tid>/stat field 41. */
export const SCHED_OTHER = 0;
export const SCHED_IDLE = 5;

/** The calling thread's kernel thread id, or null where /proc/thread-self does not exist (not Linux). */
export function currentThreadId(): number | null {
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    return Number.isSafeInteger(tid) && tid > 0 ? tid : null;
  } catch {
    return null;
  }
}

/** Thread ids of this process (empty where /proc is missing). */
export function processThreadIds(): number[] {
  try {
    return readdirSync('/proc/self/task').map(Number).filter((t) => Number.isSafeInteger(t) && t > 0);
  } catch {
    return [];
  }
}

/** Scheduling policy of a thread of process `pid` (SCHED_OTHER, SCHED_IDLE, …), null if unreadable. */
export function threadPolicy(pid: number, tid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields after the command start at field 3; policy is field 41.
    const policy = Number(fields[41 - 3]);
    return Number.isInteger(policy) ? policy : null;
  } catch {
    return null;
  }
}

/** Sets SCHED_IDLE on one thread; resolves with why it failed, or null. */
function chrtIdle(tid: number): Promise<string | null> {
  return new Promise((resolve) => {
    execFile('chrt', ['--idle', '--pid', '0', String(tid)], { timeout: 5_000 }, (err, _stdout, stderr) => {
      if (!err) return resolve(null);
      const code = (err as NodeJS.ErrnoException).code;
      resolve(code === 'ENOENT' ? 'chrt not found (apt-get install util-linux)' : `chrt failed: ${String(stderr).trim() || err.message}`);
    });
  });
}

function threadExists(tid: number): boolean {
  return existsSync(`/proc/self/task/${tid}`);
}

/**
 * Lowers every thread of this process except `keep` (the relay threads) to SCHED_IDLE, or to
 * nice 19 where chrt is missing or refuses. Threads that exit meanwhile are skipped.
 */
export async function lowerThreadsExcept(keep: readonly number[]): Promise<LoweredThreads> {
  if (process.platform !== 'linux') return { mechanism: 'none', lowered: [], detail: `thread priorities are only managed on Linux (this is ${process.platform})` };
  const targets = processThreadIds().filter((t) => !keep.includes(t));
  if (targets.length === 0) return { mechanism: 'none', lowered: [], detail: 'no threads to lower (/proc/self/task unreadable?)' };
  const results = await Promise.all(targets.map(async (tid) => ({ tid, failure: await chrtIdle(tid) })));
  const lowered: number[] = [];
  let fallback: string | null = null;
  for (const { tid, failure } of results) {
    if (failure === null) {
      lowered.push(tid);
      continue;
    }
    if (!threadExists(tid)) continue;
    fallback ??= failure;
    try {
      setPriority(tid, 19);
      lowered.push(tid);
    } catch {
      /* the thread exited */
    }
  }
  return fallback === null ? { mechanism: 'sched_idle', lowered } : { mechanism: 'nice', lowered, detail: fallback };
}
