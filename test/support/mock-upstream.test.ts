// Self-test of the mock Anthropic API, with no forwarder in between: the real SDK must parse
// what it serves, and its recording of outcomes (completed / aborted / destroyed) must be
// right, or the e2e and fault tests built on it would prove nothing.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import { send } from './http.js';
import { reply, startMockUpstream, type MockUpstream } from './mock-upstream.js';
import { parseSse, sse } from './sse.js';

let up: MockUpstream;
let sdk: Anthropic;

before(async () => {
  up = await startMockUpstream();
  sdk = new Anthropic({ apiKey: 'sk-ant-test-mock', baseURL: up.url, maxRetries: 0 });
});
after(async () => {
  await up?.close();
});

describe('mock upstream', () => {
  test('the SDK reassembles its SSE (thinking, text, tool_use) and the recording matches the events', async () => {
    up.reset();
    const events = sse().messageStart({ model: 'claude-sonnet-4-6' }).thinking('hmm').text('Hello ✓').toolUse('Read', { file_path: '/x' }).messageDelta('tool_use').messageStop().events;
    up.script(reply.stream(events));
    const final = await sdk.messages.stream({ model: 'claude-sonnet-4-6', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] }).finalMessage();
    assert.deepEqual(final.content.map((b) => b.type), ['thinking', 'text', 'tool_use']);
    const tool = final.content[2];
    assert.ok(tool?.type === 'tool_use');
    assert.deepEqual(tool.input, { file_path: '/x' });
    assert.equal(final.stop_reason, 'tool_use');
    const got = await up.settled(0);
    assert.equal(got.outcome, 'completed');
    assert.deepEqual(parseSse(got.response.body), events);
    assert.equal(got.url, '/v1/messages');
    assert.deepEqual(JSON.parse(got.body.toString()).messages, [{ role: 'user', content: 'hi' }]);
  });

  test('defaults: non-streaming JSON, count_tokens, models, HEAD preconnects, 400 on bad JSON', async () => {
    up.reset();
    const msg = await sdk.messages.create({ model: 'claude-opus-4-7', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(msg.model, 'claude-opus-4-7');
    assert.equal(msg.content[0]?.type === 'text' && msg.content[0].text, up.defaultText);
    assert.ok((await sdk.messages.countTokens({ model: 'm', messages: [{ role: 'user', content: 'abc' }] })).input_tokens > 0);
    const models: string[] = [];
    for await (const m of sdk.models.list()) models.push(m.id);
    assert.ok(models.length >= 2);
    for (const path of ['/', '/api/hello']) assert.equal((await send({ url: up.url + path, method: 'HEAD' })).status, 200);
    const bad = await send({ url: `${up.url}/v1/messages`, method: 'POST', headers: [['content-type', 'application/json']], body: '{"model":' });
    assert.equal(bad.status, 400);
    assert.equal(JSON.parse(bad.body.toString()).error.type, 'invalid_request_error');
  });

  test('errors are Anthropic-shaped; the SDK maps 429 (retry-after) and 529', async () => {
    up.reset();
    up.script(reply.rateLimited(3), reply.overloaded());
    const e429 = await sdk.messages.create({ model: 'm', max_tokens: 1, messages: [] }).catch((e: unknown) => e);
    assert.ok(e429 instanceof Anthropic.RateLimitError);
    assert.equal(e429.headers.get('retry-after'), '3');
    const e529 = await sdk.messages.create({ model: 'm', max_tokens: 1, messages: [] }).catch((e: unknown) => e);
    assert.ok(e529 instanceof Anthropic.APIError && e529.status === 529 && e529.type === 'overloaded_error');
  });

  test('outcomes: client abort is "aborted", destroyAfterEvents is "destroyed", delays are honoured', async () => {
    up.reset();
    up.script(reply.stream({ content: [{ type: 'text', text: 'x'.repeat(100) }] }, { stallAfterEvents: 2 }));
    const aborted = await send({ url: `${up.url}/v1/messages`, method: 'POST', body: '{}', abortAfterBytes: 1 });
    assert.equal(aborted.status, 200);
    assert.equal((await up.settled(0)).outcome, 'aborted');

    up.script(reply.stream({ content: [{ type: 'text', text: 'y'.repeat(100) }] }, { destroyAfterEvents: 3 }));
    const cut = await send({ url: `${up.url}/v1/messages`, method: 'POST', body: '{}' });
    assert.equal(cut.complete, false);
    const r1 = await up.settled(1);
    assert.equal(r1.outcome, 'destroyed');
    assert.equal(r1.response.chunks.length, 3);
    assert.ok(cut.body.equals(r1.response.body), 'bytes written before the disconnect arrive');

    up.script(reply.stream({ content: [{ type: 'text', text: 'z' }] }, { firstByteDelayMs: 200, eventDelayMs: 20 }));
    const slow = await send({ url: `${up.url}/v1/messages`, method: 'POST', body: '{}' });
    assert.ok(slow.headersMs! >= 190, `headers after ${slow.headersMs} ms`);
    assert.ok(slow.doneMs - slow.headersMs! >= 20 * 5, `body took ${slow.doneMs - slow.headersMs!} ms`);
  });
});
