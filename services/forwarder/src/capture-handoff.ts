// A relay worker's side of the capture hand-off: each batch gets the next number and goes
// into the capture ring, or by postMessage (its bytes moved) when it is too big for the ring
// or the ring is full. A full ring means the main thread is behind: the worker refuses new
// requests (503 record_backlog_full) until the ring is back under half, so what waits for
// recording stays bounded; captures of exchanges already in flight still go, by message.
import { batchMaxBytes, packCaptures, writeBatch, type CaptureParts } from './capture-batch.js';
import { CaptureRingWriter } from './capture-ring.js';
import type { FromWorker } from './worker-protocol.js';

const FULL_CHECK_MS = 10;

export type PostToMain = (message: FromWorker, transfer?: ArrayBuffer[]) => void;

export class CaptureHandoff {
  private readonly ring: CaptureRingWriter;
  private seq = 0;
  private fullTimer: NodeJS.Timeout | undefined;

  constructor(
    ring: SharedArrayBuffer,
    private readonly post: PostToMain,
    /** Told when the ring fills up (true) and when it is back under half (false). */
    private readonly onBacklog: (backlogged: boolean) => void,
  ) {
    this.ring = new CaptureRingWriter(ring);
  }

  hand(captures: readonly CaptureParts[]): void {
    const seq = this.seq;
    this.seq = (seq + 1) >>> 0;
    const max = batchMaxBytes(captures);
    if (max <= this.ring.maxEntryBytes) {
      if (this.ring.tryWrite(seq, max, (data, at) => writeBatch(captures, data, at))) {
        if (this.ring.shouldWake()) this.post({ type: 'captures-wake' });
        return;
      }
      this.ringFull();
    }
    const bytes = packCaptures(captures);
    this.post({ type: 'captures', seq, batch: bytes }, [bytes.buffer as ArrayBuffer]);
  }

  stop(): void {
    if (this.fullTimer !== undefined) clearInterval(this.fullTimer);
    this.fullTimer = undefined;
  }

  private ringFull(): void {
    if (this.fullTimer !== undefined) return;
    this.onBacklog(true);
    this.fullTimer = setInterval(() => {
      if (this.ring.usedBytes() >= this.ring.capacityBytes / 2) return;
      this.stop();
      this.onBacklog(false);
    }, FULL_CHECK_MS);
    this.fullTimer.unref();
  }
}
