// The relay threads of one forwarder, seen from the main thread: either one RelayThread in
// the main thread, or N worker threads sharing the port through SO_REUSEPORT. Workers hand
// captures over through their capture rings (capture-inbox.ts) and send metrics snapshots
// here; a crashed worker is replaced.
import { createServer } from 'node:net';
import { Worker } from 'node:worker_threads';
import type { RawCapture } from './capture.js';
import { packCaptures, unpackCaptures } from './capture-batch.js';
import { CaptureInbox, CapturePoller } from './capture-inbox.js';
import { createCaptureRing } from './capture-ring.js';
import { emptySnapshot, mergeSnapshots, type MetricsSnapshot, type ScalarMetric } from './metrics.js';
import type { RecordingQueue } from './recording.js';
import type { RefusalCode } from './relay-context.js';
import { RelayThread, type RelayThreadOptions } from './relay.js';
import type { RelayLog } from './relay-log.js';
import { currentThreadId, sizeRelayIsolates } from './thread-priority.js';
import type { FromWorker, RelayWorkerData, ToWorker } from './worker-protocol.js';

export interface RelayGroup {
  readonly port: number;
  readonly threads: number;
  /** All threads listening and none stopping. */
  ready(): boolean;
  snapshot(): Promise<MetricsSnapshot>;
  scalarMetrics(): ScalarMetric[];
  /** Kernel thread ids of the relay threads now running (empty off Linux). */
  relayThreadIds(): number[];
  /** Called with a replacement relay thread's id once it listens (after a crash). */
  onReplacement(cb: (tid: number | null) => void): void;
  /** Admission for every thread; resolves once each one applies it (threads started later start with it). */
  setRefusal(refusal: RefusalCode | null): Promise<void>;
  /** While true, captures reach the recorder at once instead of within a poll (CapturePoller). */
  setHandoffUrgent(urgent: boolean): void;
  stop(graceMs: number): Promise<void>;
}

function acceptBatch(queue: RecordingQueue, batch: Uint8Array): void {
  let captures: RawCapture[];
  try {
    captures = unpackCaptures(batch);
  } catch (e) {
    queue.lost(1, e); // at least one; the batch could not say how many
    return;
  }
  queue.accept(captures);
}

export async function startInProcess(opts: RelayThreadOptions, queue: RecordingQueue, log: RelayLog): Promise<RelayGroup> {
  // Copied: the relay reuses its body buffers once the sink returns.
  const relay = new RelayThread(opts, { captures: (captures) => acceptBatch(queue, packCaptures(captures)), log });
  let port: number;
  try {
    port = await relay.listen();
  } catch (e) {
    await relay.stop(0);
    throw e;
  }
  let stopping = false;
  return {
    port,
    threads: 1,
    ready: () => !stopping,
    snapshot: async () => relay.snapshot(),
    scalarMetrics: () => [],
    relayThreadIds: () => {
      const tid = currentThreadId();
      return tid === null ? [] : [tid];
    },
    onReplacement: () => {},
    setRefusal: async (refusal) => {
      relay.refusal = refusal;
    },
    setHandoffUrgent: () => {}, // in this thread captures reach the recorder at once anyway
    stop(graceMs) {
      stopping = true;
      return relay.stop(graceMs);
    },
  };
}

// ---- worker threads -----------------------------------------------------------------------

// Well under a Prometheus scrape timeout (10 s by default), long enough for a thread busy with a huge capture.
const METRICS_TIMEOUT_MS = 2_000;
const MAX_RESTARTS = 20;
/**
 * Room in each worker's capture ring: ~400 of the bench's 19 KB captures, a few seconds of a
 * busy thread's traffic for a recorder that fell behind. Batches over a quarter of it go by
 * message. Pages are touched only as the ring goes round, so RSS grows with use, up to this.
 */
const CAPTURE_RING_BYTES = 8 * 1024 * 1024;

/**
 * How to start worker.ts. Under tsx (sources, tests) the worker gets no loader hooks from
 * the parent on Node 20, so a tiny bootstrap registers tsx before importing the .ts entry.
 */
function workerEntry(): { filename: string | URL; eval: boolean } {
  const here = import.meta.url;
  if (here.endsWith('.ts')) {
    const tsx = import.meta.resolve('tsx/esm/api');
    const entry = new URL('./worker.ts', here).href;
    return { filename: `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); });`, eval: true };
  }
  return { filename: new URL('./worker.js', here), eval: false };
}

/** Flags a worker may inherit: module conditions (`--conditions=source`) and source maps. */
function workerExecArgv(): string[] {
  const out: string[] = [];
  const argv = process.execArgv;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a.startsWith('--conditions=') || a.startsWith('-C=') || a === '--enable-source-maps') out.push(a);
    else if ((a === '--conditions' || a === '-C') && i + 1 < argv.length) out.push(a, argv[++i]!);
  }
  return out;
}

