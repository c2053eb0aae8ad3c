// A single-writer, single-reader byte ring in a SharedArrayBuffer: how a relay worker hands
// captures to the main thread without waking it for each exchange. Waking a sleeping thread
// (postMessage, Atomics.notify: an eventfd write and an IPI) cost the relay thread 13–28 µs
// per hand-off on the development VM, more than building the capture; here the writer only
// copies bytes and moves an index, and the reader polls while entries flow (CaptureInbox).
// When the reader stops polling it says so (`asleep`), and the next writer wakes it once; while
// it is `urgent` (the recorder's room is short) every entry wakes it.
//
// Entries are contiguous: [i32 length][u32 seq][payload], 8-byte aligned. An entry that does
// not fit before the end leaves a WRAP marker and starts at 0. The writer never lets its
// index reach the reader's, so equal indices mean empty.

const HEAD = 0; // reader's index (bytes into the data area)
const TAIL = 16; // writer's index, a cache line away from HEAD
const ASLEEP = 32; // 1 while the reader is not polling
const URGENT = 40; // 1 while the reader wants a wake-up for every entry
const CONTROL_INTS = 48;
const CONTROL_BYTES = CONTROL_INTS * 4;
const ENTRY_HEADER = 8;
const WRAP = -1;

const align8 = (n: number) => (n + 7) & ~7;

/** A ring with `dataBytes` of room for entries (rounded up to a multiple of 8). */
export function createCaptureRing(dataBytes: number): SharedArrayBuffer {
  if (dataBytes < 64) throw new Error(`a capture ring needs at least 64 bytes (got ${dataBytes})`);
  return new SharedArrayBuffer(CONTROL_BYTES + align8(dataBytes));
}

class RingView {
  protected readonly control: Int32Array;
  protected readonly data: Buffer;
  protected readonly capacity: number;

  constructor(ring: SharedArrayBuffer) {
    this.control = new Int32Array(ring, 0, CONTROL_INTS);
    this.data = Buffer.from(ring, CONTROL_BYTES);
    this.capacity = this.data.byteLength;
  }

  /** Bytes held by entries not yet read. */
  usedBytes(): number {
    const used = Atomics.load(this.control, TAIL) - Atomics.load(this.control, HEAD);
    return used >= 0 ? used : used + this.capacity;
  }

  get capacityBytes(): number {
    return this.capacity;
  }
}

export class CaptureRingWriter extends RingView {
  private tail: number;
  /** The largest payload tryWrite takes: a quarter of the ring, so one entry never stalls it for long. */
  readonly maxEntryBytes: number;

  constructor(ring: SharedArrayBuffer) {
    super(ring);
    this.tail = Atomics.load(this.control, TAIL);
    this.maxEntryBytes = Math.floor(this.capacity / 4) - ENTRY_HEADER;
  }

  /**
   * Reserves room for a payload of up to `maxBytes`, lets `fill` write it at `data[at…]` and
   * return how many bytes it wrote, and publishes the entry. False (nothing written) when
   * the payload is over maxEntryBytes or the ring has no room for it now.
   */
  tryWrite(seq: number, maxBytes: number, fill: (data: Buffer, at: number) => number): boolean {
    if (maxBytes > this.maxEntryBytes) return false;
    const need = align8(ENTRY_HEADER + maxBytes);
    const head = Atomics.load(this.control, HEAD);
    let at = this.tail;
    let wrapAt = -1;
    if (at >= head) {
      // Room for the entry and, after it, a WRAP marker (so tail never reaches the end).
      if (this.capacity - at < need + 8) {
        if (head <= need) return false; // from 0 it must end strictly before the reader
        wrapAt = at;
        at = 0;
      }
    } else if (head - at <= need) {
      return false;
    }
    const written = fill(this.data, at + ENTRY_HEADER);
    if (written > maxBytes || written < 0) throw new Error(`capture ring: an entry wrote ${written} bytes into room for ${maxBytes}`);
    this.data.writeInt32LE(written, at);
    this.data.writeUInt32LE(seq >>> 0, at + 4);
    if (wrapAt >= 0) this.data.writeInt32LE(WRAP, wrapAt);
    this.tail = at + align8(ENTRY_HEADER + written);
    // Publishes the bytes above: a reader that loads this index sees them.
    Atomics.store(this.control, TAIL, this.tail);
    return true;
  }

  /** After a write: true when the caller should wake the reader (it went to sleep, or wants every entry at once). */
  shouldWake(): boolean {
    if (Atomics.load(this.control, URGENT) === 1) return true;
    return Atomics.load(this.control, ASLEEP) === 1 && Atomics.compareExchange(this.control, ASLEEP, 1, 0) === 1;
  }
}

export interface RingEntry {
  seq: number;
  /** A view on the ring, valid until advance(). */
  payload: Buffer;
}

export class CaptureRingReader extends RingView {
  private head: number;
  private peeked = 0;

  constructor(ring: SharedArrayBuffer) {
    super(ring);
    this.head = Atomics.load(this.control, HEAD);
  }

  /** The oldest unread entry, or null when the ring is empty. */
  peek(): RingEntry | null {
    const tail = Atomics.load(this.control, TAIL);
    if (this.head === tail) return null;
    let length = this.data.readInt32LE(this.head);
    if (length === WRAP) {
      this.head = 0;
      Atomics.store(this.control, HEAD, 0);
      if (tail === 0) return null;
      length = this.data.readInt32LE(0);
    }
    const at = this.head;
    this.peeked = align8(ENTRY_HEADER + length);
    return { seq: this.data.readUInt32LE(at + 4), payload: this.data.subarray(at + ENTRY_HEADER, at + ENTRY_HEADER + length) };
  }

  /** Frees the entry peek() returned. */
  advance(): void {
    if (this.peeked === 0) throw new Error('capture ring: advance() without an entry from peek()');
    this.head += this.peeked;
    this.peeked = 0;
    Atomics.store(this.control, HEAD, this.head);
  }

  /** Marks the reader as not polling; the next writer's shouldWake() is true. Check peek() after. */
  sleep(): void {
    Atomics.store(this.control, ASLEEP, 1);
  }

  /** Polling again: writers need not wake it. */
  wake(): void {
    Atomics.store(this.control, ASLEEP, 0);
  }

  /** While set, writers wake the reader for every entry. */
  setUrgent(urgent: boolean): void {
    Atomics.store(this.control, URGENT, urgent ? 1 : 0);
  }
}
