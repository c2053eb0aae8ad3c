// The forwarder on real sockets against a local node:http upstream.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { DEFAULT_RESPONSE_CAPTURE_LIMIT_BYTES, startForwarder, type CapturedExchange, type RunningForwarder, type StaticKey } from '../src/index.js';
import { eventually, header, send, sleep, sseEvent, startUpstream, type TestUpstream } from './helpers.js';

const KEY: StaticKey = { id: 'key-1', tenantId: 'tenant-a', secret: 'glitch_sk_test_0123456789abcdef' };
const GLITCH = { 'x-glitch-key': KEY.secret! };

/** The first record (arrival order varies: completion is asynchronous) that matches. */
async function recordWhere(records: CapturedExchange[], match: (r: CapturedExchange) => boolean): Promise<CapturedExchange> {
  await eventually(() => records.some(match), 3_000, 'record');
  return records.find(match)!;
}

function errorOf(body: Buffer): { type: string; error: { type: string; message: string }; request_id: string } {
  return JSON.parse(body.toString('utf8'));
}

const MESSAGE_STREAM = [
  sseEvent('message_start', {
    type: 'message_start',
    message: { id: 'msg_1', type: 'message', role: 'assistant', model: 'claude-x', content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: 10, output_tokens: 1, cache_read_input_tokens: 5, cache_creation_input_tokens: 0 } },
  }),
  sseEvent('content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }),
  sseEvent('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Hi ' } }),
  sseEvent('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'there' } }),
  sseEvent('content_block_stop', { type: 'content_block_stop', index: 0 }),
  sseEvent('message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 3 } }),
  sseEvent('message_stop', { type: 'message_stop' }),
];

describe('forwarder (1 thread)', () => {
  let up: TestUpstream;
  let fwd: RunningForwarder;
  const records: CapturedExchange[] = [];

  before(async () => {
    up = await startUpstream();
    fwd = await startForwarder({
      port: 0,
      adminPort: 0,
      upstreamUrl: up.url,
      keys: [KEY, { id: 'key-2', tenantId: 'tenant-b', secretSha256: 'a'.repeat(64) }],
      recorder: { record: (e) => records.push(e) },
      bodyLimitBytes: 1024 * 1024,
      firstByteTimeoutMs: 300,
    });
  });
  after(async () => {
    await fwd.stop(1_000);
    await up.close();
  });

  it('answers a missing or unknown X-Glitch-Key with an Anthropic-shaped 401 and never calls upstream', async () => {
    const before = up.seen.length;
    for (const headers of [{}, { 'x-glitch-key': 'glitch_sk_unknown_key_123' }] as Record<string, string>[]) {
      const r = await send(`${fwd.url}/v1/messages?beta=true`, { headers, body: '{}' });
      assert.equal(r.status, 401);
      const e = errorOf(r.body);
      assert.equal(e.type, 'error');
      assert.equal(e.error.type, 'authentication_error');
      assert.ok(e.error.message.length > 0);
      assert.equal(r.headers['request-id'], e.request_id);
      assert.match(r.headers['content-type'] as string, /application\/json/);
    }
    assert.equal(up.seen.length, before);
  });

  it('relays method, path, query, headers and body bytes exactly; X-Glitch-Key never goes upstream', async () => {
    const body = Buffer.concat([Buffer.from('{"model":"x","bad":"'), Buffer.from([0xff, 0xfe, 0xc3, 0x28, 0x00, 0xed, 0xa0, 0x80]), randomBytes(5000), Buffer.from('"}')]);
    const responseBody = Buffer.concat([randomBytes(3000), Buffer.from([0xc3, 0x28])]);
    up.handle((_req, res) => {
      res.writeHead(200, 'Fine Thanks', { 'Content-Type': 'application/json', 'Content-Length': String(responseBody.length), 'X-Upstream-Case': 'KeepMe', 'request-id': 'req_up_1' });
      res.end(responseBody);
    });
    const r = await send(`${fwd.url}/v1/messages?beta=true&x=%2Fy`, {
      headers: {
        ...GLITCH,
        'x-api-key': 'sk-ant-api03-client-key',
        authorization: 'Bearer sk-ant-oat01-token',
        'anthropic-beta': 'claude-code-20250219,oauth-2025-04-20',
        'accept-encoding': 'gzip, deflate, br, zstd',
        'content-type': 'application/json',
        'x-claude-code-session-id': 'sess-1',
      },
      body,
    });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, responseBody);
    assert.equal(r.headers['content-length'], String(responseBody.length));
    assert.equal(header(r.rawHeaders, 'x-upstream-case'), 'KeepMe');
    assert.equal(r.headers['request-id'], 'req_up_1');

    const seen = up.seen.at(-1)!;
    assert.equal(seen.method, 'POST');
    assert.equal(seen.url, '/v1/messages?beta=true&x=%2Fy');
    assert.deepEqual(seen.body, body);
    assert.equal(header(seen.rawHeaders, 'x-glitch-key'), undefined);
    assert.equal(header(seen.rawHeaders, 'x-api-key'), 'sk-ant-api03-client-key');
    assert.equal(header(seen.rawHeaders, 'authorization'), 'Bearer sk-ant-oat01-token');
    assert.equal(header(seen.rawHeaders, 'anthropic-beta'), 'claude-code-20250219,oauth-2025-04-20');
    assert.equal(header(seen.rawHeaders, 'anthropic-version'), '2023-06-01');
    assert.equal(header(seen.rawHeaders, 'accept-encoding'), 'gzip, deflate, br');
    assert.equal(header(seen.rawHeaders, 'x-claude-code-session-id'), 'sess-1');
    assert.equal(header(seen.rawHeaders, 'content-length'), String(body.length));
  });

  it('keeps a client anthropic-version and relays chunked request bodies', async () => {
    up.handle((_req, res, b) => res.end(b));
    const body = randomBytes(70_000);
    const r = await send(`${fwd.url}/v1/messages/count_tokens`, { headers: { ...GLITCH, 'anthropic-version': '2099-12-31' }, body, chunked: true });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, body);
    const seen = up.seen.at(-1)!;
    assert.equal(header(seen.rawHeaders, 'anthropic-version'), '2099-12-31');
    assert.deepEqual(seen.body, body);
  });

  it('relays HEAD /api/hello and HEAD / without a Glitch key, and records neither', async () => {
    up.handle((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '123' });
      res.end();
    });
    for (const path of ['/api/hello', '/']) {
      const r = await send(fwd.url + path, { method: 'HEAD' });
      assert.equal(r.status, 200, path);
      assert.equal(r.headers['content-length'], '123');
      assert.equal(up.seen.at(-1)!.url, path);
    }
    const r = await send(`${fwd.url}/v1/models`, { method: 'HEAD' });
    assert.equal(r.status, 401, 'other HEAD requests need a key');
    await sleep(50);
    assert.ok(!records.some((x) => x.method === 'HEAD'));
  });

  it('relays GET /v1/models with a key', async () => {
    up.handle((_req, res) => res.end('{"data":[]}'));
    const r = await send(`${fwd.url}/v1/models?limit=5`, { headers: GLITCH });
    assert.equal(r.status, 200);
    assert.equal(r.body.toString(), '{"data":[]}');
    assert.equal(up.seen.at(-1)!.url, '/v1/models?limit=5');
  });

  it('streams SSE event by event and records the reassembled message and usage', async () => {
    let sent = 0;
    up.handle((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'request-id': 'req_sse' });
      const next = (): void => {
        if (sent === MESSAGE_STREAM.length) return void res.end();
        res.write(MESSAGE_STREAM[sent++]);
        setTimeout(next, 30);
      };
      next();
    });
    const got: Array<{ at: number; upstreamSent: number }> = [];
    const body = await new Promise<string>((resolve, reject) => {
      const req = httpRequest(`${fwd.url}/v1/messages?beta=true`, { method: 'POST', headers: { ...GLITCH, 'content-type': 'application/json' }, agent: false }, (res) => {
        assert.equal(res.headers['content-type'], 'text/event-stream; charset=utf-8');
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          got.push({ at: Date.now(), upstreamSent: sent });
          text += c;
        });
        res.on('end', () => resolve(text));
      });
      req.on('error', reject);
      req.end('{"stream":true}');
    });
    assert.equal(body, MESSAGE_STREAM.join(''));
    // Each event reached the client while upstream was still producing the next ones.
    assert.ok(got.length >= MESSAGE_STREAM.length - 1, `client saw ${got.length} chunks`);
    assert.ok(got[0]!.upstreamSent < MESSAGE_STREAM.length);

    const rec = await recordWhere(records, (x) => x.query === 'beta=true' && x.stream && x.responseBody.byteLength === MESSAGE_STREAM.join('').length);
    assert.equal(rec.tenantId, 'tenant-a');
    assert.equal(rec.keyId, 'key-1');
    assert.equal(rec.path, '/v1/messages');
    assert.equal(rec.query, 'beta=true');
    assert.equal(rec.status, 200);
    assert.equal(Buffer.from(rec.requestBody).toString(), '{"stream":true}');
    assert.equal(Buffer.from(rec.responseBody).toString(), MESSAGE_STREAM.join(''));
    assert.equal(rec.responseBodyBytes, rec.responseBody.byteLength);
    assert.equal(rec.responseBodyTruncated, false);
    assert.deepEqual(rec.sse?.usage, { inputTokens: 10, outputTokens: 3, cacheReadInputTokens: 5, cacheCreationInputTokens: 0 });
    assert.deepEqual((rec.sse?.message as { content: unknown }).content, [{ type: 'text', text: 'Hi there' }]);
    assert.equal(rec.sse?.complete, true);
    assert.equal(rec.clientAborted, false);
    assert.equal(rec.error, null);
    assert.match(rec.exchangeId, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.deepEqual(rec.requestHeaders.find(([n]) => n === 'x-glitch-key'), ['x-glitch-key', '[REDACTED]']);
    const t = rec.timings;
    assert.ok(t.dispatchedMs !== null && t.upstreamFirstByteMs !== null && t.upstreamFirstByteMs >= t.dispatchedMs && t.doneMs >= t.upstreamFirstByteMs);
    assert.ok(t.addedOverheadMs >= 0 && t.addedOverheadMs < t.doneMs);
  });

  it('gives the client upstream gzip bytes untouched and records the decoded stream', async () => {
    const gz = gzipSync(Buffer.from(MESSAGE_STREAM.join('')));
    up.handle((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'content-encoding': 'gzip' });
      res.write(gz.subarray(0, 20));
      setTimeout(() => res.end(gz.subarray(20)), 20);
    });
    const r = await send(`${fwd.url}/v1/messages`, { headers: { ...GLITCH, 'accept-encoding': 'gzip' }, body: '{}' });
    assert.deepEqual(r.body, gz);
    assert.equal(r.headers['content-encoding'], 'gzip');
    const rec = await recordWhere(records, (x) => x.contentEncoding === 'gzip');
    assert.deepEqual(Buffer.from(rec.responseBody), gz);
    assert.equal(rec.contentEncoding, 'gzip');
    assert.equal(Buffer.from(rec.decodedResponseBody!).toString(), MESSAGE_STREAM.join(''));
    assert.equal(rec.usage?.outputTokens, 3);
  });

  it('rejects an oversized body with 413 request_too_large, by Content-Length and while streaming', async () => {
    const before = up.seen.length;
    const big = Buffer.alloc(1024 * 1024 + 1, 0x61);
    // By Content-Length: answered from the headers alone, before the body (a client that
    // reads while it uploads gets the 413; the connection is then closed).
    const sock = connect(fwd.port, '127.0.0.1');
    await new Promise<void>((r) => sock.once('connect', () => r()));
    let answer = '';
    sock.setEncoding('latin1').on('data', (d: string) => (answer += d));
    const closed = new Promise<void>((r) => sock.once('close', () => r()));
    sock.on('error', () => {}); // the forwarder may reset while the rest is unread
    sock.write(`POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-glitch-key: ${KEY.secret}\r\ncontent-length: ${big.length}\r\n\r\n${'a'.repeat(1024)}`);
    await Promise.race([closed, eventually(() => answer.includes('request_too_large'), 5_000, 'the 413')]);
    assert.match(answer, /^HTTP\/1\.1 413 /);
    assert.equal(errorOf(Buffer.from(answer.slice(answer.indexOf('\r\n\r\n') + 4))).error.type, 'request_too_large');
    sock.destroy();
    // A client that sends the whole oversized body before it reads may see the reset instead.
    for (const chunked of [false, true]) {
      const r = await send(`${fwd.url}/v1/messages`, { headers: GLITCH, body: big, chunked }).catch((e: Error) => e);
      if (!(r instanceof Error)) {
        assert.equal(r.status, 413, `chunked ${chunked}`);
        assert.equal(errorOf(r.body).error.type, 'request_too_large');
      } else assert.match((r as NodeJS.ErrnoException).code ?? '', /^(EPIPE|ECONNRESET)$/, `chunked ${chunked}: ${r.message}`);
    }
    assert.equal(up.seen.length, before);
  });

  it('answers 431 when the headers exceed the limit', async () => {
    const f = await startForwarder({ port: 0, adminPort: 0, upstreamUrl: up.url, keys: [KEY], headerLimitBytes: 2048 });
    try {
      const r = await send(`${f.url}/v1/messages`, { headers: { ...GLITCH, 'x-big': 'b'.repeat(3000) }, body: '{}' });
      assert.equal(r.status, 431);
      assert.equal(errorOf(r.body).error.type, 'request_too_large');
    } finally {
      await f.stop(100);
    }
  });

  it('answers 504 api_error when upstream sends no first byte in time', async () => {
    up.handle(() => {
      /* never answers */
    });
    const started = Date.now();
    const r = await send(`${fwd.url}/v1/messages`, { headers: GLITCH, body: '{}' });
    assert.equal(r.status, 504);
    const e = errorOf(r.body);
    assert.equal(e.error.type, 'api_error');
    assert.equal(r.headers['x-glitch-error'], 'upstream_first_byte_timeout');
    assert.ok(Date.now() - started >= 250, 'waited for the timeout');
    const rec = await recordWhere(records, (x) => x.error?.code === 'upstream_first_byte_timeout');
    assert.equal(rec.status, 504);
    assert.equal(rec.responseSource, 'glitch');
    assert.equal(errorOf(Buffer.from(rec.responseBody)).request_id, rec.exchangeId);
    assert.equal(rec.responseBodyBytes, rec.responseBody.byteLength, "Glitch's own answer: its length");
    assert.equal(rec.responseBodyTruncated, false);
  });

  it('propagates a client abort to upstream at once and records it', async () => {
    up.handle((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(MESSAGE_STREAM[0]);
      const t = setInterval(() => res.write(': keep-alive\n\n'), 50);
      res.on('close', () => clearInterval(t));
    });
    const seenBefore = up.seen.length;
    const req = httpRequest(`${fwd.url}/v1/messages`, { method: 'POST', headers: GLITCH, agent: false });
    req.on('error', () => {});
    req.end('{}');
    await new Promise<void>((resolve) => req.on('response', (res) => res.once('data', () => resolve())));
    await eventually(() => up.seen.length > seenBefore, 1_000, 'upstream request');
    const upstreamReq = up.seen.at(-1)!;
    const t0 = Date.now();
    req.destroy();
    await upstreamReq.aborted;
    assert.ok(Date.now() - t0 < 500, `upstream saw the abort after ${Date.now() - t0} ms`);
    const rec = await recordWhere(records, (x) => x.clientAborted);
    assert.equal(rec.error?.code, 'client_aborted');
    assert.equal(rec.status, 200);
  });

  it('closes the client connection when upstream fails mid-stream, and records the error', async () => {
    up.handle((req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(MESSAGE_STREAM[0]);
      setTimeout(() => req.socket.destroy(), 50);
    });
    const outcome = await new Promise<string>((resolve) => {
      const req = httpRequest(`${fwd.url}/v1/messages`, { method: 'POST', headers: GLITCH, agent: false }, (res) => {
        res.on('data', () => {});
        res.on('end', () => resolve('end'));
        res.on('error', (e) => resolve(`error ${(e as NodeJS.ErrnoException).code ?? e.message}`));
        res.on('aborted', () => resolve('aborted'));
      });
      req.on('error', (e) => resolve(`req error ${e.message}`));
      req.end('{}');
    });
    assert.notEqual(outcome, 'end', 'a cut stream must not look complete');
    await recordWhere(records, (x) => x.error?.code === 'upstream_stream_interrupted');
  });

  it('keeps memory bounded for a slow client: upstream is paused, not buffered', async () => {
    const total = 256 * 1024 * 1024;
    let written = 0;
    let upstreamDone = false;
    up.handle((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' }); // chunked: res.write path
      const chunk = Buffer.alloc(64 * 1024, 0x62);
      const pump = (): void => {
        while (written < total) {
          written += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        upstreamDone = true;
        res.end();
      };
      pump();
    });
    const sock = connect(fwd.port, '127.0.0.1');
    await new Promise<void>((r) => sock.once('connect', () => r()));
    sock.write(`GET /v1/files/big HTTP/1.1\r\nhost: x\r\nx-glitch-key: ${KEY.secret}\r\n\r\n`);
    sock.pause();
    await sleep(1_500);
    const stalledAt = written;
    assert.ok(!upstreamDone);
    assert.ok(stalledAt < 48 * 1024 * 1024, `upstream pushed ${stalledAt} bytes into a stalled client`);
    let received = 0;
    sock.on('data', (d: Buffer) => (received += d.length));
    sock.resume();
    await eventually(() => upstreamDone && received >= total, 30_000, 'the full body');
    sock.destroy();
    // The capture stops at the default limit; the record says how much there was.
    const rec = await recordWhere(records, (x) => x.path === '/v1/files/big');
    assert.equal(rec.responseBody.byteLength, DEFAULT_RESPONSE_CAPTURE_LIMIT_BYTES);
    assert.equal(rec.responseBodyBytes, total);
    assert.equal(rec.responseBodyTruncated, true);
  });

  it('answers 502 api_error when upstream is unreachable', async () => {
    const dead = await startUpstream();
    await dead.close();
    const f = await startForwarder({ port: 0, adminPort: 0, upstreamUrl: dead.url, keys: [KEY] });
    try {
      const r = await send(`${f.url}/v1/messages`, { headers: GLITCH, body: '{}' });
      assert.equal(r.status, 502);
      assert.equal(errorOf(r.body).error.type, 'api_error');
      assert.equal(r.headers['x-glitch-error'], 'upstream_connect_failed');
    } finally {
      await f.stop(100);
    }
  });

  it('serves health, readiness and Prometheus metrics on the admin port', async () => {
    const h = await send(`${fwd.adminUrl}/healthz`);
    assert.equal(h.status, 200);
    const ready = await send(`${fwd.adminUrl}/readyz`);
    assert.equal(ready.status, 200);
    const m = (await send(`${fwd.adminUrl}/metrics`)).body.toString();
    assert.match(m, /glitch_forwarder_requests_total\{route="\/v1\/messages",status="401"\} \d+/);
    assert.match(m, /glitch_forwarder_requests_total\{route="\/v1\/messages",status="200"\} \d+/);
    assert.match(m, /glitch_forwarder_upstream_latency_seconds_bucket\{le="\+Inf"\} \d+/);
    assert.match(m, /glitch_forwarder_added_latency_seconds_count \d+/);
    assert.match(m, /glitch_forwarder_open_streams 0/);
    assert.match(m, /glitch_forwarder_bytes_total\{direction="in"\} [1-9]\d*/);
    assert.match(m, /glitch_forwarder_errors_total\{code="auth_missing"\} \d+/);
    assert.ok(!m.includes(KEY.secret!), 'no key in metrics');
  });
});

