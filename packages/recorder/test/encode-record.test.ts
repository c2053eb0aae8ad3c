// encodeExchangeRecord (the publisher's serializer, which never turns bodies into strings)
// must produce exactly the bytes of JSON.stringify(buildExchangeRecord(x)): the wire
// contract is the plain JSON of the record, so any difference is a bug.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { buildExchangeRecord, encodeExchangeRecord } from '@glitch/recorder';
import { decode, ExchangeRecord } from '@glitch/records';
import { capture, sseEvent, sseStream } from './captures.js';

const PREFIX = 'glitch_body_test_';

function plain(x: Parameters<typeof buildExchangeRecord>[0]): Buffer {
  return Buffer.from(JSON.stringify(buildExchangeRecord(x)), 'utf8');
}

// Every character class JSON.stringify treats specially, and UTF-8 of every length.
const TRICKY = ['"', '\\', '\\"', '\n', '\r', '\t', '\b', '\f', '\u0000', '\u0001', '\u001f', '\u007f', 'é', 'Ü', '✓', '€', '中文', '😀', '\u2028', '\u2029', '\ufeff', '</script>', '\\u0041'];

function trickyText(seed: number, length: number): string {
  let s = '';
  let k = seed;
  while (s.length < length) {
    k = (k * 1103515245 + 12345) >>> 0;
    s += k % 3 === 0 ? TRICKY[k % TRICKY.length]! : String.fromCharCode(32 + (k % 90));
  }
  return s;
}

test('byte-equal to JSON.stringify of buildExchangeRecord, for bodies with every escape and UTF-8 length', async () => {
  for (let seed = 1; seed <= 200; seed++) {
    const text = trickyText(seed, 50 + seed * 37);
    const requestBody = Buffer.from(JSON.stringify({ model: `claude-${trickyText(seed + 1, 8)}`, messages: [{ role: 'user', content: text }], metadata: { user_id: JSON.stringify({ device_id: 'd', session_id: trickyText(seed + 2, 6) }) } }));
    const stream = Buffer.from(sseEvent('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text } }) + sseStream().toString());
    const x = await capture({ requestBody, responseBody: stream, responseHeaders: [['content-type', 'text/event-stream'], ['x-note', trickyText(seed + 3, 12)]] });
    const encoded = encodeExchangeRecord(x, PREFIX);
    assert.ok(encoded.serialized.equals(plain(x)), `seed ${seed}`);
    const record = buildExchangeRecord(x);
    assert.equal(encoded.key, record.sessionId ?? record.id);
    assert.equal(encoded.id, record.id);
  }
});

test('byte-equal for raw (non-JSON) text bodies with raw control characters, invalid UTF-8, empty, non-streaming, gzip and undecodable bodies', async () => {
  const cases = [
    await capture({ requestBody: Buffer.from(trickyText(7, 5000)), responseHeaders: [['content-type', 'text/plain']], responseBody: Buffer.from(trickyText(8, 3000)) }),
    await capture({ requestBody: Buffer.concat([Buffer.from('{"model":"x","blob":"'), Buffer.from([0xff, 0xfe, 0xc3, 0x28, 0xed, 0xa0, 0x80]), randomBytes(3000), Buffer.from('"}')]), responseHeaders: [['content-type', 'application/octet-stream']], responseBody: randomBytes(2000) }),
    await capture({ requestBody: Buffer.alloc(0), status: 0, responseSource: 'none', responseHeaders: [], responseBody: Buffer.alloc(0) }),
    await capture({ responseHeaders: [['content-type', 'application/json']], responseBody: Buffer.from(JSON.stringify({ type: 'message', content: [{ type: 'text', text: trickyText(9, 400) }], usage: { input_tokens: 3, output_tokens: 4 } })) }),
    await capture({ responseHeaders: [['content-type', 'text/event-stream'], ['content-encoding', 'gzip']], responseBody: gzipSync(sseStream()) }),
    await capture({ responseHeaders: [['content-type', 'application/json'], ['content-encoding', 'zstd']], responseBody: randomBytes(500) }),
    await capture({ requestBody: Buffer.from(JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'x'.repeat(3 * 1024 * 1024) + '✓' }] })) }),
  ];
  for (const [i, x] of cases.entries()) {
    const encoded = encodeExchangeRecord(x, PREFIX);
    assert.ok(encoded.serialized.equals(plain(x)), `case ${i}`);
    const back = decode(ExchangeRecord, encoded.serialized);
    assert.ok(back.ok, `case ${i} decodes`);
  }
});

test('a header that spells the placeholder cannot move a body: the plain serialization is used instead', async () => {
  for (const value of [`${PREFIX}0`, `x"${PREFIX}0`, `${PREFIX}1`, `"${PREFIX}0"`]) {
    const x = await capture({ requestHeaders: [['x-evil', value], ['content-type', 'application/json']] });
    assert.ok(encodeExchangeRecord(x, PREFIX).serialized.equals(plain(x)), value);
  }
  await assert.rejects(async () => encodeExchangeRecord(await capture(), 'bad"prefix'), /placeholderPrefix/);
});
