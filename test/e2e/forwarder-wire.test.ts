// Wire rules of the forwarder checked with a byte-level client (node:http with exact header
// names/order, raw sockets): header relay and hop-by-hop stripping, query strings, chunked
// request bodies, odd chunk boundaries and compressed bodies on the way back, preconnects.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import type { RunningForwarder } from '@glitch/forwarder';
import { startInProcess, testKey } from '../support/forwarder.js';
import { send } from '../support/http.js';
import { headerValues, reply, startMockUpstream, type MockUpstream, type ReceivedRequest } from '../support/mock-upstream.js';
import { encodeEvent, messageEvents } from '../support/sse.js';

const key = testKey('tenant-wire');
let up: MockUpstream;
let fwd: RunningForwarder;

before(async () => {
  up = await startMockUpstream();
  fwd = await startInProcess({ upstreamUrl: up.url, keys: [key] });
});

after(async () => {
  await fwd?.stop();
  await up?.close();
});

const body = Buffer.from(JSON.stringify({ model: 'claude-sonnet-4-6', max_tokens: 16, messages: [{ role: 'user', content: 'hi ✓' }] }));

async function one(opts: Parameters<typeof send>[0]): Promise<{ res: Awaited<ReturnType<typeof send>>; got: ReceivedRequest | undefined }> {
  const from = up.requests.length;
  const res = await send({ timeoutMs: 10_000, ...opts });
  const got = up.requests.length > from ? await up.settled(from) : undefined;
  return { res, got };
}

