// A bounded, append-only disk spool: where records wait while Kafka is unreachable.
//
// Layout: numbered segment files in one directory. Each entry is framed as
//   [u32 payload length][u32 crc32 of payload][payload]
// Appends are buffered and written + fsynced in batches (every `flushIntervalMs` or
// `flushBytes`), so a crash loses at most one unflushed batch. A torn or corrupt tail (a
// crash mid-write) is detected by length/CRC, skipped and counted, never replayed as data.
// Replay is in append order; a segment is deleted only after every entry in it was acked,
// and progress inside the oldest segment is kept in a cursor file, so a crash during replay
// re-sends at most the unacked part (consumers deduplicate by record id).
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, statSync, truncateSync, unlinkSync, writeSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FRAME_HEADER_BYTES, frameHeader, scanFrames } from './frames.js';

export type SpoolFullPolicy = 'drop-oldest' | 'refuse';

export interface SpoolOptions {
  dir: string;
  /** Upper bound on bytes on disk plus bytes waiting to be flushed. */
  maxBytes: number;
  /** What to do when an append would exceed maxBytes. */
  whenFull: SpoolFullPolicy;
  segmentBytes?: number; // default 8 MiB
  flushIntervalMs?: number; // default 50
  flushBytes?: number; // default 1 MiB
  /** Told once each time the spool becomes full (and each time entries are dropped). */
  onFull?: (info: { policy: SpoolFullPolicy; droppedEntries: number; bytes: number }) => void;
}

export type AppendOutcome = { ok: true } | { ok: false; reason: 'spool_full' | 'entry_too_large' | 'closed' };

export interface SpoolStats {
  bytes: number;
  entries: number;
  appended: number;
  replayed: number;
  droppedOldest: number;
  refused: number;
  tornSkipped: number;
  full: boolean;
}

/** What a replay handler says about one entry. `retry` stops the replay, keeping the entry. */
export type ReplayOutcome = 'ok' | 'retry';

const HEADER = FRAME_HEADER_BYTES;
const SEGMENT_RE = /^(\d{12})\.seg$/;
const CURSOR = 'cursor';
const REFUSE_AT = 0.9;
const RESUME_BELOW = 0.75;
// Under the `refuse` policy, `pressed` from here (until usage is under half of it): records
// should reach the spool without delay, so the refusal at REFUSE_AT comes in time.
const PRESSED_AT = 0.5;

/** A boolean that tells its listeners when it changes. */
class Latch {
  private on = false;
  private readonly listeners = new Set<(value: boolean) => void>();

  get value(): boolean {
    return this.on;
  }

  set(value: boolean): void {
    if (this.on === value) return;
    this.on = value;
    for (const listener of this.listeners) listener(value);
  }

