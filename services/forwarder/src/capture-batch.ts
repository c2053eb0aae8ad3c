// How captures cross from a relay thread to the recording thread: a batch is one run of
// bytes, [u32 capture count] then each capture's fields in a fixed binary layout, its bodies
// inline, written straight into the capture ring (capture-ring.ts) or, when it does not fit
// there, into its own ArrayBuffer that is moved with postMessage.
//
// The relay writes from the parts it already holds (header strings as uWS gave them,
// upstream's raw header bytes, its pooled body buffers): no RawCapture, header pairs, latin1
// strings or JSON are built on the relay thread, whose every microsecond is on some
// request's latency. The recording thread decodes a batch into RawCaptures.
import { GLITCH_KEY_HEADER, type GlitchError } from '@glitch/protocol';
import type { ExchangeTimings, HeaderPair, RawCapture } from './capture.js';

// @glitch/log's value; not imported from there, which would load pino into relay threads.
const REDACTED = '[REDACTED]';

/** A finished exchange as the relay holds it: a RawCapture with its headers as they came, nothing converted. */
export type CaptureParts = Omit<RawCapture, 'requestHeaders' | 'responseHeaders'> & {
  /** Flat [name, value, …], names lower-cased. The X-Glitch-Key value is written as `[REDACTED]`. */
  requestHeaders: readonly string[];
  /** Flat [name, value, …]: upstream's raw bytes (latin1), or the strings of Glitch's own answer. */
  responseHeaders: readonly (Uint8Array | string)[];
};

const SOURCES: readonly RawCapture['responseSource'][] = ['none', 'upstream', 'glitch'];
const ABORTED = 1;
const TRUNCATED = 2;
const HAS_ERROR = 4;

/** Bytes of one capture's fixed-size fields: two header counts, status, source, flags, body size, five timings, the bodies' lengths. */
const FIXED_BYTES = 4 + 4 + 4 + 1 + 1 + 8 + 8 * 5 + 2 * 4;
const COUNT_BYTES = 4;

// UTF-8 takes at most 3 bytes per UTF-16 unit; a length prefix is 4.
const maxUtf8 = (s: string) => 4 + s.length * 3;

/** Room writeBatch may need for these captures. */
export function batchMaxBytes(captures: readonly CaptureParts[]): number {
  let n = COUNT_BYTES;
  for (const c of captures) {
    n += FIXED_BYTES + c.requestBody.byteLength + c.responseBody.byteLength;
    n += maxUtf8(c.exchangeId) + maxUtf8(c.tenantId) + maxUtf8(c.keyId) + maxUtf8(c.method) + maxUtf8(c.path) + maxUtf8(c.query);
    for (const s of c.requestHeaders) n += maxUtf8(s.length < REDACTED.length ? REDACTED : s); // any value may be the key's
    for (const h of c.responseHeaders) n += 4 + (typeof h === 'string' ? h.length : h.byteLength);
    if (c.error !== null) n += maxUtf8(c.error.code) + maxUtf8(c.error.message);
  }
  return n;
}

