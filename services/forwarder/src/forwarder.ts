// startForwarder: relay threads + recorder side + admin server, wired together.
import type { Logger } from '@glitch/log';
import { availableParallelism } from 'node:os';
import { startAdmin } from './admin.js';
import type { Recorder } from './capture.js';
import { validateKeys, type StaticKey } from './keys.js';
import { renderPrometheus, type ScalarMetric } from './metrics.js';
import { DEFAULT_RECORDING_LIMITS, RecordingQueue, type RecordingLimits } from './recording.js';
import { startInProcess, startWorkerGroup, type RelayGroup } from './relay-group.js';
import { logTo, noLog } from './relay-log.js';
import type { RefusalCode } from './relay-context.js';
import { captureHandoffDelay, type RelayThreadOptions } from './relay.js';
import { formatCpuList, type RecordingCpus } from '@glitch/config';
import { allowedCpus, applyCpuPlan, pinRelayThread, planCpus } from './cpu-affinity.js';
import { gcHelpersShared, lacksOldSpaceFloor, lowerThreadsExcept, OLD_SPACE_FLOOR_MB, type LoweredThreads, type RecordingPriority } from './thread-priority.js';
import type { UpstreamClientKind } from './upstream.js';

/**
 * Admission from outside the relay: the record spool says whether new traffic must be
 * refused (spool full and policy `refuse`). While it is refusing, every new authenticated
 * request gets 503 `overloaded_error` (code `record_spool_full`, with `retry-after`) and
 * nothing goes upstream; Claude Code's credential-less preconnects are still relayed, and
 * exchanges already in flight finish.
 */
export interface AdmissionSignal {
  /** The state now; read once at start. */
  isRefusing(): boolean;
  /** Called on every change. May return an unsubscribe function, called by stop(). */
  onChange(cb: (refusing: boolean) => void): void | (() => void);
  /**
   * Optional: true while refusing is near (the recorder's room is short), so captures must
   * reach it without delay. Relay workers otherwise hand captures over through a ring the
   * main thread polls every few milliseconds (capture-inbox.ts); while urgent they wake it
   * for every batch, so records of requests admitted just before the refusal still fit.
   */
  isUrgent?(): boolean;
  onUrgentChange?(cb: (urgent: boolean) => void): void | (() => void);
}

