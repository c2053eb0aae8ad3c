// The real Claude Code CLI (npm @anthropic-ai/claude-code, pinned in test/package.json)
// runs against the forwarder, which relays to the mock Anthropic API. A TCP tap between the
// CLI and the forwarder records what the CLI put on the wire, so the test can check that
// upstream received exactly those bytes, minus X-Glitch-Key.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { RunningForwarder } from '@glitch/forwarder';
import { describeRun, findClaudeBinary, runClaude, type ClaudeRun } from '../support/claude-cli.js';
import { startInProcess, testKey } from '../support/forwarder.js';
import { headerNames, headerValues, reply, startMockUpstream, type MockUpstream, type ReceivedRequest } from '../support/mock-upstream.js';
import { ids } from '../support/sse.js';
import { startTcpTap, tappedExchanges, type TcpTap } from '../support/tcp-tap.js';

const key = testKey('tenant-cli');
const UPSTREAM_KEY = `sk-ant-test-cli-${randomBytes(12).toString('hex')}`;

let up: MockUpstream;
let fwd: RunningForwarder;
let tap: TcpTap;

before(async () => {
  findClaudeBinary(); // fails the file with the install command when the CLI is missing
  up = await startMockUpstream();
  fwd = await startInProcess({ upstreamUrl: up.url, keys: [key] });
  tap = await startTcpTap(fwd.port);
});

after(async () => {
  await tap?.close();
  await fwd?.stop();
  await up?.close();
});

/** Runs the CLI through tap → forwarder and returns the run plus the upstream requests it caused. */
async function claudeThroughForwarder(prompt: string, extra: Partial<Parameters<typeof runClaude>[0]> = {}): Promise<{ run: ClaudeRun; reqs: ReceivedRequest[]; tapFrom: number }> {
  const from = up.totalRequests;
  const tapFrom = tap.connections.length;
  const run = await runClaude({ baseUrl: tap.url, prompt, apiKey: UPSTREAM_KEY, glitchKey: key.secret, timeoutMs: 60_000, ...extra });
  await up.waitFor(() => up.requests.filter((r) => r.index >= from).every((r) => r.outcome !== 'pending'), 5_000, 'upstream requests to settle');
  return { run, reqs: up.requests.filter((r) => r.index >= from), tapFrom };
}

const messagesPosts = (reqs: ReceivedRequest[]): ReceivedRequest[] => reqs.filter((r) => r.method === 'POST' && r.path === '/v1/messages');

/** Shared checks for every CLI run: preconnect, credentials, session header, byte-exact bodies. */
function assertCliWire(reqs: ReceivedRequest[], run: ClaudeRun, tapFrom: number): void {
  // Claude Code's credential-less preconnect (HEAD / in 2.1.197, HEAD /api/hello in later versions)
  // was relayed without a Glitch credential and answered by upstream.
  const head = reqs.find((r) => r.method === 'HEAD');
  assert.ok(head, `expected a HEAD preconnect upstream; saw ${reqs.map((r) => `${r.method} ${r.url}`).join(', ')}`);
  assert.ok(['/', '/api/hello'].includes(head.path), `preconnect path ${head.path}`);
  assert.equal(head.response.status, 200);
  assert.equal(head.outcome, 'completed');
  assert.deepEqual(headerValues(head, 'x-api-key'), [], 'the preconnect carries no credential');

  const posts = messagesPosts(reqs);
  assert.ok(posts.length >= 1);
  for (const r of posts) {
    assert.equal(r.url, '/v1/messages?beta=true', 'query string kept');
    assert.deepEqual(headerValues(r, 'x-glitch-key'), [], 'X-Glitch-Key must never reach upstream');
    assert.deepEqual(headerValues(r, 'x-api-key'), [UPSTREAM_KEY], 'the client upstream key is relayed verbatim');
    assert.deepEqual(headerValues(r, 'x-claude-code-session-id'), [run.result!.session_id], 'session id header relayed');
    assert.deepEqual(headerValues(r, 'x-app'), ['cli']);
    assert.equal(headerValues(r, 'anthropic-beta').length, 1, 'anthropic-beta relayed once');
    const body = JSON.parse(r.body.toString('utf8')) as { stream?: unknown; metadata?: { user_id?: unknown } };
    assert.equal(body.stream, true, 'Claude Code always streams');
    assert.match(String(body.metadata?.user_id), new RegExp(run.result!.session_id), 'metadata.user_id carries the session id');
  }
  for (const r of reqs) {
    assert.ok(!r.rawHeaders.join('\n').includes(key.secret) && !r.body.includes(key.secret), `${r.method} ${r.url} carried the Glitch secret`);
  }

  // Byte-exact: what the CLI wrote on the wire (seen by the tap) is what upstream received,
  // and what upstream sent is what the CLI read back.
  const wire = tappedExchanges(tap).filter((x) => x.connection >= tapFrom);
  const wirePosts = wire.filter((x) => x.request.startLine.startsWith('POST /v1/messages'));
  assert.equal(wirePosts.length, posts.length, 'one upstream request per CLI request');
  wirePosts.forEach((x, i) => {
    const got = posts[i]!;
    assert.ok(x.request.complete, 'tapped request complete');
    assert.ok(got.body.equals(x.request.body), `request #${i}: upstream got ${got.body.length} bytes, the CLI sent ${x.request.body.length}`);
    const sentHeaders = x.request.headers.filter(([n]) => !['x-glitch-key', 'host', 'connection', 'accept-encoding', 'content-length'].includes(n.toLowerCase()));
    for (const [name, value] of sentHeaders) assert.deepEqual(headerValues(got, name), [value], `request #${i}: header ${name} relayed verbatim`);
    assert.ok(x.response?.complete, `response #${i} reached the CLI completely`);
    assert.ok(x.response!.body.equals(got.response.body), `response #${i}: the CLI read ${x.response!.body.length} bytes, upstream sent ${got.response.body.length}`);
  });
}

