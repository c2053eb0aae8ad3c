// buildExchangeRecord: what the forwarder captured → ExchangeRecord v1 (the Kafka contract).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { buildExchangeRecord } from '@glitch/recorder';
import { bodyToBytes, ExchangeRecord } from '@glitch/records';
import { capture, sseStream } from './captures.js';

test('secret headers are [REDACTED] (authorization, x-api-key, x-glitch-key, cookies); others kept as received', async () => {
  const r = buildExchangeRecord(
    await capture({
      requestHeaders: [
        ['host', '127.0.0.1:8787'],
        ['authorization', 'Bearer sk-ant-oat01-oauthtokenoauthtoken'],
        ['x-api-key', 'sk-ant-api03-secretsecretsecret'],
        ['x-glitch-key', 'glitch_sk_test_0123456789abcdef'],
        ['cookie', 'session=abc'],
        ['cookie', 'other=def'],
        ['proxy-authorization', 'Basic dXNlcjpwYXNz'],
        ['anthropic-beta', 'claude-code-20250219,oauth-2025-04-20'],
        ['x-stainless-lang', 'js'],
        ['x-claude-code-session-id', '5b1c8a0e-0000-4000-8000-000000000001'],
      ],
      responseHeaders: [
        ['content-type', 'text/event-stream; charset=utf-8'],
        ['set-cookie', 'a=1'],
        ['set-cookie', 'b=2'],
        ['request-id', 'req_011CTest'],
      ],
    }),
  );
  const h = r.request.headers;
  assert.equal(h['authorization'], '[REDACTED]');
  assert.equal(h['x-api-key'], '[REDACTED]');
  assert.equal(h['x-glitch-key'], '[REDACTED]');
  assert.equal(h['cookie'], '[REDACTED]', 'repeated cookie headers: one redacted value');
  assert.equal(h['proxy-authorization'], '[REDACTED]');
  assert.equal(h['anthropic-beta'], 'claude-code-20250219,oauth-2025-04-20', 'never parsed or filtered');
  assert.equal(h['x-stainless-lang'], 'js');
  assert.equal(r.response.headers['set-cookie'], '[REDACTED]');
  assert.equal(r.response.headers['request-id'], 'req_011CTest');
  const wire = JSON.stringify(r);
  for (const secret of ['sk-ant-oat01', 'sk-ant-api03', 'glitch_sk_test', 'session=abc', 'dXNlcjpwYXNz']) {
    assert.ok(!wire.includes(secret), `${secret} must not appear anywhere in the record`);
  }
});

test('bodies are kept as received: JSON as text, invalid UTF-8 as exact base64 bytes', async () => {
  const json = Buffer.from('{"model":"claude-sonnet-4-6","messages":[{"role":"user","content":"héllo \\u00e9 ✓"}],"max_tokens":5}');
  const a = buildExchangeRecord(await capture({ requestBody: json }));
  assert.equal(a.request.body.encoding, 'utf8');
  assert.equal(a.request.body.data, json.toString('utf8'), 'not re-serialized: escapes and key order kept');
  assert.equal(a.request.body.bytes, json.length);

  const binary = Buffer.concat([Buffer.from('{"model":"x","blob":"'), Buffer.from([0xff, 0xfe, 0xc3, 0x28, 0xed, 0xa0, 0x80]), randomBytes(3000), Buffer.from('"}')]);
  const responseBody = Buffer.concat([randomBytes(2000), Buffer.from([0xc3, 0x28])]);
  const b = buildExchangeRecord(await capture({ requestBody: binary, responseHeaders: [['content-type', 'application/octet-stream']], responseBody }));
  assert.equal(b.request.body.encoding, 'base64');
  assert.deepEqual(bodyToBytes(b.request.body), binary);
  assert.deepEqual(bodyToBytes(b.response.body), responseBody);
  assert.equal(b.response.events, null);
  assert.equal(b.model, null, 'not JSON: no model');
});