export interface ForwarderOptions {
  /** Default 127.0.0.1:8787; port 0 = ephemeral (also with several threads). */
  host?: string;
  port?: number;
  /** Health, readiness and metrics. Default 127.0.0.1:8788; 0 = ephemeral. */
  adminHost?: string;
  adminPort?: number;
  upstreamUrl: string;
  /** Relay threads. Default 1; 0 = one per core (one per relay CPU when recording has CPUs of its own: recordingCpus). See relayInMainThread. */
  threads?: number;
  /**
   * Run a single relay thread in the calling thread instead of a worker thread. Default: only
   * when there is no recorder. With a recorder the calling thread completes and publishes
   * every exchange (decoding, JSON, compression, Kafka), work that must not delay relaying.
   */
  relayInMainThread?: boolean;
  /** Serializable so every worker builds its own KeyStore. */
  keys: StaticKey[];
  /** Receives every authenticated exchange, in the calling (main) thread. */
  recorder?: Recorder;
  /** Request body limit (413 above it). Default 32 MiB. */
  bodyLimitBytes?: number;
  /** Request line + headers limit (431 above it). Default 64 KiB. */
  headerLimitBytes?: number;
  /** Upstream time to response headers (504 after it). Default 10 min: thinking turns are slow. */
  firstByteTimeoutMs?: number;
  /** Longest upstream silence mid-body before the stream is cut. Default 5 min. */
  idleTimeoutMs?: number;
  /** How long stop() lets in-flight exchanges finish. Default 30 s. */
  shutdownGraceMs?: number;
  /**
   * Cap on upstream connections, split across threads. Every open stream holds one
   * (HTTP/1.1), so this bounds concurrent streams: default 8192.
   */
  upstreamConnections?: number;
  logger?: Logger;
  /** Upstream HTTP client: `native` (default, leaner per request) or `undici`. */
  upstreamClient?: UpstreamClientKind;
  /** Idle pooled upstream connections are closed after this long. Default 4 s. */
  upstreamKeepAliveMs?: number;
  /**
   * How long a request may wait for an upstream connection when all `upstreamConnections`
   * are busy before it is refused with 503 `upstream_pool_exhausted`. Default 2 s: streams
   * hold their connection for whole turns, so waiting longer rarely helps.
   */
  upstreamQueueTimeoutMs?: number;
  /** PEM CA certificate(s) trusted for an https upstream instead of Node's defaults (a TLS-intercepting egress proxy, tests). */
  upstreamCa?: string;
  /** Response body bytes kept per capture (the rest is relayed, counted, flagged truncated). Default 32 MiB. */
  responseCaptureLimitBytes?: number;
  /**
   * Relay threads hand finished exchanges' captures to recording this many ms after the
   * first of them finished, together, instead of each right after its response (default
   * 1; 0 hands each over at once). See RelayThread.captured.
   */
  captureHandoffDelayMs?: number;
  /**
   * Scheduling priority of the recording side when relay threads are worker threads (see
   * thread-priority.ts): `idle` lowers every thread but the relay threads to SCHED_IDLE, so
   * recording only uses CPU the relay leaves free; `normal` (default here; the services'
   * config defaults to `idle`) leaves priorities alone. No effect without a recorder or with
   * the relay in the main thread.
   */
  recordingPriority?: RecordingPriority;
  /**
   * Bounds of the recording backlog (captures not yet handed to the recorder): from
   * `backlogCaptures` captures or half of `maxPendingBytes`, new requests are refused with 503
   * record_backlog_full until both are under a quarter of that; past `maxPendingBytes`
   * captures are dropped. Default 10,000 captures / 256 MiB.
   */
  recordingLimits?: Partial<RecordingLimits>;
  /** Admission hook for the record spool's `refuse` policy (default: the recorder's); see also RunningForwarder.setRefusing. */
  admission?: AdmissionSignal;
  /**
   * Which CPUs record when relay threads are worker threads (cpu-affinity.ts): `auto` keeps
   * the last CPU this process may use for recording and the relay threads off it (from 2
   * CPUs, when the relay threads fit on the rest; `threads` 0 then means one per relay CPU);
   * a list names the recording CPUs; `off` (default here; the services' config defaults to
   * `auto`) sets no affinity. No effect without a recorder.
   */
  recordingCpus?: RecordingCpus;
}

export interface RunningForwarder {
  url: string;
  port: number;
  adminUrl: string;
  adminPort: number;
  /**
   * Admission by hand (the `admission` option calls it on every change): while true, new
   * authenticated requests get 503 `record_spool_full`. Resolves once every relay thread
   * applied it.
   */
  setRefusing(refusing: boolean): Promise<void>;
  isRefusing(): boolean;
  /** Kernel thread ids of the relay threads (empty off Linux); every other thread records. */
  relayThreadIds(): number[];
  /** Relay threads started. */
  threads: number;
  /** The CPUs kept for recording (relay threads run on the others), or null when every thread may run anywhere. */
  recordingCpus: number[] | null;
  /** Graceful: stop accepting, let in-flight exchanges finish up to graceMs, abort the rest. */
  stop(graceMs?: number): Promise<void>;
}

/** `2 threads`, `1 thread, recording on CPU 1` or `4 threads, recording on CPUs 6-7` (a CPU list as taskset writes it), for start-up lines. */
export function describeThreads(forwarder: Pick<RunningForwarder, 'threads' | 'recordingCpus'>): string {
  const t = forwarder.threads;
  const cpus = forwarder.recordingCpus;
  return `${t} thread${t === 1 ? '' : 's'}${cpus === null ? '' : `, recording on CPU${cpus.length === 1 ? '' : 's'} ${formatCpuList(cpus)}`}`;
}