/** Checks the port is free (nobody else listens, with or without SO_REUSEPORT); 0 picks one. */
function probePort(host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', (e: NodeJS.ErrnoException) => reject(new Error(`cannot listen on ${host}:${port}: ${e.code ?? e.message}`)));
    srv.listen({ host, port, exclusive: true }, () => {
      const addr = srv.address();
      const chosen = typeof addr === 'object' && addr !== null ? addr.port : port;
      srv.close(() => resolve(chosen));
    });
  });
}

class RelayWorker {
  readonly worker: Worker;
  readonly listening: Promise<number>;
  lastSnapshot: MetricsSnapshot = emptySnapshot();
  /** Kernel thread id, once listening (null off Linux). */
  tid: number | null = null;
  exited = false;
  stopped = false;
  private nextId = 0;
  private readonly waiters = new Map<number, (s: MetricsSnapshot) => void>();
  private readonly refusalAcks = new Map<number, () => void>();
  private onStopped: (() => void) | null = null;
  private readonly exitedPromise: Promise<void>;
  readonly inbox: CaptureInbox;

  constructor(opts: RelayThreadOptions, queue: RecordingQueue, poller: CapturePoller, log: RelayLog, onExit: (w: RelayWorker, code: number) => void) {
    const entry = workerEntry();
    const captureRing = createCaptureRing(opts.recording ? CAPTURE_RING_BYTES : 64);
    this.inbox = new CaptureInbox(captureRing, (batch) => acceptBatch(queue, batch));
    poller.add(this.inbox);
    const workerData: RelayWorkerData = { ...opts, captureRing };
    this.worker = new Worker(entry.filename, { eval: entry.eval, workerData, execArgv: workerExecArgv() });
    let listened: (port: number) => void = () => {};
    let failed: (e: Error) => void = () => {};
    this.listening = new Promise<number>((resolve, reject) => {
      listened = resolve;
      failed = reject;
    });
    this.listening.catch(() => {}); // observed by the caller; never an unhandled rejection
    this.worker.on('message', (m: FromWorker) => {
      switch (m.type) {
        case 'listening':
          this.tid = m.tid;
          return listened(m.port);
        case 'listen-failed':
          return failed(new Error(m.message));
        case 'captures':
          return this.inbox.received(m.seq, m.batch);
        case 'captures-wake':
          return poller.wake();
        case 'metrics': {
          this.lastSnapshot = m.snapshot;
          const w = this.waiters.get(m.id);
          this.waiters.delete(m.id);
          return w?.(m.snapshot);
        }
        case 'log':
          return log(m.level, m.msg, m.fields);
        case 'refusal-set': {
          const ack = this.refusalAcks.get(m.id);
          this.refusalAcks.delete(m.id);
          return ack?.();
        }
        case 'stopped':
          this.stopped = true;
          this.inbox.drain(); // its last captures, before anyone waits on the recorder
          return this.onStopped?.();
      }
    });
    this.worker.on('error', (err) => {
      log('error', 'relay thread failed', { err });
      failed(err);
    });
    this.exitedPromise = new Promise((resolve) => {
      this.worker.once('exit', (code) => {
        this.exited = true;
        // Whatever it wrote is still in the ring, a crash included.
        const skipped = poller.remove(this.inbox);
        if (skipped > 0) queue.lost(skipped, new Error(`relay thread exited with ${skipped} capture batches never handed over`));
        failed(new Error(`relay thread exited (code ${code}) before listening`));
        for (const w of this.waiters.values()) w(this.lastSnapshot);
        this.waiters.clear();
        for (const ack of this.refusalAcks.values()) ack(); // a dead thread admits nothing
        this.refusalAcks.clear();
        this.onStopped?.();
        onExit(this, code);
        resolve();
      });
    });
  }

  private send(m: ToWorker): void {
    if (!this.exited) this.worker.postMessage(m);
  }

  snapshot(): Promise<MetricsSnapshot> {
    if (this.exited) return Promise.resolve(this.lastSnapshot);
    const id = this.nextId++;
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        // If this (main) thread was the busy one, the answer may already be queued: timers run
        // before messages in a loop turn, so look once more after them.
        setImmediate(() => {
          if (!this.waiters.delete(id)) return;
          resolve(this.lastSnapshot); // a busy relay thread answers late: use what it last said
        });
      }, METRICS_TIMEOUT_MS);
      this.waiters.set(id, (s) => {
        clearTimeout(t);
        resolve(s);
      });
      this.send({ type: 'metrics', id });
    });
  }

  /** Resolves when the thread applied it (or exited). */
  setRefusal(refusal: RefusalCode | null): Promise<void> {
    if (this.exited) return Promise.resolve();
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.refusalAcks.set(id, resolve);
      this.send({ type: 'refusal', id, refusal });
    });
  }

  async stop(graceMs: number): Promise<void> {
    if (this.exited) return;
    const stopped = new Promise<void>((resolve) => (this.onStopped = resolve));
    this.send({ type: 'stop', graceMs });
    const deadline = new Promise<void>((resolve) => setTimeout(resolve, graceMs + 5_000).unref());
    await Promise.race([stopped, deadline]);
    // The thread exits by itself once stopped; terminate only what did not.
    await Promise.race([this.exitedPromise, new Promise<void>((resolve) => setTimeout(resolve, 1_000).unref())]);
    if (!this.exited) await this.worker.terminate();
  }

  async terminate(): Promise<void> {
    if (!this.exited) await this.worker.terminate();
  }
}