/** Writes the batch at `target[at…]` (room for batchMaxBytes there); returns the bytes written. */
export function writeBatch(captures: readonly CaptureParts[], target: Buffer, at: number): number {
  const w = new BatchWriter(target, at);
  w.u32(captures.length);
  for (const c of captures) {
    w.utf8(c.exchangeId);
    w.utf8(c.tenantId);
    w.utf8(c.keyId);
    w.utf8(c.method);
    w.utf8(c.path);
    w.utf8(c.query);
    const rh = c.requestHeaders;
    w.u32(rh.length >>> 1);
    for (let i = 0; i + 1 < rh.length; i += 2) {
      w.utf8(rh[i]!);
      w.utf8(rh[i] === GLITCH_KEY_HEADER ? REDACTED : rh[i + 1]!);
    }
    w.u32(c.status);
    w.u8(SOURCES.indexOf(c.responseSource));
    w.u8((c.clientAborted ? ABORTED : 0) | (c.responseBodyTruncated ? TRUNCATED : 0) | (c.error !== null ? HAS_ERROR : 0));
    w.f64(c.responseBodyBytes);
    const sh = c.responseHeaders;
    w.u32(sh.length >>> 1);
    for (let i = 0; i + 1 < sh.length; i += 2) {
      w.latin1(sh[i]!);
      w.latin1(sh[i + 1]!);
    }
    const t = c.timings;
    w.f64(t.receivedAt);
    w.f64(t.dispatchedMs ?? NaN);
    w.f64(t.upstreamFirstByteMs ?? NaN);
    w.f64(t.doneMs);
    w.f64(t.addedOverheadMs);
    if (c.error !== null) {
      w.utf8(c.error.code);
      w.utf8(c.error.message);
    }
    w.body(c.requestBody);
    w.body(c.responseBody);
  }
  return w.at - at;
}

/**
 * The batch in a new ArrayBuffer of its own (to be moved to another thread). The buffer has
 * batchMaxBytes of room; the slack past the batch is what UTF-8 did not need, a few bytes per
 * header character at most.
 */
export function packCaptures(captures: readonly CaptureParts[]): Uint8Array {
  // allocUnsafeSlow: not Node's shared pool, so it can be moved; no zero-fill of the room
  // the batch takes. The slack after it is zeroed: captures' bodies are views on this buffer,
  // and whatever the memory held before (another exchange's bytes) must not ride along.
  const room = Buffer.allocUnsafeSlow(batchMaxBytes(captures));
  const written = writeBatch(captures, room, 0);
  room.fill(0, written);
  return room.subarray(0, written);
}