interface Resolved {
  host: string;
  port: number;
  adminHost: string;
  adminPort: number;
  upstreamUrl: string;
  threads: number;
  bodyLimitBytes: number;
  headerLimitBytes: number;
  firstByteTimeoutMs: number;
  idleTimeoutMs: number;
  shutdownGraceMs: number;
  upstreamConnections: number;
  upstreamKeepAliveMs: number;
  upstreamQueueTimeoutMs: number;
  captureHandoffDelayMs: number;
}

function positiveInt(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || v <= 0) throw new TypeError(`forwarder option ${name} must be a positive integer (got ${String(value)})`);
  return v;
}

function portNumber(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isInteger(v) || v < 0 || v > 65535) throw new TypeError(`forwarder option ${name} must be a port 0-65535 (got ${String(value)})`);
  return v;
}

function resolveOptions(o: ForwarderOptions): Resolved {
  if (typeof o.upstreamUrl !== 'string' || !/^https?:\/\//i.test(o.upstreamUrl) || !URL.canParse(o.upstreamUrl)) {
    throw new TypeError(`forwarder option upstreamUrl must be an http(s) URL (got ${JSON.stringify(o.upstreamUrl)})`);
  }
  const threads = o.threads ?? 1;
  if (!Number.isInteger(threads) || threads < 0 || threads > 256) throw new TypeError(`forwarder option threads must be 0-256 (got ${String(o.threads)})`);
  return {
    host: o.host ?? '127.0.0.1',
    port: portNumber('port', o.port, 8787),
    adminHost: o.adminHost ?? '127.0.0.1',
    adminPort: portNumber('adminPort', o.adminPort, 8788),
    upstreamUrl: o.upstreamUrl,
    threads,
    bodyLimitBytes: positiveInt('bodyLimitBytes', o.bodyLimitBytes, 32 * 1024 * 1024),
    headerLimitBytes: positiveInt('headerLimitBytes', o.headerLimitBytes, 64 * 1024),
    firstByteTimeoutMs: positiveInt('firstByteTimeoutMs', o.firstByteTimeoutMs, 10 * 60_000),
    idleTimeoutMs: positiveInt('idleTimeoutMs', o.idleTimeoutMs, 5 * 60_000),
    shutdownGraceMs: positiveInt('shutdownGraceMs', o.shutdownGraceMs, 30_000),
    upstreamConnections: positiveInt('upstreamConnections', o.upstreamConnections, 8192),
    upstreamKeepAliveMs: positiveInt('upstreamKeepAliveMs', o.upstreamKeepAliveMs, 4_000),
    upstreamQueueTimeoutMs: positiveInt('upstreamQueueTimeoutMs', o.upstreamQueueTimeoutMs, 2_000),
    captureHandoffDelayMs: captureHandoffDelay(o.captureHandoffDelayMs),
  };
}

/** Host part of a URL for a listen address (wildcards become loopback). */
function urlHost(host: string): string {
  if (host === '0.0.0.0' || host === '') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}

