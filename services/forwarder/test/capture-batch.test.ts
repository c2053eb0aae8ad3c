// packCaptures / unpackCaptures: a batch of captures crosses threads as one JSON string and
// one ArrayBuffer; what comes out must be what went in, bodies byte for byte.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { packCaptures, unpackCaptures } from '../src/capture-batch.js';
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

test('a batch round-trips: facts equal, bodies byte-equal, views into one moved ArrayBuffer', () => {
  const pooled = Buffer.alloc(64 * 1024, 7); // a relay buffer bigger than its body: only the body crosses
  const captures = [
    capture(randomBytes(17_000), randomBytes(1_300)),
    capture(new Uint8Array(0), new Uint8Array(0), { status: 0, responseSource: 'none', responseHeaders: [], error: { code: 'client_aborted', message: 'The client closed the connection.' }, clientAborted: true }),
    capture(pooled.subarray(0, 5), Buffer.from('{"type":"error"}'), { responseSource: 'glitch', status: 401, responseBodyTruncated: true, responseBodyBytes: 99 }),
  ];
  const batch = packCaptures(captures);
  assert.equal(batch.bodies.byteLength, 17_000 + 1_300 + 5 + 16);
  const back = unpackCaptures(structuredClone(batch, { transfer: [batch.bodies] }));
  assert.equal(back.length, captures.length);
  for (const [i, c] of captures.entries()) {
    const b = back[i]!;
    assert.ok(Buffer.from(b.requestBody).equals(Buffer.from(c.requestBody)), `capture ${i} request body`);
    assert.ok(Buffer.from(b.responseBody).equals(Buffer.from(c.responseBody)), `capture ${i} response body`);
    assert.deepEqual({ ...b, requestBody: null, responseBody: null }, { ...c, requestBody: null, responseBody: null }, `capture ${i} facts`);
  }
  assert.equal(back[0]!.requestBody.buffer, back[2]!.responseBody.buffer, 'one ArrayBuffer for the batch');
});

test('an empty batch, and a batch whose bytes do not match its facts is refused', () => {
  assert.deepEqual(unpackCaptures(packCaptures([])), []);
  const batch = packCaptures([capture(randomBytes(10), randomBytes(10))]);
  assert.throws(() => unpackCaptures({ facts: batch.facts, bodies: new ArrayBuffer(5) }), /body bytes/);
});