export async function startWorkerGroup(base: RelayThreadOptions, threads: number, queue: RecordingQueue, log: RelayLog): Promise<RelayGroup> {
  let stopping = false;
  let restarts = 0;
  let retired = emptySnapshot(); // counters of threads that died, so totals never go down
  let messageBatches = 0; // the same, for capture batches that came by message
  let workers: RelayWorker[] = [];
  let opts: RelayThreadOptions = base;
  let refusal = base.refusal;
  let onReplacement: (tid: number | null) => void = () => {};
  const poller = new CapturePoller();
  // Before the first worker: every relay isolate (replacements too) is created after it.
  sizeRelayIsolates(process.execArgv);

  const onExit = (w: RelayWorker, code: number): void => {
    if (stopping || !workers.includes(w)) return;
    retired = mergeSnapshots([retired, { ...w.lastSnapshot, openStreams: 0, pool: { connected: 0, free: 0, pending: 0, running: 0 } }]);
    messageBatches += w.inbox.messageBatches;
    if (restarts >= MAX_RESTARTS) {
      log('error', 'relay thread exited; restart limit reached, running with fewer threads', { code });
      workers = workers.filter((x) => x !== w);
      return;
    }
    restarts++;
    log('error', 'relay thread exited unexpectedly; starting a new one', { code, restarts });
    const replacement = new RelayWorker({ ...opts, refusal }, queue, poller, log, onExit);
    workers = workers.map((x) => (x === w ? replacement : x));
    replacement.listening.then(
      () => onReplacement(replacement.tid),
      (e: unknown) => log('error', 'replacement relay thread could not listen', { err: e }),
    );
  };

  // With port 0 every thread must bind the same, as yet unknown port: probe for a free
  // one, then retry with another if someone took it in between.
  const attempts = base.port === 0 ? 5 : 1;
  let lastError: unknown = null;
  for (let attempt = 0; attempt < attempts; attempt++) {
    const port = await probePort(base.host, base.port);
    opts = { ...base, port, exclusivePort: false };
    workers = Array.from({ length: threads }, () => new RelayWorker(opts, queue, poller, log, onExit));
    const results = await Promise.allSettled(workers.map((w) => w.listening));
    const failure = results.find((r) => r.status === 'rejected');
    if (!failure) {
      return {
        port,
        threads,
        ready: () => !stopping && workers.length > 0 && workers.every((w) => !w.exited),
        async snapshot() {
          const live = await Promise.all(workers.map((w) => w.snapshot()));
          return mergeSnapshots([retired, ...live]);
        },
        scalarMetrics: () => [
          { name: 'glitch_forwarder_threads', help: 'Relay threads running.', type: 'gauge', value: workers.filter((w) => !w.exited).length },
          { name: 'glitch_forwarder_thread_restarts_total', help: 'Relay threads replaced after exiting unexpectedly.', type: 'counter', value: restarts },
          {
            name: 'glitch_forwarder_capture_message_batches_total',
            help: 'Capture batches that went by message instead of the capture ring (too big for it, or it was full).',
            type: 'counter',
            value: messageBatches + workers.reduce((n, w) => n + w.inbox.messageBatches, 0),
          },
        ],
        relayThreadIds: () => workers.filter((w) => !w.exited && w.tid !== null).map((w) => w.tid!),
        onReplacement(cb) {
          onReplacement = cb;
        },
        async setRefusal(value) {
          refusal = value;
          await Promise.all(workers.map((w) => w.setRefusal(value)));
        },
        setHandoffUrgent: (urgent) => poller.setUrgent(urgent),
        async stop(graceMs) {
          stopping = true;
          await Promise.all(workers.map((w) => w.stop(graceMs)));
          poller.stop();
        },
      };
    }
    lastError = (failure as PromiseRejectedResult).reason;
    stopping = true;
    await Promise.all(workers.map((w) => w.terminate()));
    poller.stop();
    stopping = false;
  }
  throw lastError instanceof Error ? lastError : new Error(String(lastError));
}
