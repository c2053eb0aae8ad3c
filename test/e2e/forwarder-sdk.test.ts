// The real @anthropic-ai/sdk talks to the forwarder, which relays to the mock Anthropic API.
// Every exchange is checked on both sides: the bytes the SDK handed to fetch are the bytes
// upstream received, and the bytes upstream wrote are the bytes the SDK's fetch got back.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import type { RunningForwarder } from '@glitch/forwarder';
import { startInProcess, testKey } from '../support/forwarder.js';
import { recordingFetch, type FetchRecord } from '../support/http.js';
import { headerValues, reply, startMockUpstream, type MockUpstream, type ReceivedRequest } from '../support/mock-upstream.js';
import { parseSse, sse } from '../support/sse.js';

const MODEL = 'claude-sonnet-4-6';
const key = testKey('tenant-sdk');
const UPSTREAM_KEY = 'sk-ant-test-sdk-0000000000000000000000';

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

/** An SDK client through the forwarder whose fetch records every exchange. */
function client(opts: { glitchKey?: string | null; defaultHeaders?: Record<string, string | null> } = {}): { sdk: Anthropic; log: FetchRecord[] } {
  const log: FetchRecord[] = [];
  const glitch = opts.glitchKey === undefined ? key.secret : opts.glitchKey;
  const sdk = new Anthropic({
    apiKey: UPSTREAM_KEY,
    baseURL: fwd.url,
    maxRetries: 0,
    timeout: 20_000,
    fetch: recordingFetch(log),
    defaultHeaders: { ...(glitch !== null ? { 'X-Glitch-Key': glitch } : {}), ...opts.defaultHeaders },
  });
  return { sdk, log };
}

/** Hop-by-hop headers (RFC 9110 §7.6.1) and the ones a proxy legitimately rewrites. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'proxy-authenticate']);

/**
 * The request the SDK sent arrived upstream intact: same method, path+query, body bytes,
 * and every header the SDK chose (except X-Glitch-Key, which must be gone) with the same value.
 */
function assertRelayedExactly(sent: FetchRecord, got: ReceivedRequest): void {
  const u = new URL(sent.url);
  assert.equal(got.method, sent.method, 'method');
  assert.equal(got.url, u.pathname + u.search, 'path and query reach upstream unchanged');
  assert.ok(sent.requestBody === null ? got.body.length === 0 : got.body.equals(sent.requestBody), `upstream body differs from what the SDK sent (${got.body.length} vs ${sent.requestBody?.length ?? 0} bytes)`);
  for (const [name, value] of sent.requestHeaders) {
    if (name === 'x-glitch-key' || HOP_BY_HOP.has(name) || name === 'host') continue;
    if (name === 'accept-encoding') continue; // the one header the forwarder may narrow (DESIGN: Wire)
    if (name === 'content-length') {
      assert.equal(Number(headerValues(got, name)[0] ?? got.body.length), got.body.length);
      continue;
    }
    assert.deepEqual(headerValues(got, name), [value], `header ${name} must reach upstream verbatim`);
  }
  assert.deepEqual(headerValues(got, 'x-glitch-key'), [], 'X-Glitch-Key must never be sent upstream');
  assert.ok(!got.rawHeaders.join('\n').includes(key.secret), 'the Glitch secret must not appear in any upstream header');
  assert.ok(!got.body.includes(key.secret), 'the Glitch secret must not appear in the upstream body');
}

/** What the client's fetch received is byte-for-byte what upstream wrote. */
async function assertReceivedExactly(rec: FetchRecord, got: ReceivedRequest): Promise<Buffer> {
  const received = await rec.responseBody;
  assert.equal(rec.status, got.response.status, 'status relayed');
  assert.ok(received.equals(got.response.body), `client received ${received.length} bytes, upstream sent ${got.response.body.length}; first difference at ${firstDiff(received, got.response.body)}`);
  for (const [name, value] of got.response.headers) {
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || lower === 'content-length') continue;
    assert.equal(rec.responseHeaders.get(lower), value, `response header ${name} relayed`);
  }
  return received;
}