describe('forwarder wire rules', () => {
  test('request headers: relayed with exact values, duplicates kept, X-Glitch-Key and hop-by-hop removed', async () => {
    const headers: Array<[string, string]> = [
      ['Content-Type', 'application/json'],
      ['X-Glitch-Key', key.secret],
      ['x-api-key', 'sk-ant-test-wire-000000000000'],
      ['anthropic-version', '2023-06-01'],
      ['anthropic-beta', 'claude-code-20250219,interleaved-thinking-2025-05-14,some-future-flag-2031-01-01'],
      ['X-Claude-Code-Session-Id', '7f1d3c9e-1111-4222-8333-944455556666'],
      ['X-Custom-Spacing', 'a  b\tc'],
      ['X-Multi', 'first'],
      ['X-Multi', 'second'],
      ['Connection', 'keep-alive, X-Hop-Named'],
      ['Keep-Alive', 'timeout=5'],
      ['X-Hop-Named', 'must not be forwarded'],
      ['TE', 'trailers'],
      ['Content-Length', String(body.length)],
    ];
    const { res, got } = await one({ url: `${fwd.url}/v1/messages`, method: 'POST', headers, body });
    assert.equal(res.status, 200, res.body.toString());
    assert.ok(got);
    assert.ok(got.body.equals(body));
    for (const name of ['content-type', 'x-api-key', 'anthropic-version', 'anthropic-beta', 'x-claude-code-session-id', 'x-custom-spacing']) {
      assert.deepEqual(headerValues(got, name), headers.filter(([n]) => n.toLowerCase() === name).map(([, v]) => v), `${name} relayed verbatim`);
    }
    assert.deepEqual(headerValues(got, 'x-multi'), ['first', 'second'], 'repeated headers keep every value in order');
    assert.deepEqual(headerValues(got, 'x-glitch-key'), []);
    assert.deepEqual(headerValues(got, 'keep-alive'), [], 'Keep-Alive is hop-by-hop');
    assert.deepEqual(headerValues(got, 'te'), [], 'TE is hop-by-hop');
    assert.deepEqual(headerValues(got, 'x-hop-named'), [], 'a header named in Connection is hop-by-hop (RFC 9110 §7.6.1)');
    assert.deepEqual(headerValues(got, 'host'), [new URL(up.url).host], 'Host names the upstream');
  });

  test('query strings are relayed exactly, including odd encodings', async () => {
    const q = '?beta=true&x=%2F%20a+b&empty=&dup=1&dup=2&%E2%9C%93=%C3%BC';
    const { res, got } = await one({ url: `${fwd.url}/v1/messages${q}`, method: 'POST', headers: [['X-Glitch-Key', key.secret], ['content-type', 'application/json']], body });
    assert.equal(res.status, 200);
    assert.equal(got?.url, `/v1/messages${q}`);
  });

  test('a chunked request body arrives upstream byte-exact', async () => {
    const pieces = [body.subarray(0, 7), body.subarray(7, 30), body.subarray(30)];
    const { res, got } = await one({
      url: `${fwd.url}/v1/messages?beta=true`,
      method: 'POST',
      headers: [['X-Glitch-Key', key.secret], ['content-type', 'application/json'], ['Transfer-Encoding', 'chunked']],
      body: pieces,
      pieceDelayMs: 20,
    });
    assert.equal(res.status, 200, res.body.toString());
    assert.ok(got?.body.equals(body), `upstream got ${got?.body.toString()}`);
  });

  test('response bytes survive odd chunk boundaries (event and UTF-8 sequences split across writes)', async () => {
    const sse = Buffer.concat(messageEvents({ content: [{ type: 'text', text: 'ünïcödé ✓ 漢字 🎉 — split me' }] }).map(encodeEvent));
    // Cut every 5 bytes: splits `event:` lines, `\n\n` separators and multi-byte characters.
    const chunks: Buffer[] = [];
    for (let i = 0; i < sse.length; i += 5) chunks.push(sse.subarray(i, i + 5));
    up.script(reply.raw(200, [['content-type', 'text/event-stream; charset=utf-8'], ['request-id', 'req_wire_split']], chunks, { chunkDelayMs: 1 }));
    const { res, got } = await one({ url: `${fwd.url}/v1/messages`, method: 'POST', headers: [['X-Glitch-Key', key.secret], ['content-type', 'application/json']], body: Buffer.from(JSON.stringify({ model: 'm', stream: true, max_tokens: 5, messages: [] })) });
    assert.equal(res.status, 200);
    assert.ok(res.complete);
    assert.ok(res.body.equals(sse), 'client received exactly the upstream bytes');
    assert.ok(got?.response.body.equals(sse));
    assert.equal(res.headers['request-id'], 'req_wire_split');
  });

  test('a gzip-encoded upstream response reaches the client as upstream sent it', async () => {
    const plain = Buffer.from(JSON.stringify({ id: 'msg_gz', type: 'message', role: 'assistant', content: [{ type: 'text', text: 'compressed '.repeat(200) }] }));
    const gz = gzipSync(plain);
    up.script(reply.raw(200, [['content-type', 'application/json'], ['content-encoding', 'gzip'], ['content-length', String(gz.length)]], [gz]));
    const { res, got } = await one({
      url: `${fwd.url}/v1/messages`,
      method: 'POST',
      headers: [['X-Glitch-Key', key.secret], ['content-type', 'application/json'], ['accept-encoding', 'gzip, deflate, br, zstd']],
      body,
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-encoding'], 'gzip');
    assert.ok(res.body.equals(gz), `client got ${res.body.length} bytes, upstream sent ${gz.length} gzip bytes`);
    // Upstream was offered no encoding the client did not offer.
    const offered = (headerValues(got!, 'accept-encoding')[0] ?? '').split(',').map((s) => s.trim().split(';')[0]).filter(Boolean);
    for (const enc of offered) assert.ok(['gzip', 'deflate', 'br', 'zstd', 'identity'].includes(enc!), `upstream offered ${enc}`);
  });

  test('HEAD / and HEAD /api/hello are relayed without a Glitch credential', async () => {
    for (const path of ['/', '/api/hello']) {
      const { res, got } = await one({ url: fwd.url + path, method: 'HEAD', headers: [['User-Agent', 'Bun/1.3.0'], ['Accept', '*/*']] });
      assert.equal(res.status, 200, `HEAD ${path}`);
      assert.equal(res.body.length, 0);
      assert.equal(got?.method, 'HEAD');
      assert.equal(got?.path, path);
    }
  });

  test('everything else needs a credential: GET /, HEAD /v1/models, POST /v1/messages without a key are 401', async () => {
    const before = up.totalRequests;
    for (const [method, path] of [['GET', '/'], ['HEAD', '/v1/models'], ['POST', '/v1/messages'], ['GET', '/api/hello']] as const) {
      const res = await send({ url: fwd.url + path, method, headers: method === 'POST' ? [['content-type', 'application/json']] : [], body: method === 'POST' ? body : undefined, timeoutMs: 10_000 });
      assert.equal(res.status, 401, `${method} ${path}`);
      if (method !== 'HEAD') {
        const err = JSON.parse(res.body.toString()) as { type: string; error: { type: string; message: string }; request_id: string };
        assert.equal(err.type, 'error');
        assert.equal(err.error.type, 'authentication_error');
        assert.equal(typeof err.request_id, 'string');
        assert.match(String(res.headers['content-type']), /application\/json/);
      }
    }
    assert.equal(up.totalRequests, before, 'nothing unauthenticated reached upstream');
  });

  test('an unknown path is relayed (authenticated) and upstream 404 comes back', async () => {
    const { res, got } = await one({ url: `${fwd.url}/v1/some/future/endpoint?x=1`, method: 'GET', headers: [['X-Glitch-Key', key.secret]] });
    assert.equal(got?.url, '/v1/some/future/endpoint?x=1');
    assert.equal(res.status, 404);
    assert.ok(res.body.equals(got!.response.body));
  });
});