describe('forwarder with the real Claude Code CLI', () => {
  test('baseline: the CLI works against the mock upstream directly (no forwarder)', async () => {
    // If this fails, the mock or the CLI install is at fault, not the forwarder.
    const answer = `direct answer ${randomBytes(4).toString('hex')}`;
    up.script(reply.stream({ content: [{ type: 'text', text: answer }] }));
    const from = up.totalRequests;
    const run = await runClaude({ baseUrl: up.url, prompt: 'Say hello.', apiKey: UPSTREAM_KEY, glitchKey: key.secret, timeoutMs: 60_000 });
    assert.equal(run.exitCode, 0, describeRun(run));
    assert.equal(run.result?.result, answer, describeRun(run));
    const reqs = up.requests.filter((r) => r.index >= from);
    assert.ok(reqs.some((r) => r.method === 'HEAD'), 'the CLI preconnects with HEAD');
    const post = messagesPosts(reqs)[0];
    assert.ok(post);
    // Without a forwarder the custom header arrives as configured: this is what Glitch must strip.
    assert.deepEqual(headerValues(post, 'x-glitch-key'), [key.secret]);
  });

  test('single turn: the CLI prints the answer upstream streamed', async () => {
    const answer = `Glitch e2e answer ${randomBytes(4).toString('hex')}`;
    up.script(reply.stream({ content: [{ type: 'text', text: answer }] }, { eventDelayMs: 5 }));
    const { run, reqs, tapFrom } = await claudeThroughForwarder('Say hello in one short sentence.');
    assert.equal(run.exitCode, 0, describeRun(run));
    assert.ok(run.result, describeRun(run));
    assert.equal(run.result.is_error, false, describeRun(run));
    assert.equal(run.result.result, answer);
    assert.equal(messagesPosts(reqs).length, 1);
    assertCliWire(reqs, run, tapFrom);
    // The observed header set (names only) is printed for the record: it changes between CLI versions.
    console.log(`[claude-cli] ${findClaudeBinary()}: HEAD ${reqs.find((r) => r.method === 'HEAD')?.path}; POST headers: ${headerNames(messagesPosts(reqs)[0]!).join(', ')}`);
  });

  test('tool-use turn: the CLI runs Bash and sends the tool_result in a second request', async () => {
    const toolId = ids.toolUse();
    const final = `Done: the marker was printed ${randomBytes(3).toString('hex')}`;
    up.script(
      reply.stream({ content: [{ type: 'text', text: 'I will run it.' }, { type: 'tool_use', id: toolId, name: 'Bash', input: { command: 'echo glitch-tool-$((6*7))', description: 'Print a marker' } }] }, { eventDelayMs: 3 }),
      reply.stream({ content: [{ type: 'text', text: final }] }, { eventDelayMs: 3 }),
    );
    const { run, reqs, tapFrom } = await claudeThroughForwarder('Run the marker command.', { allowedTools: ['Bash'] });
    assert.equal(run.exitCode, 0, describeRun(run));
    assert.equal(run.result?.result, final, describeRun(run));
    assert.equal(run.result?.num_turns, 2);
    const posts = messagesPosts(reqs);
    assert.equal(posts.length, 2, `expected 2 message requests, got ${posts.length}`);
    const second = JSON.parse(posts[1]!.body.toString('utf8')) as { messages: Array<{ role: string; content: unknown }> };
    const last = second.messages.at(-1)!;
    assert.equal(last.role, 'user');
    const results = (Array.isArray(last.content) ? last.content : []) as Array<{ type?: string; tool_use_id?: string; content?: unknown; is_error?: boolean }>;
    const tr = results.find((b) => b.type === 'tool_result');
    assert.ok(tr, `second request must end with a tool_result; got ${JSON.stringify(last).slice(0, 500)}`);
    assert.equal(tr.tool_use_id, toolId);
    assert.equal(tr.is_error, false);
    // $((6*7)) was evaluated by a real shell: the CLI ran the tool.
    assert.match(JSON.stringify(tr.content), /glitch-tool-42/);
    assertCliWire(reqs, run, tapFrom);
  });

  test('a wrong Glitch key: the CLI gets an Anthropic-shaped 401 and upstream sees no message request', async () => {
    const { run, reqs } = await claudeThroughForwarder('Say hello.', { glitchKey: 'glitch_sk_test_wrong_key_000000000000' });
    assert.notEqual(run.exitCode, 0, `the CLI should fail: ${describeRun(run)}`);
    assert.equal(messagesPosts(reqs).length, 0, 'no message request may reach upstream');
    // Claude Code parsed Glitch's Anthropic-shaped error: it reports the status and shows the message.
    assert.equal(run.result?.is_error, true, describeRun(run));
    assert.equal(run.result?.api_error_status, 401, describeRun(run));
    assert.match(String(run.result?.result), /401/, describeRun(run));
  });
});