describe('forwarder (2 threads, port 0)', () => {
  let up: TestUpstream;
  let fwd: RunningForwarder;
  const records: CapturedExchange[] = [];

  before(async () => {
    up = await startUpstream();
    fwd = await startForwarder({ port: 0, adminPort: 0, threads: 2, upstreamUrl: up.url, keys: [KEY], recorder: { record: (e) => records.push(e) } });
  });
  after(async () => {
    await fwd.stop(1_000);
    await up.close();
  });

  it('listens on one port with both threads, relays, records and aggregates metrics', async () => {
    assert.ok(fwd.port > 0);
    up.handle((_req, res, b) => res.end(b));
    const bodies = Array.from({ length: 40 }, (_, i) => randomBytes(100 + i));
    const replies = await Promise.all(bodies.map((b) => send(`${fwd.url}/v1/messages?beta=true`, { headers: GLITCH, body: b })));
    replies.forEach((r, i) => {
      assert.equal(r.status, 200);
      assert.deepEqual(r.body, bodies[i]);
    });
    await eventually(() => records.length === 40, 3_000, '40 records');
    const sizes = records.map((r) => r.requestBody.byteLength).sort((a, b) => a - b);
    assert.deepEqual(sizes, bodies.map((b) => b.length).sort((a, b) => a - b));
    const m = (await send(`${fwd.adminUrl}/metrics`)).body.toString();
    assert.match(m, /glitch_forwarder_requests_total\{route="\/v1\/messages",status="200"\} 40\n/);
    assert.match(m, /glitch_forwarder_threads 2\n/);
  });
});