  /** Returns the unsubscribe function. */
  subscribe(listener: (value: boolean) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

interface Segment {
  seq: number;
  path: string;
  bytes: number; // bytes on disk
  entries: number; // entries known (counted on open or as appended)
}

export class DiskSpool {
  private readonly opts: Required<Omit<SpoolOptions, 'onFull'>> & Pick<SpoolOptions, 'onFull'>;
  private readonly segments: Segment[] = [];
  private pending: Buffer[] = []; // [header, payload] pairs
  private pendingBytes = 0;
  private pendingEntries = 0;
  private fd: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private cursor = 0; // byte offset of the next unreplayed entry in segments[0]
  private wasFull = false;
  // Under the `refuse` policy: set once usage reaches REFUSE_AT of maxBytes (so exchanges
  // already in flight still find room for their records) or an append was refused; cleared
  // once replay brings usage under RESUME_BELOW, so the forwarder does not flap at the edge.
  private readonly refuseLatch = new Latch();
  private readonly pressedLatch = new Latch();
  private readonly counters = { appended: 0, replayed: 0, droppedOldest: 0, refused: 0, tornSkipped: 0 };

  constructor(options: SpoolOptions) {
    this.opts = { segmentBytes: 8 * 1024 * 1024, flushIntervalMs: 50, flushBytes: 1024 * 1024, ...options };
    mkdirSync(this.opts.dir, { recursive: true });
    for (const name of readdirSync(this.opts.dir).sort()) {
      const m = SEGMENT_RE.exec(name);
      if (!m) continue;
      const path = join(this.opts.dir, name);
      const { entries, validBytes, torn } = scanSegment(readFileSync(path));
      // A torn tail is garbage from a crash mid-write: count it and cut it off.
      if (torn) truncateSync(path, validBytes);
      this.counters.tornSkipped += torn;
      this.segments.push({ seq: Number(m[1]), path, bytes: validBytes, entries });
    }
    const cursorPath = join(this.opts.dir, CURSOR);
    if (existsSync(cursorPath) && this.segments.length) {
      const [seq, offset] = readFileSync(cursorPath, 'utf8').trim().split(':').map(Number);
      if (seq === this.segments[0]?.seq && offset !== undefined && Number.isFinite(offset)) this.cursor = offset;
    }
    // Reopened nearly full (Kafka still down at the last stop): refuse until replay makes room.
    if (this.opts.whenFull === 'refuse' && this.diskBytes() >= this.opts.maxBytes * REFUSE_AT) this.refuseLatch.set(true);
    this.updatePressed();
  }

  get stats(): SpoolStats {
    return {
      bytes: this.diskBytes() + this.pendingBytes,
      entries: this.segments.reduce((n, s) => n + s.entries, 0) + this.pendingEntries,
      ...this.counters,
      full: this.wasFull,
    };
  }

  /** True while entries wait on disk or in the flush buffer. */
  get isEmpty(): boolean {
    return this.stats.entries === 0;
  }

  /** Cheap check for the hot path: would a refuse-policy spool turn new traffic away? */
  get refusing(): boolean {
    return this.refuseLatch.value;
  }

  /** Told on every change of {@link refusing}; returns the unsubscribe function. */
  onRefusingChange(listener: (refusing: boolean) => void): () => void {
    return this.refuseLatch.subscribe(listener);
  }

  private setRefusing(value: boolean): void {
    this.refuseLatch.set(value);
  }

  /**
   * Under the `refuse` policy, true from half full until under a quarter (or while refusing):
   * the room left is what records already on their way must fit in, so whoever hands records
   * over should not hold them back (the forwarder's capture hand-off then wakes the recorder
   * for each batch instead of letting it poll).
   */
  get pressed(): boolean {
    return this.pressedLatch.value;
  }

  /** Told on every change of {@link pressed}; returns the unsubscribe function. */
  onPressedChange(listener: (pressed: boolean) => void): () => void {
    return this.pressedLatch.subscribe(listener);
  }

  private updatePressed(): void {
    if (this.opts.whenFull !== 'refuse') return;
    const used = this.diskBytes() + this.pendingBytes;
    const max = this.opts.maxBytes;
    const pressed = this.pressedLatch.value;
    this.pressedLatch.set(this.refuseLatch.value || (pressed ? used >= (max * PRESSED_AT) / 2 : used >= max * PRESSED_AT));
  }

  append(payload: Uint8Array): AppendOutcome {
    if (this.closed) return { ok: false, reason: 'closed' };
    const size = HEADER + payload.byteLength;
    if (size > this.opts.maxBytes || size > this.opts.segmentBytes) return { ok: false, reason: 'entry_too_large' };
    while (this.diskBytes() + this.pendingBytes + size > this.opts.maxBytes) {
      if (this.opts.whenFull === 'refuse') {
        this.counters.refused++;
        this.setRefusing(true);
        this.updatePressed();
        this.signalFull(0);
        return { ok: false, reason: 'spool_full' };
      }
      this.flush(); // make pending data droppable as whole segments
      const dropped = this.dropOldestSegment();
      if (dropped === 0) {
        this.counters.refused++;
        return { ok: false, reason: 'spool_full' };
      }
      this.signalFull(dropped);
    }
    this.pending.push(frameHeader(payload), Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength));
    this.pendingBytes += size;
    this.pendingEntries++;
    this.counters.appended++;
    if (this.opts.whenFull === 'refuse' && this.diskBytes() + this.pendingBytes >= this.opts.maxBytes * REFUSE_AT) this.setRefusing(true);
    this.updatePressed();
    if (this.pendingBytes >= this.opts.flushBytes) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), this.opts.flushIntervalMs);
    return { ok: true };
  }

  /** Writes and fsyncs everything appended so far. */
  flush(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.pendingBytes === 0) return;
    // Segments found at start-up are never appended to: new data opens a new segment.
    let tail = this.fd === undefined ? undefined : this.segments.at(-1);
    const chunks: Buffer[] = [];
    let chunkBytes = 0;
    let chunkEntries = 0;
    const writeChunk = () => {
      if (!tail || chunkBytes === 0) return;
      writeSync(this.fd!, Buffer.concat(chunks, chunkBytes));
      fsyncSync(this.fd!);
      tail.bytes += chunkBytes;
      tail.entries += chunkEntries;
      chunks.length = 0;
      chunkBytes = 0;
      chunkEntries = 0;
    };
    for (let i = 0; i < this.pending.length; i += 2) {
      const header = this.pending[i]!;
      const payload = this.pending[i + 1]!;
      const size = header.byteLength + payload.byteLength;
      if (!tail || tail.bytes + chunkBytes + size > this.opts.segmentBytes) {
        writeChunk();
        this.closeFd();
        const seq = (this.segments.at(-1)?.seq ?? 0) + 1;
        tail = { seq, path: join(this.opts.dir, `${String(seq).padStart(12, '0')}.seg`), bytes: 0, entries: 0 };
        this.segments.push(tail);
        this.fd = openSync(tail.path, 'a');
      }
      chunks.push(header, payload);
      chunkBytes += size;
      chunkEntries++;
    }
    writeChunk();
    this.pending = [];
    this.pendingBytes = 0;
    this.pendingEntries = 0;
  }

  /**
   * Hands every spooled entry, oldest first, to `handler` until it says `retry` (the
   * destination is still down) or the spool is empty. Returns how many were acked.
   */
  async replay(handler: (payload: Buffer) => Promise<ReplayOutcome>): Promise<number> {
    return this.replayBatches(async ([payload]) => ((await handler(payload!)) === 'ok' ? 1 : 0), { maxEntries: 1 });
  }

  /**
   * Like `replay`, but hands over up to `maxEntries` entries (and about `maxBytes`) at a
   * time, so the destination can send them together. The handler returns how many of the
   * leading entries it delivered; fewer than it was given means "retry the rest later".
   */
  async replayBatches(handler: (payloads: Buffer[]) => Promise<number>, opts: { maxEntries?: number; maxBytes?: number } = {}): Promise<number> {
    const maxEntries = opts.maxEntries ?? 256;
    const maxBytes = opts.maxBytes ?? 8 * 1024 * 1024;
    this.flush();
    let acked = 0;
    while (this.segments.length) {
      const seg = this.segments[0]!;
      if (seg === this.segments.at(-1)) this.closeFd(); // appends go to a new segment from here
      const data = readFileSync(seg.path);
      while (this.cursor + HEADER <= seg.bytes) {
        const batch: Buffer[] = [];
        const ends: number[] = [];
        let at = this.cursor;
        let bytes = 0;
        while (at + HEADER <= seg.bytes && batch.length < maxEntries && (batch.length === 0 || bytes < maxBytes)) {
          const len = data.readUInt32LE(at);
          batch.push(data.subarray(at + HEADER, at + HEADER + len));
          at += HEADER + len;
          bytes += len;
          ends.push(at);
        }
        const delivered = Math.max(0, Math.min(batch.length, await handler(batch)));
        if (this.segments[0] !== seg) break; // dropped (drop-oldest) while we awaited
        if (delivered > 0) {
          this.cursor = ends[delivered - 1]!;
          seg.entries -= delivered;
          acked += delivered;
          this.counters.replayed += delivered;
          this.saveCursor(seg);
          if (this.refuseLatch.value && this.diskBytes() + this.pendingBytes < this.opts.maxBytes * RESUME_BELOW) this.setRefusing(false);
          this.updatePressed();
        }
        if (delivered < batch.length) {
          this.saveCursor(seg);
          return acked;
        }
      }
      if (this.segments[0] !== seg) continue;
      this.removeSegment(seg);
      this.cursor = 0;
      this.saveCursor(undefined);
      this.flush(); // anything appended meanwhile becomes a segment we will reach
    }
    this.wasFull = false;
    this.setRefusing(false);
    this.updatePressed();
    return acked;
  }

  close(): void {
    if (this.closed) return;
    this.flush();
    this.closeFd();
    this.closed = true;
  }

  private diskBytes(): number {
    return this.segments.reduce((n, s) => n + s.bytes, 0) - this.cursor;
  }

  private dropOldestSegment(): number {
    const seg = this.segments[0];
    if (!seg) return 0;
    if (seg === this.segments.at(-1)) this.closeFd();
    const dropped = seg.entries;
    this.counters.droppedOldest += dropped;
    this.removeSegment(seg);
    this.cursor = 0;
    this.saveCursor(undefined);
    return Math.max(dropped, 1);
  }

  private removeSegment(seg: Segment): void {
    this.segments.shift();
    try {
      unlinkSync(seg.path);
    } catch {
      /* already gone */
    }
  }

  private saveCursor(seg: Segment | undefined): void {
    const path = join(this.opts.dir, CURSOR);
    if (!seg || this.cursor === 0) {
      if (existsSync(path)) unlinkSync(path);
      return;
    }
    // write-then-rename: a crash leaves the old cursor or the new one, never half of one.
    writeFileSync(path + '.tmp', `${seg.seq}:${this.cursor}\n`);
    renameSync(path + '.tmp', path);
  }

  private closeFd(): void {
    if (this.fd !== undefined) {
      closeSync(this.fd);
      this.fd = undefined;
    }
  }

  private signalFull(droppedEntries: number): void {
    const first = !this.wasFull;
    this.wasFull = true;
    if (first || droppedEntries > 0) this.opts.onFull?.({ policy: this.opts.whenFull, droppedEntries, bytes: this.diskBytes() + this.pendingBytes });
  }
}

/** Counts the valid entries of a segment; anything after the first bad frame is torn. */
export function scanSegment(data: Buffer): { entries: number; validBytes: number; torn: number } {
  const { payloads, validBytes, torn } = scanFrames(data);
  return { entries: payloads.length, validBytes, torn };
}

export function segmentFileSize(path: string): number {
  return statSync(path).size;
}
