// The recorder side of the capture hook (main thread): completes raw captures (decode,
// SSE reassembly) after the client has its response and hands them to the Recorder. Memory
// is bounded: past the limit, captures are dropped, counted and logged, never queued forever.
import { completeCapture, completeCaptureNow, type CapturedExchange, type RawCapture, type Recorder } from './capture.js';
import type { ScalarMetric } from './metrics.js';
import type { RelayLog } from './relay-log.js';

export interface RecordingLimits {
  /** Raw capture bytes waiting to be completed and recorded before new ones are dropped. */
  maxPendingBytes: number;
}

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

  constructor(
    private readonly recorder: Recorder | undefined,
    private readonly log: RelayLog,
    private readonly limits: RecordingLimits = { maxPendingBytes: 256 * 1024 * 1024 },
  ) {}

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
        this.failed++;
        this.log('error', 'capture could not be completed', { err: e, exchangeId: raw.exchangeId });
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
        .catch((e: unknown) => {
          this.failed++;
          this.log('error', 'capture could not be completed', { err: e, exchangeId: raw.exchangeId });
        })
        .finally(() => this.settled(raw));
    }
  };

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
    ];
  }
}