describe('forwarder stop', () => {
  it('stops accepting, lets an in-flight stream finish, then resolves', async () => {
    const up = await startUpstream();
    const fwd = await startForwarder({ port: 0, adminPort: 0, upstreamUrl: up.url, keys: [KEY] });
    up.handle((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      let i = 0;
      const t = setInterval(() => {
        res.write(MESSAGE_STREAM[i++]);
        if (i === MESSAGE_STREAM.length) {
          clearInterval(t);
          res.end();
        }
      }, 60);
    });
    try {
      const done = send(`${fwd.url}/v1/messages`, { headers: GLITCH, body: '{}' });
      await eventually(() => up.seen.length === 1, 1_000, 'upstream request');
      const stopped = fwd.stop(10_000);
      await sleep(50);
      const refused = await send(`${fwd.url}/v1/messages`, { headers: GLITCH, body: '{}' }).catch((e: NodeJS.ErrnoException) => e.code);
      assert.equal(refused, 'ECONNREFUSED');
      const notReady = await send(`${fwd.adminUrl}/readyz`).catch(() => null);
      if (notReady) assert.equal(notReady.status, 503);
      const r = await done;
      assert.equal(r.body.toString(), MESSAGE_STREAM.join(''));
      await stopped;
    } finally {
      await up.close();
    }
  });

  it('aborts streams still open when the grace period ends', async () => {
    const up = await startUpstream();
    const fwd = await startForwarder({ port: 0, adminPort: 0, upstreamUrl: up.url, keys: [KEY], threads: 2 });
    up.handle((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(MESSAGE_STREAM[0]);
      const t = setInterval(() => res.write(': ping\n\n'), 50);
      res.on('close', () => clearInterval(t));
    });
    try {
      const outcome = new Promise<string>((resolve) => {
        const req = httpRequest(`${fwd.url}/v1/messages`, { method: 'POST', headers: GLITCH, agent: false }, (res) => {
          res.on('data', () => {});
          res.on('end', () => resolve('end'));
          res.on('error', () => resolve('cut'));
          res.on('aborted', () => resolve('cut'));
        });
        req.on('error', () => resolve('cut'));
        req.end('{}');
      });
      await eventually(() => up.seen.length === 1, 2_000, 'upstream request');
      const t0 = Date.now();
      await fwd.stop(200);
      assert.ok(Date.now() - t0 < 5_000);
      assert.equal(await outcome, 'cut');
      await up.seen[0]!.aborted;
    } finally {
      await up.close();
    }
  });
});