/** The captures of a batch; their bodies are views on `bytes`. Throws when the bytes are not a whole batch. */
export function unpackCaptures(bytes: Uint8Array): RawCapture[] {
  const r = new BatchReader(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  const count = r.u32();
  const captures: RawCapture[] = [];
  for (let k = 0; k < count; k++) {
    const exchangeId = r.utf8();
    const tenantId = r.utf8();
    const keyId = r.utf8();
    const method = r.utf8();
    const path = r.utf8();
    const query = r.utf8();
    const requestHeaders: HeaderPair[] = [];
    for (let n = r.u32(); n > 0; n--) requestHeaders.push([r.utf8(), r.utf8()]);
    const status = r.u32();
    const responseSource = SOURCES[r.u8()];
    if (responseSource === undefined) throw r.malformed('unknown response source');
    const flags = r.u8();
    const responseBodyBytes = r.f64();
    const responseHeaders: HeaderPair[] = [];
    for (let n = r.u32(); n > 0; n--) responseHeaders.push([r.latin1(), r.latin1()]);
    const orNull = (ms: number) => (Number.isNaN(ms) ? null : ms);
    const timings: ExchangeTimings = { receivedAt: r.f64(), dispatchedMs: orNull(r.f64()), upstreamFirstByteMs: orNull(r.f64()), doneMs: r.f64(), addedOverheadMs: r.f64() };
    const error = flags & HAS_ERROR ? ({ code: r.utf8(), message: r.utf8() } as GlitchError) : null;
    const requestBody = r.body();
    const responseBody = r.body();
    captures.push({
      exchangeId,
      tenantId,
      keyId,
      method,
      path,
      query,
      requestHeaders,
      requestBody,
      status,
      responseSource,
      responseHeaders,
      responseBody,
      responseBodyBytes,
      responseBodyTruncated: (flags & TRUNCATED) !== 0,
      timings,
      clientAborted: (flags & ABORTED) !== 0,
      error,
    });
  }
  r.end();
  return captures;
}

/** What a RawCapture was made of (tests; a capture built elsewhere that must cross threads). */
export function partsOf(raw: RawCapture): CaptureParts {
  return { ...raw, requestHeaders: raw.requestHeaders.flat(), responseHeaders: raw.responseHeaders.flat() };
}

class BatchWriter {
  constructor(
    private readonly buf: Buffer,
    public at: number,
  ) {}

  u8(n: number): void {
    this.buf[this.at++] = n;
  }

  u32(n: number): void {
    this.at = this.buf.writeUInt32LE(n, this.at);
  }

  f64(n: number): void {
    this.at = this.buf.writeDoubleLE(n, this.at);
  }

  /** [u32 length][UTF-8]. Short ASCII strings (most of them) are copied here: cheaper than a call into C++ each. */
  utf8(s: string): void {
    const buf = this.buf;
    const start = this.at + 4;
    let n = 0;
    if (s.length <= 64) {
      for (; n < s.length; n++) {
        const c = s.charCodeAt(n);
        if (c >= 0x80) break;
        buf[start + n] = c;
      }
    }
    if (n < s.length) n = buf.write(s, start, 'utf8');
    buf.writeUInt32LE(n, this.at);
    this.at = start + n;
  }

  /** [u32 length][bytes]: raw header bytes as they are, or a string one byte per char. */
  latin1(v: Uint8Array | string): void {
    if (typeof v !== 'string') return this.bytes(v);
    const n = this.buf.write(v, this.at + 4, 'latin1');
    this.buf.writeUInt32LE(n, this.at);
    this.at += 4 + n;
  }

  bytes(b: Uint8Array): void {
    this.buf.writeUInt32LE(b.byteLength, this.at);
    this.buf.set(b, this.at + 4);
    this.at += 4 + b.byteLength;
  }

  /** [u32 length][bytes], copied by memcpy (copyBytes): bodies are most of a batch's bytes. */
  body(b: Uint8Array): void {
    this.buf.writeUInt32LE(b.byteLength, this.at);
    copyBytes(this.buf, b, this.at + 4);
    this.at += 4 + b.byteLength;
  }
}

/**
 * `target.set(source, at)` as one memcpy. Into shared memory (the ring) V8's TypedArray#set
 * copies with relaxed atomic stores, a word at a time (a byte at a time unless source and
 * target are equally aligned): in the pipeline bench ~4 µs of the relay thread per exchange
 * of 2 × 16 KB, against ~0.85 µs per 16 KB for a memcpy on cold cache lines (docs/benchmarks.md).
 * Node's Buffer#fill with a buffer exactly as long as the range is a single memcpy in C++.
 * Safe for the ring: the reader sees the bytes only after the writer's Atomics.store of its index.
 */
function copyBytes(target: Buffer, source: Uint8Array, at: number): void {
  // fill() rejects an empty value; nothing to copy then anyway.
  if (source.byteLength !== 0) target.fill(source, at, at + source.byteLength);
}

class BatchReader {
  private at = 0;

  constructor(private readonly buf: Buffer) {}

  malformed(why: string): Error {
    return new Error(`capture batch of ${this.buf.byteLength} bytes is malformed: ${why} (at byte ${this.at})`);
  }

  private need(n: number): number {
    const from = this.at;
    if (from + n > this.buf.byteLength) throw this.malformed('a field runs past the end');
    this.at = from + n;
    return from;
  }

  u8(): number {
    return this.buf[this.need(1)]!;
  }

  u32(): number {
    return this.buf.readUInt32LE(this.need(4));
  }

  f64(): number {
    return this.buf.readDoubleLE(this.need(8));
  }

  utf8(): string {
    const n = this.u32();
    const from = this.need(n);
    return this.buf.toString('utf8', from, from + n);
  }

  latin1(): string {
    const n = this.u32();
    const from = this.need(n);
    return this.buf.toString('latin1', from, from + n);
  }

  body(): Buffer {
    const n = this.u32();
    const from = this.need(n);
    return this.buf.subarray(from, from + n);
  }

  end(): void {
    if (this.at !== this.buf.byteLength) throw this.malformed(`${this.buf.byteLength - this.at} bytes after the last capture`);
  }
}
