// How captures cross from a relay thread to the recording thread: a batch is the facts of
// every capture as one JSON string, plus all their body bytes laid end to end in one
// ArrayBuffer that is moved, not copied. Cheaper for the relay thread than the structured
// clone of each capture's objects and header arrays with one transferred buffer per body
// (which also meant one fresh allocation per body): here the relay's body buffers stay in
// its pool, and each batch costs one allocation, one copy of the bytes and one
// JSON.stringify.
import type { RawCapture } from './capture.js';

export interface CaptureBatch {
  /** JSON array of the captures without their bodies; `requestBody` and `responseBody` are byte lengths. */
  facts: string;
  /** Every capture's request body then response body, in order. */
  bodies: ArrayBuffer;
}

type CaptureFacts = Omit<RawCapture, 'requestBody' | 'responseBody'> & { requestBody: number; responseBody: number };

/** Packs captures into a batch: bodies copied into one new ArrayBuffer, so the caller may reuse its buffers at once. */
export function packCaptures(captures: readonly RawCapture[]): CaptureBatch {
  let total = 0;
  for (const c of captures) total += c.requestBody.byteLength + c.responseBody.byteLength;
  // allocUnsafeSlow: no zero-fill (every byte is written below) and its own ArrayBuffer, not Node's pool.
  const out = Buffer.allocUnsafeSlow(total);
  const facts: CaptureFacts[] = [];
  let at = 0;
  for (const c of captures) {
    out.set(c.requestBody, at);
    at += c.requestBody.byteLength;
    out.set(c.responseBody, at);
    at += c.responseBody.byteLength;
    facts.push({ ...c, requestBody: c.requestBody.byteLength, responseBody: c.responseBody.byteLength });
  }
  return { facts: JSON.stringify(facts), bodies: out.buffer as ArrayBuffer };
}

/** The captures of a batch; their bodies are views on the batch's ArrayBuffer. */
export function unpackCaptures(batch: CaptureBatch): RawCapture[] {
  const facts = JSON.parse(batch.facts) as CaptureFacts[];
  const captures: RawCapture[] = [];
  let at = 0;
  const mismatch = () => new Error(`capture batch holds ${batch.bodies.byteLength} body bytes, its facts account for more or fewer`);
  for (const f of facts) {
    if (at + f.requestBody + f.responseBody > batch.bodies.byteLength) throw mismatch();
    const requestBody = Buffer.from(batch.bodies, at, f.requestBody);
    at += f.requestBody;
    const responseBody = Buffer.from(batch.bodies, at, f.responseBody);
    at += f.responseBody;
    captures.push({ ...f, requestBody, responseBody });
  }
  if (at !== batch.bodies.byteLength) throw mismatch();
  return captures;
}
