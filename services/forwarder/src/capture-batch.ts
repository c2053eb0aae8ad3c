// How captures cross from a relay thread to the recording thread: a batch is one run of
// bytes, [u32 facts length][facts: JSON of the captures without bodies, UTF-8][every body],
// written straight into the capture ring (capture-ring.ts) or, when it does not fit there,
// into its own ArrayBuffer that is moved with postMessage. Either way the relay's body
// buffers stay in its pool, and a batch costs one JSON.stringify and one copy of the bytes.
import type { RawCapture } from './capture.js';

type CaptureFacts = Omit<RawCapture, 'requestBody' | 'responseBody'> & { requestBody: number; responseBody: number };

const FACTS_LENGTH_BYTES = 4;

/** Captures with their facts serialized: ready to be written somewhere. */
export interface PreparedBatch {
  readonly facts: string;
  readonly captures: readonly RawCapture[];
  readonly bodyBytes: number;
}

export function prepareBatch(captures: readonly RawCapture[]): PreparedBatch {
  let bodyBytes = 0;
  const facts: CaptureFacts[] = [];
  for (const c of captures) {
    bodyBytes += c.requestBody.byteLength + c.responseBody.byteLength;
    facts.push({ ...c, requestBody: c.requestBody.byteLength, responseBody: c.responseBody.byteLength });
  }
  return { facts: JSON.stringify(facts), captures, bodyBytes };
}

/** Room writeBatch may need (UTF-8 takes at most 3 bytes per UTF-16 unit). */
export function batchMaxBytes(p: PreparedBatch): number {
  return FACTS_LENGTH_BYTES + p.facts.length * 3 + p.bodyBytes;
}

/** Writes the batch at `target[at…]` (room for batchMaxBytes there); returns the bytes written. */
export function writeBatch(p: PreparedBatch, target: Buffer, at: number): number {
  const factsBytes = target.write(p.facts, at + FACTS_LENGTH_BYTES, 'utf8');
  target.writeUInt32LE(factsBytes, at);
  let pos = at + FACTS_LENGTH_BYTES + factsBytes;
  for (const c of p.captures) {
    target.set(c.requestBody, pos);
    pos += c.requestBody.byteLength;
    target.set(c.responseBody, pos);
    pos += c.responseBody.byteLength;
  }
  return pos - at;
}

/** The batch in a new ArrayBuffer of its own, exactly its size (to be moved to another thread). */
export function packPrepared(p: PreparedBatch): Uint8Array {
  // allocUnsafeSlow: no zero-fill (every byte is written) and its own ArrayBuffer, not Node's pool.
  const out = Buffer.allocUnsafeSlow(FACTS_LENGTH_BYTES + Buffer.byteLength(p.facts) + p.bodyBytes);
  writeBatch(p, out, 0);
  return out;
}

export function packCaptures(captures: readonly RawCapture[]): Uint8Array {
  return packPrepared(prepareBatch(captures));
}

/** The captures of a batch; their bodies are views on `bytes`. */
export function unpackCaptures(bytes: Uint8Array): RawCapture[] {
  const mismatch = (why: string) => new Error(`capture batch of ${bytes.byteLength} bytes is malformed: ${why}`);
  if (bytes.byteLength < FACTS_LENGTH_BYTES) throw mismatch('no facts length');
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const factsBytes = buf.readUInt32LE(0);
  if (FACTS_LENGTH_BYTES + factsBytes > buf.byteLength) throw mismatch('facts run past the end');
  const facts = JSON.parse(buf.toString('utf8', FACTS_LENGTH_BYTES, FACTS_LENGTH_BYTES + factsBytes)) as CaptureFacts[];
  const captures: RawCapture[] = [];
  let at = FACTS_LENGTH_BYTES + factsBytes;
  for (const f of facts) {
    if (at + f.requestBody + f.responseBody > buf.byteLength) throw mismatch('its facts account for more body bytes');
    const requestBody = buf.subarray(at, at + f.requestBody);
    at += f.requestBody;
    const responseBody = buf.subarray(at, at + f.responseBody);
    at += f.responseBody;
    captures.push({ ...f, requestBody, responseBody });
  }
  if (at !== buf.byteLength) throw mismatch('its facts account for fewer body bytes');
  return captures;
}