export async function startForwarder(opts: ForwarderOptions): Promise<RunningForwarder> {
  const o = resolveOptions(opts);
  const keys = validateKeys(opts.keys);
  const log = opts.logger ? logTo(opts.logger) : noLog;
  const queue = new RecordingQueue(opts.recorder, log, { ...DEFAULT_RECORDING_LIMITS, ...opts.recordingLimits });
  const admission = opts.admission ?? opts.recorder?.admission;
  // Relay threads, and where they and recording run. A single relay thread runs in this
  // thread only without a recorder (or when asked to); otherwise relays are workers.
  const inMainThread = (o.threads || availableParallelism()) === 1 && (opts.relayInMainThread ?? !queue.enabled);
  const cpuPlan = planCpus(opts.recordingCpus ?? 'off', allowedCpus(), o.threads, queue.enabled && !inMainThread, availableParallelism());
  const threads = cpuPlan.threads;
  // Two reasons to refuse new requests: the record spool is full (`admission`, setRefusing)
  // or recording is backlogged (the queue). The relay threads get the code to answer with.
  let refusing = admission?.isRefusing() === true;
  const refusal = (): RefusalCode | null => (refusing ? 'record_spool_full' : queue.isBacklogged ? 'record_backlog_full' : null);
  const relayOpts: RelayThreadOptions = {
    refusal: refusal(),
    upstreamKeepAliveMs: o.upstreamKeepAliveMs,
    ...(opts.responseCaptureLimitBytes !== undefined ? { responseCaptureLimitBytes: opts.responseCaptureLimitBytes } : {}),
    captureHandoffDelayMs: o.captureHandoffDelayMs,
    upstreamQueueTimeoutMs: o.upstreamQueueTimeoutMs,
    ...(opts.upstreamCa !== undefined ? { upstreamCa: opts.upstreamCa } : {}),
    host: o.host,
    port: o.port,
    exclusivePort: true,
    upstreamUrl: o.upstreamUrl,
    upstreamConnections: Math.max(1, Math.ceil(o.upstreamConnections / threads)),
    keys,
    recording: queue.enabled,
    upstreamClient: opts.upstreamClient === 'undici' ? 'undici' : 'native',
    bodyLimitBytes: o.bodyLimitBytes,
    headerLimitBytes: o.headerLimitBytes,
    firstByteTimeoutMs: o.firstByteTimeoutMs,
    idleTimeoutMs: o.idleTimeoutMs,
  };
  const group: RelayGroup = inMainThread ? await startInProcess(relayOpts, queue, log) : await startWorkerGroup(relayOpts, threads, queue, log);

  // Relay threads exist now: everything else of the process can be lowered (threads created
  // from now on inherit the lowered policy).
  let lowered: LoweredThreads = { mechanism: 'none', lowered: [] };
  if (opts.recordingPriority === 'idle' && queue.enabled && !inMainThread) {
    lowered = await lowerThreadsExcept(group.relayThreadIds());
    if (lowered.mechanism === 'sched_idle') log('info', 'recording threads run at SCHED_IDLE: they use only CPU the relay threads leave free', { threads: lowered.lowered.length });
    else log('warn', 'recording threads could not be set to SCHED_IDLE', { mechanism: lowered.mechanism, detail: lowered.detail, threads: lowered.lowered.length });
    if (lowered.lowered.length > 0 && gcHelpersShared(process.execArgv)) {
      log('warn', "node runs without --single-threaded-gc: V8's GC helper threads, lowered with recording, also collect the relay threads' garbage, which adds to relaying latency (the glitch command starts node with the flag; docs/operations.md)", {});
    }
  }
  // Relay threads to their CPUs, everything else to the recording CPUs (after lowering: the
  // plan is about where threads run, lowering about who yields).
  let recordingCpus: number[] | null = null;
  if (cpuPlan.relayCpus !== null && cpuPlan.recordingCpus !== null) {
    const placed = await applyCpuPlan(cpuPlan, group.relayThreadIds());
    if (placed.failure === undefined) {
      recordingCpus = cpuPlan.recordingCpus;
      log('info', 'recording runs on CPUs of its own: relay threads no longer share a core with it', { recordingCpus: formatCpuList(cpuPlan.recordingCpus), relayCpus: formatCpuList(cpuPlan.relayCpus), threads });
    } else {
      log('warn', 'could not keep recording and relay threads on separate CPUs', { detail: placed.failure, recordingCpus: formatCpuList(cpuPlan.recordingCpus) });
    }
  } else if (cpuPlan.sharedBecause !== undefined) {
    log('info', 'recording shares CPUs with the relay threads', { because: cpuPlan.sharedBecause });
  }
  group.onReplacement((tid) => {
    if (lowered.lowered.length > 0) {
      log('warn', "a replacement relay thread inherits the recording threads' low priority until the forwarder restarts (an unprivileged process cannot raise it)", { tid, mechanism: lowered.mechanism });
    }
    if (recordingCpus !== null && tid !== null) {
      void pinRelayThread(cpuPlan, tid).then((failure) => {
        if (failure !== null) log('warn', 'a replacement relay thread could not be moved to the relay CPUs', { tid, detail: failure });
      });
    }
  });
  if (queue.enabled && lacksOldSpaceFloor(process.execArgv)) {
    log('warn', `node runs without --initial-old-space-size=${OLD_SPACE_FLOOR_MB}: the recording thread then runs a full garbage collection every few dozen records, next to the relay threads (the glitch command starts node with the flag; docs/operations.md)`, {});
  }
  const cpuMetric = (): ScalarMetric => ({
    name: 'glitch_forwarder_recording_cpus',
    help: 'CPUs kept for recording, relay threads running on the others (0: recording and relaying share every CPU).',
    type: 'gauge',
    value: recordingCpus?.length ?? 0,
    labels: { cpus: recordingCpus === null ? '' : formatCpuList(recordingCpus) },
  });
  const priorityMetric = (): ScalarMetric => ({
    name: 'glitch_forwarder_recording_threads_lowered',
    help: 'Threads of this process lowered below the relay threads (SCHED_IDLE, or nice 19 without chrt); 0 when recording runs at normal priority.',
    type: 'gauge',
    value: lowered.lowered.length,
    labels: { mechanism: lowered.mechanism },
  });

  let stopping: Promise<void> | null = null;
  let refusedSince = refusing ? Date.now() : 0;
  const admissionMetric = (): ScalarMetric => ({
    name: 'glitch_forwarder_admission_refusing',
    help: 'Whether new authenticated requests are refused because the record spool is full (1) or admitted (0); see also glitch_forwarder_captures_backlogged.',
    type: 'gauge',
    value: refusing ? 1 : 0,
  });
  let admin;
  try {
    admin = await startAdmin(
      o.adminHost,
      o.adminPort,
      {
        ready: () => stopping === null && group.ready(),
        metrics: async () =>
          renderPrometheus(await group.snapshot(), [...group.scalarMetrics(), ...queue.metrics(), admissionMetric(), priorityMetric(), cpuMetric(), ...(opts.recorder?.metrics?.() ?? [])]),
      },
      log,
    );
  } catch (e) {
    await group.stop(0);
    throw e;
  }
  const adminServer = admin;
  log('info', 'forwarder listening', { port: group.port, adminPort: adminServer.port, threads: group.threads, upstream: o.upstreamUrl });

  // Changes are applied in order: each waits for the one before to reach every thread.
  let applied: Promise<void> = Promise.resolve();
  const applyRefusal = (): Promise<void> => {
    const code = refusal();
    applied = applied.then(() => group.setRefusal(code));
    return applied;
  };
  queue.onBacklogChange(() => void applyRefusal());
  const setRefusing = (value: boolean): Promise<void> => {
    if (value !== refusing) {
      refusing = value;
      if (value) {
        refusedSince = Date.now();
        log('warn', 'record spool full: refusing new requests (503 record_spool_full)');
      } else {
        log('info', 'record spool has room again: admitting requests', { refusedForMs: Date.now() - refusedSince });
      }
    }
    return applyRefusal();
  };
  const unsubscribe: (() => void)[] = [];
  if (admission) {
    const signal = admission;
    const off = signal.onChange((value) => void setRefusing(value === true));
    if (typeof off === 'function') unsubscribe.push(off);
    // A change between the first read and the subscription must not be lost.
    if (signal.isRefusing() !== refusing) await setRefusing(!refusing);
    if (signal.isUrgent && signal.onUrgentChange) {
      const offUrgent = signal.onUrgentChange((urgent) => group.setHandoffUrgent(urgent));
      if (typeof offUrgent === 'function') unsubscribe.push(offUrgent);
      group.setHandoffUrgent(signal.isUrgent());
    }
  }

  return {
    url: `http://${urlHost(o.host)}:${group.port}`,
    port: group.port,
    adminUrl: `http://${urlHost(o.adminHost)}:${adminServer.port}`,
    adminPort: adminServer.port,
    setRefusing,
    isRefusing: () => refusing,
    relayThreadIds: () => group.relayThreadIds(),
    threads: group.threads,
    recordingCpus,
    stop(graceMs = o.shutdownGraceMs) {
      stopping ??= (async () => {
        log('info', 'forwarder stopping', { graceMs });
        for (const off of unsubscribe) off();
        await group.stop(graceMs);
        await queue.drain(5_000);
        await adminServer.close();
        log('info', 'forwarder stopped');
      })();
      return stopping;
    },
  };
}