function firstDiff(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

function eventLines(bytes: Buffer): string[] {
  return bytes.toString('utf8').split('\n').filter((l) => l.startsWith('event:'));
}

/** Runs `fn` and returns the upstream requests it caused. */
async function upstreamDuring(fn: () => Promise<unknown>): Promise<ReceivedRequest[]> {
  const from = up.totalRequests;
  await fn();
  await up.waitFor(() => up.requests.slice(from).every((r) => r.outcome !== 'pending'), 5_000, 'upstream requests to settle');
  return up.requests.filter((r) => r.index >= from);
}

describe('forwarder with @anthropic-ai/sdk', () => {
  test('non-streaming message: relayed byte-exact both ways', async () => {
    const { sdk, log } = client();
    up.script(reply.message({ model: MODEL, content: [{ type: 'text', text: 'Paris is the capital of France. ✓ — ünïcödé' }] }));
    let msg: Anthropic.Message | undefined;
    const reqs = await upstreamDuring(async () => {
      msg = await sdk.messages.create({ model: MODEL, max_tokens: 256, system: 'Be brief.', messages: [{ role: 'user', content: 'Capital of France? ünïcödé ✓' }] });
    });
    assert.equal(reqs.length, 1);
    assert.equal(log.length, 1);
    const [sent, got] = [log[0]!, reqs[0]!];
    assertRelayedExactly(sent, got);
    const received = await assertReceivedExactly(sent, got);
    assert.deepEqual({ ...msg }, JSON.parse(received.toString('utf8')), 'SDK parsed exactly the upstream JSON');
    assert.equal((msg as unknown as { _request_id: string })._request_id, got.response.headers.find(([n]) => n === 'request-id')?.[1], 'request-id header relayed');
    assert.equal(msg!.content[0]?.type === 'text' && msg!.content[0].text, 'Paris is the capital of France. ✓ — ünïcödé');
  });

  test('streaming message with thinking, text and tool_use: every event and byte relayed, not buffered', async () => {
    const { sdk, log } = client();
    const events = sse()
      .messageStart({ model: MODEL, inputTokens: 412 })
      .thinking('The user wants a directory listing; run ls with the Bash tool.')
      .text('I will list the files.')
      .toolUse('Bash', { command: 'ls -la /tmp', description: 'List files in /tmp' })
      .messageDelta('tool_use')
      .messageStop().events;
    up.script(reply.stream(events, { eventDelayMs: 15 }));
    const seen: string[] = [];
    let firstEventAt = 0;
    const reqs = await upstreamDuring(async () => {
      const stream = await sdk.messages.create({ model: MODEL, max_tokens: 1024, stream: true, messages: [{ role: 'user', content: 'list /tmp' }] });
      for await (const ev of stream) {
        firstEventAt ||= performance.now();
        seen.push(ev.type);
      }
    });
    const [sent, got] = [log[0]!, reqs[0]!];
    assertRelayedExactly(sent, got);
    const received = await assertReceivedExactly(sent, got);
    assert.equal(got.outcome, 'completed');
    assert.deepEqual(eventLines(received), events.map((e) => `event: ${e.event}`), 'every event: line relayed in order');
    assert.deepEqual(parseSse(received), events, 'every data: line relayed verbatim');
    // The SDK surfaces every event type except ping.
    assert.deepEqual(seen, events.map((e) => e.event).filter((e) => e !== 'ping'));
    for (const t of ['thinking_delta', 'signature_delta', 'text_delta', 'input_json_delta']) assert.ok(received.includes(`"type":"${t}"`), `${t} relayed`);
    // Streamed, not buffered: the first event reached the SDK before upstream wrote its last one.
    const lastUpstreamWrite = got.response.chunkTimes.at(-1)!;
    assert.ok(firstEventAt < lastUpstreamWrite, `first event at client ${firstEventAt.toFixed(1)} ms must precede upstream's last write ${lastUpstreamWrite.toFixed(1)} ms (events ${events.length} × 15 ms apart)`);
  });

  test('streaming helper reassembles the tool_use input from input_json_delta fragments', async () => {
    const { sdk, log } = client();
    const input = { file_path: '/etc/hostname', offset: 1, limit: 20, note: 'quotes " and \\ and ünïcödé' };
    up.script(reply.stream({ model: MODEL, content: [{ type: 'text', text: 'Reading.' }, { type: 'tool_use', name: 'Read', input }] }, { eventDelayMs: 2 }));
    let final: Anthropic.Message | undefined;
    const reqs = await upstreamDuring(async () => {
      final = await sdk.messages.stream({ model: MODEL, max_tokens: 512, messages: [{ role: 'user', content: 'read it' }] }).finalMessage();
    });
    assertRelayedExactly(log[0]!, reqs[0]!);
    await assertReceivedExactly(log[0]!, reqs[0]!);
    const tool = final!.content.find((b) => b.type === 'tool_use');
    assert.ok(tool && tool.type === 'tool_use');
    assert.equal(tool.name, 'Read');
    assert.deepEqual(tool.input, input);
    assert.equal(final!.stop_reason, 'tool_use');
  });

  test('beta messages keep ?beta=true (as Claude Code sends it) and the anthropic-beta header', async () => {
    const { sdk, log } = client();
    const reqs = await upstreamDuring(() =>
      sdk.beta.messages.create(
        { model: MODEL, max_tokens: 64, stream: true, betas: ['interleaved-thinking-2025-05-14', 'context-management-2025-06-27'], messages: [{ role: 'user', content: 'hi' }] },
        { query: { beta: 'true' } },
      ).then(async (stream) => {
        for await (const _ of stream) { /* drain */ }
      }),
    );
    const got = reqs[0]!;
    assert.equal(got.url, '/v1/messages?beta=true');
    assert.deepEqual(headerValues(got, 'anthropic-beta'), ['interleaved-thinking-2025-05-14,context-management-2025-06-27']);
    assertRelayedExactly(log[0]!, got);
    await assertReceivedExactly(log[0]!, got);
  });

  test('count_tokens is relayed', async () => {
    const { sdk, log } = client();
    let count: Anthropic.MessageTokensCount | undefined;
    const reqs = await upstreamDuring(async () => {
      count = await sdk.messages.countTokens({ model: MODEL, messages: [{ role: 'user', content: 'How many tokens is this sentence?' }] });
    });
    const got = reqs[0]!;
    assert.equal(got.path, '/v1/messages/count_tokens');
    assertRelayedExactly(log[0]!, got);
    const received = await assertReceivedExactly(log[0]!, got);
    assert.equal(count!.input_tokens, (JSON.parse(received.toString('utf8')) as { input_tokens: number }).input_tokens);
  });

  test('models list is relayed (GET, with query)', async () => {
    const { sdk, log } = client();
    const ids: string[] = [];
    const reqs = await upstreamDuring(async () => {
      for await (const m of sdk.models.list({ limit: 20 })) ids.push(m.id);
    });
    const got = reqs[0]!;
    assert.equal(got.method, 'GET');
    assert.equal(got.path, '/v1/models');
    assert.match(got.query, /limit=20/);
    assertRelayedExactly(log[0]!, got);
    const received = await assertReceivedExactly(log[0]!, got);
    assert.deepEqual(ids, (JSON.parse(received.toString('utf8')) as { data: Array<{ id: string }> }).data.map((m) => m.id));
  });

  test("upstream 429 passes through with retry-after and Anthropic's error body", async () => {
    const { sdk, log } = client();
    up.script(reply.rateLimited(17));
    let caught: unknown;
    const reqs = await upstreamDuring(async () => {
      caught = await sdk.messages.create({ model: MODEL, max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] }).catch((e: unknown) => e);
    });
    assert.ok(caught instanceof Anthropic.RateLimitError, `expected RateLimitError, got ${String(caught)}`);
    assert.equal(caught.status, 429);
    assert.equal(caught.headers.get('retry-after'), '17');
    assert.equal(caught.type, 'rate_limit_error');
    const received = await assertReceivedExactly(log[0]!, reqs[0]!);
    assert.deepEqual(caught.error, JSON.parse(received.toString('utf8')));
    assert.equal(reqs.length, 1, 'the forwarder does not retry on its own');
  });

  test('upstream 529 overloaded and 500 pass through unchanged', async () => {
    const { sdk, log } = client();
    up.script(reply.overloaded(), reply.serverError());
    const errors: unknown[] = [];
    const reqs = await upstreamDuring(async () => {
      for (let i = 0; i < 2; i++) errors.push(await sdk.messages.create({ model: MODEL, max_tokens: 8, messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e));
    });
    assert.equal(reqs.length, 2);
    const [e529, e500] = errors;
    assert.ok(e529 instanceof Anthropic.APIError && e529.status === 529 && e529.type === 'overloaded_error', `got ${String(e529)}`);
    assert.ok(e500 instanceof Anthropic.InternalServerError && e500.status === 500 && e500.type === 'api_error', `got ${String(e500)}`);
    for (let i = 0; i < 2; i++) await assertReceivedExactly(log[i]!, reqs[i]!);
  });

  test("Glitch's own 401 (no X-Glitch-Key) is an AuthenticationError and nothing reaches upstream", async () => {
    const { sdk } = client({ glitchKey: null });
    const before = up.totalRequests;
    const e = await sdk.messages.create({ model: MODEL, max_tokens: 8, messages: [{ role: 'user', content: 'x' }] }).catch((err: unknown) => err);
    assert.ok(e instanceof Anthropic.AuthenticationError, `expected AuthenticationError, got ${String(e)}`);
    assert.equal(e.status, 401);
    assert.equal(e.type, 'authentication_error');
    const body = e.error as { type?: unknown; error?: { type?: unknown; message?: unknown }; request_id?: unknown };
    assert.equal(body.type, 'error');
    assert.equal(body.error?.type, 'authentication_error');
    assert.equal(typeof body.error?.message, 'string');
    assert.equal(typeof body.request_id, 'string');
    assert.equal(up.totalRequests, before, 'an unauthenticated request must not reach upstream');
  });

  test('an unknown X-Glitch-Key is a 401 too; a streaming request gets JSON, not SSE', async () => {
    const { sdk } = client({ glitchKey: 'glitch_sk_test_not_a_real_key_000000' });
    const before = up.totalRequests;
    const e = await sdk.messages.create({ model: MODEL, max_tokens: 8, stream: true, messages: [{ role: 'user', content: 'x' }] }).catch((err: unknown) => err);
    assert.ok(e instanceof Anthropic.AuthenticationError, `expected AuthenticationError, got ${String(e)}`);
    assert.equal(e.type, 'authentication_error');
    assert.match(e.headers.get('content-type') ?? '', /application\/json/);
    assert.equal(up.totalRequests, before);
  });

  test('anthropic-version: kept when the client sends one, defaulted to 2023-06-01 only when absent', async () => {
    const custom = client({ defaultHeaders: { 'anthropic-version': '2099-12-31' } });
    const absent = client({ defaultHeaders: { 'anthropic-version': null } });
    const reqs = await upstreamDuring(async () => {
      await custom.sdk.messages.create({ model: MODEL, max_tokens: 8, messages: [{ role: 'user', content: 'x' }] });
      await absent.sdk.messages.create({ model: MODEL, max_tokens: 8, messages: [{ role: 'user', content: 'x' }] });
    });
    assert.equal(custom.log[0]!.requestHeaders.get('anthropic-version'), '2099-12-31');
    assert.equal(absent.log[0]!.requestHeaders.get('anthropic-version'), null, 'precondition: the SDK sent no anthropic-version');
    assert.deepEqual(headerValues(reqs[0]!, 'anthropic-version'), ['2099-12-31']);
    assert.deepEqual(headerValues(reqs[1]!, 'anthropic-version'), ['2023-06-01']);
  });

  test('X-Glitch-Key never reached upstream in this whole file', () => {
    assert.ok(up.requests.length >= 10, `expected the tests above to reach upstream (got ${up.requests.length})`);
    for (const r of up.requests) {
      assert.deepEqual(headerValues(r, 'x-glitch-key'), [], `${r.method} ${r.url} carried X-Glitch-Key`);
      assert.ok(!r.rawHeaders.join('\n').includes(key.secret) && !r.body.includes(key.secret), `${r.method} ${r.url} carried the Glitch secret`);
    }
  });
});