test('SSE: the reassembled message is the body, the raw event stream is kept byte for byte, usage from both usage events', async () => {
  const stream = sseStream({ input: 321, output: 45, cacheRead: 6000, cacheWrite: 12 });
  const r = buildExchangeRecord(await capture({ responseBody: stream }));
  assert.equal(r.stream, true);
  assert.deepEqual(bodyToBytes(r.response.events!), stream);
  const message = JSON.parse(bodyToBytes(r.response.body).toString()) as { content: { type: string; text: string }[]; stop_reason: string; usage: { output_tokens: number } };
  assert.deepEqual(message.content, [{ type: 'text', text: 'Hi there' }]);
  assert.equal(message.stop_reason, 'end_turn');
  assert.deepEqual(r.usage, { inputTokens: 321, outputTokens: 45, cacheReadInputTokens: 6000, cacheCreationInputTokens: 12 });
  assert.equal(r.model, 'claude-sonnet-4-6');
  assert.equal(r.route, '/v1/messages');
  assert.equal(r.query, 'beta=true');
  assert.equal(r.error, null);
  assert.equal(r.response.bodyTruncated, false);
  assert.equal(r.response.bodyWireBytes, stream.length);
  ExchangeRecord.parse(JSON.parse(JSON.stringify(r)));
});

test('a response cut at the capture limit: the record says so, with the full size; what was kept is reassembled', async () => {
  const stream = sseStream();
  const kept = stream.subarray(0, stream.indexOf('there')); // mid-event, inside the second text delta
  const x = await capture({ responseBody: kept, responseBodyBytes: stream.length, responseBodyTruncated: true });
  assert.ok(x.sse!.problems.includes(`response body truncated at ${kept.length} of ${stream.length} bytes`), x.sse!.problems.join('; '));
  const r = buildExchangeRecord(x);
  assert.equal(r.response.bodyTruncated, true);
  assert.equal(r.response.bodyWireBytes, stream.length);
  assert.deepEqual(bodyToBytes(r.response.events!), kept);
  const message = JSON.parse(bodyToBytes(r.response.body).toString()) as { content: { text: string }[] };
  assert.equal(message.content[0]?.text, 'Hi ');
  assert.equal(r.usage?.inputTokens, 120);
  assert.equal(r.error, null, 'a truncated capture is not an error of the exchange');

  // Content-encoded: the wire size is upstream's (compressed) size; the kept part decodes as far as it goes.
  const json = Buffer.from(JSON.stringify({ type: 'file', data: 'x'.repeat(200_000) + randomBytes(50_000).toString('hex') }));
  const gz = gzipSync(json);
  const cut = gz.subarray(0, Math.floor(gz.length / 2));
  const g = buildExchangeRecord(
    await capture({ responseHeaders: [['content-type', 'application/json'], ['content-encoding', 'gzip']], responseBody: cut, responseBodyBytes: gz.length, responseBodyTruncated: true }),
  );
  assert.equal(g.response.bodyTruncated, true);
  assert.equal(g.response.bodyWireBytes, gz.length);
  const decoded = bodyToBytes(g.response.body);
  assert.ok(decoded.length > cut.length && json.subarray(0, decoded.length).equals(decoded), 'a prefix of the decoded body');
  assert.equal(g.error, null);
  assert.equal(g.usage, null);
});

test('a gzip-encoded SSE response is decoded for the record (the client got the gzip bytes)', async () => {
  const stream = sseStream({ input: 9, output: 2 });
  const r = buildExchangeRecord(
    await capture({
      responseHeaders: [
        ['content-type', 'text/event-stream'],
        ['content-encoding', 'gzip'],
      ],
      responseBody: gzipSync(stream),
    }),
  );
  assert.deepEqual(bodyToBytes(r.response.events!), stream);
  assert.deepEqual(r.usage, { inputTokens: 9, outputTokens: 2, cacheReadInputTokens: 3000, cacheCreationInputTokens: 40 });
  assert.equal(r.error, null);
});

test('an undecodable content-encoding keeps upstream bytes and says so in error', async () => {
  const bytes = randomBytes(500);
  const r = buildExchangeRecord(await capture({ responseHeaders: [['content-type', 'application/json'], ['content-encoding', 'zstd']], responseBody: bytes }));
  assert.deepEqual(bodyToBytes(r.response.body), bytes);
  assert.equal(r.error?.code, 'undecodable_response');
});