// The `undici` upstream client (GLITCH_UPSTREAM_CLIENT=undici, the fallback): it hands the
// relay raw header Buffers without pre-lowered names, so the relay lower-cases them itself.
describe('forwarder with the undici upstream client', () => {
  let up: TestUpstream;
  let fwd: RunningForwarder;
  const records: CapturedExchange[] = [];

  before(async () => {
    up = await startUpstream();
    fwd = await startForwarder({ port: 0, adminPort: 0, upstreamUrl: up.url, keys: [KEY], upstreamClient: 'undici', recorder: { record: (e) => records.push(e) } });
  });
  after(async () => {
    await fwd.stop(1_000);
    await up.close();
  });

  it('relays a sized body and an event stream; drops hop-by-hop and Connection-listed response headers', async () => {
    up.handle((_req, res, b) => {
      res.setHeader('Connection', 'keep-alive, X-Upstream-Private');
      res.setHeader('X-Upstream-Private', 'not for the client');
      res.setHeader('Request-Id', 'req_undici');
      res.end(b);
    });
    const body = randomBytes(3000);
    const r = await send(`${fwd.url}/v1/messages`, { headers: GLITCH, body });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, body);
    assert.equal(header(r.rawHeaders, 'request-id'), 'req_undici');
    assert.equal(header(r.rawHeaders, 'x-upstream-private'), undefined);

    up.handle((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (const e of MESSAGE_STREAM) res.write(e);
      res.end();
    });
    const s = await send(`${fwd.url}/v1/messages?beta=true`, { headers: GLITCH, body: '{"stream":true}' });
    assert.equal(s.status, 200);
    assert.equal(s.headers['content-type'], 'text/event-stream');
    assert.equal(s.body.toString(), MESSAGE_STREAM.join(''));
    const rec = await recordWhere(records, (x) => x.stream);
    assert.deepEqual(rec.sse?.usage, { inputTokens: 10, outputTokens: 3, cacheReadInputTokens: 5, cacheCreationInputTokens: 0 });
  });
});
