// The main thread's side of the capture hand-off from relay workers. Each worker numbers its
// batches; most arrive through its capture ring, the rest (too big for the ring, or the ring
// was full) by postMessage. An inbox delivers them strictly in the worker's order, so records
// of one session keep their order whichever way they came.
//
// The poller reads every inbox's ring every POLL_MS while batches flow: some milliseconds of
// delay in exchange for never waking this thread per exchange (which costs the relay thread,
// capture-ring.ts). After IDLE_POLLS empty polls it marks the rings asleep and stops; the
// next batch written wakes it with one message. While urgent (the recorder's room is short,
// AdmissionSignal.isUrgent) writers wake it for every batch, as a message per batch did.
//
// 20 ms, not less: every wake-up of the recording thread costs CPU on the recording core
// (on the development VM a poll every 2 ms was ~115 µs of its ~670 µs per record at 300
// records/s, docs/benchmarks.md), and nothing downstream is waiting: the Kafka producer
// lingers 100 ms anyway. At 20 ms a ring holds a busy relay thread's captures many times over.
import { CaptureRingReader } from './capture-ring.js';

const POLL_MS = 20;
const IDLE_POLLS = 10; // asleep after 200 ms without a batch

export class CaptureInbox {
  private nextSeq = 0;
  private readonly byMessage = new Map<number, Uint8Array>();
  readonly ring: CaptureRingReader;
  /** Batches that came by message (counted for metrics). */
  messageBatches = 0;

  constructor(
    ring: SharedArrayBuffer,
    private readonly deliver: (batch: Uint8Array) => void,
  ) {
    this.ring = new CaptureRingReader(ring);
  }

  /** A batch that came by postMessage. */
  received(seq: number, batch: Uint8Array): void {
    this.messageBatches++;
    this.byMessage.set(seq >>> 0, batch);
    this.drain();
  }

  /** Delivers every batch that is next in order; returns how many. */
  drain(): number {
    let delivered = 0;
    for (;;) {
      const posted = this.byMessage.get(this.nextSeq);
      if (posted !== undefined) {
        this.byMessage.delete(this.nextSeq);
        this.step();
        this.deliver(posted);
        delivered++;
        continue;
      }
      const entry = this.ring.peek();
      // A later number at the ring's head: the batch before it is still on its way by message.
      if (entry === null || entry.seq !== this.nextSeq) return delivered;
      // The ring reuses its room once advanced. Uninitialized memory, fully overwritten: a
      // zero-filled copy (new Uint8Array(payload)) took 11 µs for 35 KB, this ~2.
      const copy = Buffer.allocUnsafeSlow(entry.payload.byteLength);
      copy.set(entry.payload);
      this.ring.advance();
      this.step();
      this.deliver(copy);
      delivered++;
    }
  }

  /**
   * The worker is gone and its messages are in: delivers what is left in order. A number
   * missing for good (a message that never came) is skipped; returns how many were skipped.
   */
  drainFinal(): number {
    let skipped = 0;
    for (;;) {
      this.drain();
      const ringSeq = this.ring.peek()?.seq;
      const waiting = [...this.byMessage.keys(), ...(ringSeq === undefined ? [] : [ringSeq])];
      if (waiting.length === 0) return skipped;
      const next = waiting.reduce((a, b) => (((b - this.nextSeq) >>> 0) < ((a - this.nextSeq) >>> 0) ? b : a));
      skipped += (next - this.nextSeq) >>> 0;
      this.nextSeq = next;
    }
  }

  private step(): void {
    this.nextSeq = (this.nextSeq + 1) >>> 0;
  }
}

/** Polls a set of inboxes while batches flow; sleeps (no timer) when they stop. */
export class CapturePoller {
  private readonly inboxes = new Set<CaptureInbox>();
  private timer: NodeJS.Timeout | undefined;
  private emptyPolls = 0;
  private urgent = false;

  add(inbox: CaptureInbox): void {
    this.inboxes.add(inbox);
    inbox.ring.setUrgent(this.urgent);
    this.wake();
  }

  setUrgent(urgent: boolean): void {
    this.urgent = urgent;
    for (const inbox of this.inboxes) inbox.ring.setUrgent(urgent);
  }

  /** Drains it one last time (drainFinal) and stops polling it; returns batches skipped. */
  remove(inbox: CaptureInbox): number {
    this.inboxes.delete(inbox);
    return inbox.drainFinal();
  }

  /** A worker wrote to a ring whose reader was asleep, or while urgent: read now, poll on. */
  wake(): void {
    this.emptyPolls = 0;
    if (this.timer === undefined) {
      for (const inbox of this.inboxes) inbox.ring.wake();
      this.timer = setInterval(this.poll, POLL_MS);
      this.timer.unref();
    }
    this.drainAll();
  }

  /** Reads everything now (a worker stopped, or the caller needs its captures delivered). */
  drainAll(): number {
    let n = 0;
    for (const inbox of this.inboxes) n += inbox.drain();
    return n;
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    this.drainAll();
  }

  private readonly poll = (): void => {
    if (this.drainAll() > 0) {
      this.emptyPolls = 0;
      return;
    }
    if (++this.emptyPolls < IDLE_POLLS) return;
    // Asleep first, then one more look: a batch written in between is either seen here or
    // its writer sees the flag and wakes us (both sides use sequentially consistent atomics).
    for (const inbox of this.inboxes) inbox.ring.sleep();
    if (this.drainAll() > 0) {
      for (const inbox of this.inboxes) inbox.ring.wake();
      this.emptyPolls = 0;
      return;
    }
    clearInterval(this.timer);
    this.timer = undefined;
  };
}