test('non-streaming: the JSON body as received and its usage', async () => {
  const body = Buffer.from(
    JSON.stringify({ id: 'msg_1', type: 'message', role: 'assistant', model: 'claude-haiku-4-5', content: [{ type: 'text', text: 'ok' }], stop_reason: 'end_turn', usage: { input_tokens: 11, output_tokens: 3, cache_read_input_tokens: 0, cache_creation_input_tokens: 5 } }),
  );
  const r = buildExchangeRecord(await capture({ responseHeaders: [['content-type', 'application/json']], responseBody: body }));
  assert.equal(r.stream, false);
  assert.equal(r.response.body.data, body.toString());
  assert.equal(r.response.events, null);
  assert.deepEqual(r.usage, { inputTokens: 11, outputTokens: 3, cacheReadInputTokens: 0, cacheCreationInputTokens: 5 });
});

test('timings: received time (epoch ms), upstream first byte, done, added overhead', async () => {
  const r = buildExchangeRecord(await capture({ timings: { receivedAt: 1_760_000_000_123.7, dispatchedMs: 1, upstreamFirstByteMs: 250.5, doneMs: 1800.25, addedOverheadMs: 0.42 } }));
  assert.deepEqual(r.timings, { receivedAt: 1_760_000_000_124, upstreamFirstByteMs: 250.5, doneMs: 1800.25, addedOverheadMs: 0.42 });
  const none = buildExchangeRecord(await capture({ status: 0, responseSource: 'none', responseHeaders: [], responseBody: Buffer.alloc(0), timings: { receivedAt: 1_760_000_000_000, dispatchedMs: null, upstreamFirstByteMs: null, doneMs: 3, addedOverheadMs: 0.1 } }));
  assert.equal(none.timings.upstreamFirstByteMs, null);
  assert.equal(none.response.status, 0);
});

test('session id from X-Claude-Code-Session-Id, else from metadata.user_id; device id from metadata.user_id', async () => {
  const userId = JSON.stringify({ device_id: 'd'.repeat(64), account_uuid: 'acc-1', session_id: '11111111-2222-4333-8444-555555555555' });
  const body = Buffer.from(JSON.stringify({ model: 'claude-opus-4-7', messages: [], metadata: { user_id: userId }, stream: true }));
  const withHeader = buildExchangeRecord(await capture({ sessionId: 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee', requestBody: body }));
  assert.equal(withHeader.sessionId, 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee', 'the header wins');
  assert.equal(withHeader.deviceId, 'd'.repeat(64));
  assert.equal(withHeader.model, 'claude-opus-4-7');
  const fromBody = buildExchangeRecord(await capture({ sessionId: null, requestBody: body }));
  assert.equal(fromBody.sessionId, '11111111-2222-4333-8444-555555555555');
  const none = buildExchangeRecord(await capture({ sessionId: null }));
  assert.equal(none.sessionId, null);
  assert.equal(none.deviceId, null);
  // Header names arrive lower-cased from the HTTP parser, but a mixed-case name still counts.
  const mixed = buildExchangeRecord(await capture({ sessionId: null, requestHeaders: [['X-Claude-Code-Session-Id', 'abc']] }));
  assert.equal(mixed.sessionId, 'abc');
});

test('client aborted mid-stream: flag set, partial events kept, the partial message reassembled', async () => {
  const partial = sseStream({ stopAfter: 4 }); // message_start … first text delta
  const r = buildExchangeRecord(await capture({ responseBody: partial, clientAborted: true, error: { code: 'client_aborted', message: 'The client closed the connection.' } }));
  assert.equal(r.clientAborted, true);
  assert.deepEqual(bodyToBytes(r.response.events!), partial);
  const message = JSON.parse(bodyToBytes(r.response.body).toString()) as { content: { text: string }[] };
  assert.equal(message.content[0]?.text, 'Hi ');
  assert.equal(r.usage?.inputTokens, 120, 'usage known from message_start');
  assert.equal(r.error?.code, 'client_aborted');
});
