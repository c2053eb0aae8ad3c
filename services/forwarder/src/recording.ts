// The recorder side of the capture hook (main thread): completes raw captures (decode,
// SSE reassembly) after the client has its response and hands them to the Recorder. The
// backlog is what recording has not got to yet (it is CPU-bound, and with
// GLITCH_RECORDING_PRIORITY=idle it only runs on CPU the relay leaves free). At
// `backlogCaptures` captures or half its byte bound the queue says it is backlogged, and the
// forwarder refuses new requests (503 record_backlog_full) until it is under a quarter of
// that, so a relay that outpaces recording slows down instead of losing records. Past the
// byte bound (captures of exchanges already in flight when refusing began) captures are
// dropped, counted and logged, never queued forever.
import { completeCapture, completeCaptureNow, type CapturedExchange, type RawCapture, type Recorder } from './capture.js';
import type { ScalarMetric } from './metrics.js';
import type { RelayLog } from './relay-log.js';

export interface RecordingLimits {
  /** Raw capture bytes waiting to be completed and recorded before new ones are dropped. */
  maxPendingBytes: number;
  /** Captures waiting before the queue is backlogged (whichever of this and half of maxPendingBytes comes first). */
  backlogCaptures: number;
}

export const DEFAULT_RECORDING_LIMITS: RecordingLimits = { maxPendingBytes: 256 * 1024 * 1024, backlogCaptures: 10_000 };

/** What a capture counts against the backlog limit: its body bytes. */
function captureBytes(raw: RawCapture): number {
  return raw.requestBody.byteLength + raw.responseBody.byteLength;
}

export class RecordingQueue {
  private pendingBytes = 0;
  private pending = 0;
  private recorded = 0;
  private dropped = 0;
  private failed = 0;
  private lastDropLog = 0;
  private idleWaiters: Array<() => void> = [];
  /** Accepted, not yet started: completed together in one setImmediate. */
  private waiting: RawCapture[] = [];
  private scheduled = false;
  private backlogged = false;
  private backlogListeners: Array<(backlogged: boolean) => void> = [];
  /** Times the queue became backlogged. */
  private backlogEpisodes = 0;

  constructor(
    private readonly recorder: Recorder | undefined,
    private readonly log: RelayLog,
    private readonly limits: RecordingLimits = DEFAULT_RECORDING_LIMITS,
  ) {}

  /** Called whenever the backlog state changes. */
  onBacklogChange(listener: (backlogged: boolean) => void): void {
    this.backlogListeners.push(listener);
  }

  get isBacklogged(): boolean {
    return this.backlogged;
  }

  /**
   * Latches at backlogCaptures captures or half of maxPendingBytes, releases once both are
   * under a quarter of that (no flapping around one threshold).
   */
  private updateBacklog(): void {
    const { maxPendingBytes, backlogCaptures } = this.limits;
    const next = this.backlogged
      ? this.pendingBytes >= maxPendingBytes / 4 || this.pending >= backlogCaptures / 4
      : this.pendingBytes >= maxPendingBytes / 2 || this.pending >= backlogCaptures;
    if (next === this.backlogged) return;
    this.backlogged = next;
    if (next) {
      this.backlogEpisodes++;
      this.log('warn', 'recording cannot keep up: refusing new requests until it catches up (503 record_backlog_full)', { pending: this.pending, pendingBytes: this.pendingBytes });
    } else {
      this.log('info', 'recording caught up: admitting requests', { pending: this.pending, pendingBytes: this.pendingBytes });
    }
    for (const l of this.backlogListeners) l(next);
  }

  get enabled(): boolean {
    return this.recorder !== undefined;
  }

  accept(batch: readonly RawCapture[]): void {
    for (const raw of batch) this.acceptOne(raw);
  }

  private acceptOne(raw: RawCapture): void {
    const recorder = this.recorder;
    if (!recorder) return;
    const size = captureBytes(raw);
    if (this.pendingBytes + size > this.limits.maxPendingBytes && this.pending > 0) {
      this.dropped++;
      const now = Date.now();
      if (now - this.lastDropLog > 10_000) {
        this.lastDropLog = now;
        this.log('error', 'recorder backlog full: dropping captures', { dropped: this.dropped, pendingBytes: this.pendingBytes });
      }
      return;
    }
    this.pending++;
    this.pendingBytes += size;
    this.updateBacklog();
    this.waiting.push(raw);
    if (!this.scheduled) {
      this.scheduled = true;
      // setImmediate: the SSE reassembly is synchronous CPU work; let pending I/O go first.
      setImmediate(this.completeWaiting);
    }
  }

  /** Completes everything accepted since the last run: synchronously unless a body needs decoding. */
  private readonly completeWaiting = (): void => {
    this.scheduled = false;
    const batch = this.waiting;
    this.waiting = [];
    for (const raw of batch) {
      let now: CapturedExchange | null = null;
      try {
        now = completeCaptureNow(raw);
      } catch (e) {
        this.completionFailed(raw, e);
        this.settled(raw);
        continue;
      }
      if (now !== null) {
        this.deliver(now);
        this.settled(raw);
        continue;
      }
      completeCapture(raw)
        .then((exchange) => this.deliver(exchange))
        .catch((e: unknown) => this.completionFailed(raw, e))
        .finally(() => this.settled(raw));
    }
  };

  /** Captures that never reached the queue (a batch from a relay thread that could not be read): counted as failed. */
  lost(count: number, e: unknown): void {
    this.failed += count;
    this.log('error', 'captures lost before the recorder: a batch from a relay thread could not be read', { err: e, count });
  }

  private completionFailed(raw: RawCapture, e: unknown): void {
    this.failed++;
    this.log('error', 'capture could not be completed', { err: e, exchangeId: raw.exchangeId });
  }

  private deliver(exchange: CapturedExchange): void {
    try {
      this.recorder!.record(exchange);
      this.recorded++;
    } catch (e) {
      this.failed++;
      this.log('error', 'recorder threw', { err: e, exchangeId: exchange.exchangeId });
    }
  }

  private settled(raw: RawCapture): void {
    this.pending--;
    this.pendingBytes -= captureBytes(raw);
    this.updateBacklog();
    if (this.pending === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  /** Resolves when every accepted capture was recorded, or after `timeoutMs`. */
  async drain(timeoutMs: number): Promise<void> {
    if (this.pending === 0) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, timeoutMs);
      this.idleWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  metrics(): ScalarMetric[] {
    const p = 'glitch_forwarder_captures_';
    return [
      { name: `${p}recorded_total`, help: 'Exchanges handed to the recorder.', type: 'counter', value: this.recorded },
      { name: `${p}dropped_total`, help: 'Captures dropped because the recorder backlog was full.', type: 'counter', value: this.dropped },
      { name: `${p}failed_total`, help: 'Captures the recorder side failed on.', type: 'counter', value: this.failed },
      { name: `${p}pending`, help: 'Captures waiting for the recorder.', type: 'gauge', value: this.pending },
      { name: `${p}pending_bytes`, help: 'Raw bytes of captures waiting for the recorder.', type: 'gauge', value: this.pendingBytes },
      { name: `${p}backlogged`, help: 'Whether recording is behind far enough that new requests are refused (503 record_backlog_full).', type: 'gauge', value: this.backlogged ? 1 : 0 },
      { name: `${p}backlog_episodes_total`, help: 'Times recording fell behind far enough to refuse new requests.', type: 'counter', value: this.backlogEpisodes },
    ];
  }
}
