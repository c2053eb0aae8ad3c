// packCaptures / writeBatch / unpackCaptures: a batch of captures crosses threads as one run
// of bytes (a fixed binary layout, bodies inline); what comes out must be what went in, bodies byte
// for byte.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { batchMaxBytes, packCaptures, partsOf, unpackCaptures, writeBatch, type CaptureParts } from '../src/capture-batch.js';
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
  const parts = captures.map(partsOf);
  const batch = packCaptures(parts);
  assert.equal(batch.byteOffset, 0);
  assert.equal(batch.buffer.byteLength, batchMaxBytes(parts), 'its own ArrayBuffer of batchMaxBytes (not a pool slab)');
  const moved = structuredClone(batch, { transfer: [batch.buffer as ArrayBuffer] });
  const back = unpackCaptures(moved);
  assertSameCaptures(back, captures);
  assert.equal(back[0]!.requestBody.buffer, back[2]!.responseBody.buffer, 'one ArrayBuffer for the batch');
});

test('the relay forms: flat header strings and upstream raw header bytes; the X-Glitch-Key value never crosses', () => {
  const key = 'gk_live_0123456789abcdefghijklmnopqrstuv';
  const parts: CaptureParts = {
    ...partsOf(capture(randomBytes(100), randomBytes(100))),
    requestHeaders: ['content-type', 'application/json', 'x-glitch-key', key, 'x-glitch-key', 'k', 'x-other', 'x-glitch-key'],
    // Upstream's bytes are latin1 on the wire: a byte over 0x7f stays one char.
    responseHeaders: [Buffer.from('Content-Type'), Buffer.from('text/event-stream'), Buffer.from('X-Odd'), Buffer.from([0x63, 0xe9, 0x20, 0xff])],
  };
  const batch = packCaptures([parts]);
  assert.equal(Buffer.from(batch).indexOf(key), -1, 'the key is not in the bytes');
  const [back] = unpackCaptures(batch);
  assert.deepEqual(back!.requestHeaders, [['content-type', 'application/json'], ['x-glitch-key', '[REDACTED]'], ['x-glitch-key', '[REDACTED]'], ['x-other', 'x-glitch-key']]);
  assert.deepEqual(back!.responseHeaders, [['Content-Type', 'text/event-stream'], ['X-Odd', 'c\u00e9 \u00ff']]);
});

test('writeBatch at an offset into a bigger buffer (the ring): within batchMaxBytes, bodies byte-equal from any offset into any offset', () => {
  // Multi-byte UTF-8 (header values, an error message, a long non-ASCII path): batchMaxBytes must cover them.
  const captures = [
    capture(randomBytes(300), randomBytes(40), { error: { code: 'upstream_connection_lost', message: '✓✓✓ é 𝄞' } }),
    capture(randomBytes(3), randomBytes(4), { path: `/v1/${'ü'.repeat(100)}`, requestHeaders: [['x-long', '𝄞'.repeat(80)]] }),
  ].map(partsOf);
  const max = batchMaxBytes(captures);
  const target = Buffer.alloc(max + 100, 0xee);
  const written = writeBatch(captures, target, 37);
  assert.ok(written <= max);
  assert.equal(target[36], 0xee, 'nothing before the offset');
  assert.equal(target[37 + written], 0xee, 'nothing after the batch');
  const back = unpackCaptures(target.subarray(37, 37 + written));
  assert.equal(back[1]!.path, `/v1/${'ü'.repeat(100)}`);
  assert.deepEqual(back[1]!.requestHeaders, [['x-long', '𝄞'.repeat(80)]]);
  assert.equal(back[0]!.error!.message, '✓✓✓ é 𝄞');
  assertSameCaptures(back, captures.map((p, i) => ({ ...back[i]!, requestBody: p.requestBody, responseBody: p.responseBody })));
  // Into shared memory (the ring) as into a plain buffer, from and to any byte offset.
  const shared = Buffer.from(new SharedArrayBuffer(8192));
  const pooled = randomBytes(4096);
  for (const into of [target, shared]) {
    for (let offset = 0; offset < 8; offset++) {
      const body = pooled.subarray(offset, offset + 1000 + offset);
      const one = [partsOf(capture(body, new Uint8Array(0)))];
      for (let at = 0; at < 8; at++) {
        into.fill(0xee);
        const n = writeBatch(one, into, at);
        assert.equal(into[at + n], 0xee, `nothing after the batch (offset ${offset}, at ${at})`);
        const [c] = unpackCaptures(into.subarray(at, at + n));
        assert.ok(Buffer.from(c!.requestBody).equals(body), `request body from offset ${offset}, batch at ${at}`);
        assert.equal(c!.responseBody.byteLength, 0);
      }
    }
  }
});

test('an empty batch, and bytes that are not a whole batch are refused', () => {
  assert.deepEqual(unpackCaptures(packCaptures([])), []);
  const batch = packCaptures([partsOf(capture(randomBytes(10), randomBytes(10)))]);
  assert.throws(() => unpackCaptures(batch.subarray(0, batch.byteLength - 5)), /runs past the end/);
  assert.throws(() => unpackCaptures(Buffer.concat([batch, Buffer.alloc(3)])), /3 bytes after the last capture/);
  assert.throws(() => unpackCaptures(batch.subarray(0, 10)), /runs past the end/);
  assert.throws(() => unpackCaptures(new Uint8Array(2)), /runs past the end/);
});
