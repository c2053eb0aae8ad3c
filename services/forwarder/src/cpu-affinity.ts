// Where the forwarder's threads run (Linux CPU affinity). With a recorder, the relay threads
// and the recording side (the main thread: completing, encoding, compressing and publishing
// records, and V8's and libuv's helpers) are kept on different CPUs. At SCHED_IDLE
// (thread-priority.ts) recording already yields the CPU to a relay thread at once, but a
// relay thread that wakes up where recording ran finds its caches full of recording's data:
// on the development machine (2 cores) recording on a shared core added ~0.1 ms to the
// median relayed request; pinned apart, the median was the recording-off forwarder's in the
// same runs (docs/benchmarks.md).
//
// `auto`: the last CPU this process may run on records, the others relay, when there are at
// least two and the relay threads are not more than the relay CPUs (threads 0, the default,
// means one relay thread per relay CPU). A CPU list picks the recording CPUs by hand. Threads
// a thread creates inherit its affinity, so libuv's and V8's threads started later by the
// main thread stay on the recording CPUs; a relay thread started after a crash is moved back.
//
// Node has no sched_setaffinity binding: affinity is set with `taskset` (util-linux, like
// `chrt`), per thread.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { formatCpuList, parseCpuList, type RecordingCpus } from '@glitch/config';
import { processThreadIds } from './thread-priority.js';

/** What startForwarder runs: how many relay threads, and (when separated) on which CPUs each side runs. */
export interface CpuPlan {
  threads: number;
  /** null: no affinity is set (every thread may run anywhere the process may). */
  relayCpus: number[] | null;
  recordingCpus: number[] | null;
  /** Why the sides share CPUs, when they do and separation was asked for. */
  sharedBecause?: string;
}

/** The CPUs the calling thread may run on (Linux), or null where that cannot be read. */
export function allowedCpus(): number[] | null {
  try {
    const m = /^Cpus_allowed_list:\s*(\S+)\s*$/m.exec(readFileSync('/proc/thread-self/status', 'utf8'));
    return m ? parseCpuList(m[1]!) : null;
  } catch {
    return null;
  }
}

/**
 * Relay threads and CPUs for a forwarder: `requestedThreads` 0 means one per CPU (`cpuCount`,
 * or one per relay CPU when the sides are separated). `allowed` null: not Linux, or unreadable.
 */
export function planCpus(setting: RecordingCpus, allowed: readonly number[] | null, requestedThreads: number, recordingInWorkers: boolean, cpuCount: number): CpuPlan {
  const shared = (sharedBecause?: string): CpuPlan => ({
    threads: requestedThreads || cpuCount,
    relayCpus: null,
    recordingCpus: null,
    ...(sharedBecause !== undefined ? { sharedBecause } : {}),
  });
  if (setting === 'off' || !recordingInWorkers) return shared();
  if (allowed === null) return shared('the CPUs this process may use are unknown (not Linux?)');
  let recording: number[];
  if (setting === 'auto') {
    if (allowed.length < 2) return shared(`this process may use ${allowed.length} CPU only`);
    recording = [allowed[allowed.length - 1]!];
  } else {
    const outside = setting.filter((c) => !allowed.includes(c));
    if (outside.length > 0) throw new TypeError(`recording CPUs ${formatCpuList(outside)} are not among the CPUs this process may use (${formatCpuList(allowed)})`);
    recording = [...setting];
  }
  const relay = allowed.filter((c) => !recording.includes(c));
  if (relay.length === 0) throw new TypeError(`recording CPUs ${formatCpuList(recording)} leave no CPU for the relay threads (allowed: ${formatCpuList(allowed)})`);
  if (requestedThreads > relay.length) {
    if (setting === 'auto') return shared(`${requestedThreads} relay threads asked for, more than the ${relay.length} CPU${relay.length === 1 ? '' : 's'} left once one records`);
    throw new TypeError(`${requestedThreads} relay threads do not fit on the ${relay.length} CPU${relay.length === 1 ? '' : 's'} the recording CPUs (${formatCpuList(recording)}) leave`);
  }
  return { threads: requestedThreads || relay.length, relayCpus: relay, recordingCpus: recording };
}

/** Sets one thread's affinity; resolves with why it failed, or null. */
function taskset(tid: number, cpus: readonly number[]): Promise<string | null> {
  return new Promise((resolve) => {
    execFile('taskset', ['--pid', '--cpu-list', formatCpuList(cpus), String(tid)], { timeout: 5_000 }, (err, _stdout, stderr) => {
      if (!err) return resolve(null);
      const code = (err as NodeJS.ErrnoException).code;
      resolve(code === 'ENOENT' ? 'taskset not found (apt-get install util-linux)' : `taskset failed: ${String(stderr).trim() || err.message}`);
    });
  });
}

/** What applying a plan did: threads moved to each side, and the first failure (threads that exited meanwhile are not failures). */
export interface AppliedCpus {
  relay: number[];
  recording: number[];
  failure?: string;
}

/** Moves `relayThreadIds` to the plan's relay CPUs and every other thread of this process to its recording CPUs. */
export async function applyCpuPlan(plan: CpuPlan, relayThreadIds: readonly number[]): Promise<AppliedCpus> {
  const out: AppliedCpus = { relay: [], recording: [] };
  if (plan.relayCpus === null || plan.recordingCpus === null) return out;
  const { relayCpus, recordingCpus } = plan;
  const results = await Promise.all(
    processThreadIds().map(async (tid) => {
      const relay = relayThreadIds.includes(tid);
      return { tid, relay, failure: await taskset(tid, relay ? relayCpus : recordingCpus) };
    }),
  );
  for (const r of results) {
    if (r.failure === null) (r.relay ? out.relay : out.recording).push(r.tid);
    else if (processThreadIds().includes(r.tid)) out.failure ??= r.failure;
  }
  return out;
}

/** A relay thread started after the plan was applied (a replacement after a crash): to the relay CPUs. */
export async function pinRelayThread(plan: CpuPlan, tid: number): Promise<string | null> {
  if (plan.relayCpus === null) return null;
  return taskset(tid, plan.relayCpus);
}
