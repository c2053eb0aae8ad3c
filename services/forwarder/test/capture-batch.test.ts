// packCaptures / writeBatch / unpackCaptures: a batch of captures crosses threads as one run
// of bytes (facts as JSON, then the bodies); what comes out must be what went in, bodies byte
// for byte.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { batchMaxBytes, packCaptures, prepareBatch, unpackCaptures, writeBatch } from '../src/capture-batch.js';
import type { RawCapture } from '../src/capture.js';

function capture(requestBody: Uint8Array, responseBody: Uint8Array, extra: Partial<RawCapture> = {}): RawCapture {
  return {
    exchangeId: '019ae6d4-1b2c-7def-8123-456789abcdef',
    tenantId: 'acme',
    keyId: 'key-1',
    method: 'POST',
    path: '/v1/messages',
    query: 'beta=true',
    requestHeaders: [['content-type', 'application/json'], ['x-glitch-key', '[REDACTED]'], ['x-note', 'é ✓ "quoted" \\ \u0000']],
    requestBody,
    status: 200,
    responseSource: 'upstream',
    responseHeaders: [['Content-Type', 'text/event-stream'], ['set-cookie', 'a=1'], ['set-cookie', 'b=2']],
    responseBody,
    responseBodyBytes: responseBody.byteLength,
    responseBodyTruncated: false,
    timings: { receivedAt: 1_760_000_000_123, dispatchedMs: 0.25, upstreamFirstByteMs: null, doneMs: 12.5, addedOverheadMs: 0.125 },
    clientAborted: false,
    error: null,
    ...extra,
  };
}

function assertSameCaptures(back: RawCapture[], captures: RawCapture[]): void {
  assert.equal(back.length, captures.length);
  for (const [i, c] of captures.entries()) {
    const b = back[i]!;
    assert.ok(Buffer.from(b.requestBody).equals(Buffer.from(c.requestBody)), `capture ${i} request body`);
    assert.ok(Buffer.from(b.responseBody).equals(Buffer.from(c.responseBody)), `capture ${i} response body`);
    assert.deepEqual({ ...b, requestBody: null, responseBody: null }, { ...c, requestBody: null, responseBody: null }, `capture ${i} facts`);
  }
}

test('a batch round-trips: facts equal, bodies byte-equal, views into one moved ArrayBuffer', () => {
  const pooled = Buffer.alloc(64 * 1024, 7); // a relay buffer bigger than its body: only the body crosses
  const captures = [
    capture(randomBytes(17_000), randomBytes(1_300)),
    capture(new Uint8Array(0), new Uint8Array(0), { status: 0, responseSource: 'none', responseHeaders: [], error: { code: 'client_aborted', message: 'The client closed the connection.' }, clientAborted: true }),
    capture(pooled.subarray(0, 5), Buffer.from('{"type":"error"}'), { responseSource: 'glitch', status: 401, responseBodyTruncated: true, responseBodyBytes: 99 }),
  ];
  const batch = packCaptures(captures);
  assert.equal(batch.byteLength, batch.buffer.byteLength, 'the batch owns its whole ArrayBuffer (it is moved)');
  const moved = structuredClone(batch.buffer as ArrayBuffer, { transfer: [batch.buffer as ArrayBuffer] });
  const back = unpackCaptures(new Uint8Array(moved));
  assertSameCaptures(back, captures);
  assert.equal(back[0]!.requestBody.buffer, back[2]!.responseBody.buffer, 'one ArrayBuffer for the batch');
});

test('writeBatch at an offset into a bigger buffer (the ring) writes what packCaptures does, within batchMaxBytes', () => {
  // Facts with multi-byte UTF-8 (header values, an error message): batchMaxBytes must cover them.
  const captures = [capture(randomBytes(300), randomBytes(40), { error: { code: 'upstream_connection_lost', message: '✓✓✓ é 𝄞' } })];
  const prepared = prepareBatch(captures);
  const target = Buffer.alloc(batchMaxBytes(prepared) + 100, 0xee);
  const written = writeBatch(prepared, target, 37);
  assert.ok(written <= batchMaxBytes(prepared));
  assert.ok(target.subarray(37, 37 + written).equals(Buffer.from(packCaptures(captures))));
  assert.equal(target[36], 0xee, 'nothing before the offset');
  assert.equal(target[37 + written], 0xee, 'nothing after the batch');
  assertSameCaptures(unpackCaptures(target.subarray(37, 37 + written)), captures);
});

test('an empty batch, and a batch whose bytes do not match its facts is refused', () => {
  assert.deepEqual(unpackCaptures(packCaptures([])), []);
  const batch = packCaptures([capture(randomBytes(10), randomBytes(10))]);
  assert.throws(() => unpackCaptures(batch.subarray(0, batch.byteLength - 5)), /more body bytes/);
  assert.throws(() => unpackCaptures(Buffer.concat([batch, Buffer.alloc(3)])), /fewer body bytes/);
  assert.throws(() => unpackCaptures(batch.subarray(0, 10)), /facts run past the end/);
  assert.throws(() => unpackCaptures(new Uint8Array(2)), /no facts length/);
});
