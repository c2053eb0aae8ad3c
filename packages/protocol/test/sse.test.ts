import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MessageAssembler, SseParser, assembleMessage, parseSse, type SseEvent } from '../src/index.js';

function ev(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

// A real-shaped Messages stream: thinking (with signature), text with multi-byte characters,
// a tool_use whose input arrives as JSON fragments, usage split over start and delta.
const STREAM = [
  ev('message_start', {
    type: 'message_start',
    message: {
      id: 'msg_01ABC',
      type: 'message',
      role: 'assistant',
      model: 'claude-sonnet-4-5-20250929',
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage: { input_tokens: 1200, cache_creation_input_tokens: 30, cache_read_input_tokens: 4000, output_tokens: 1, service_tier: 'standard' },
    },
  }),
  ev('content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'thinking', thinking: '', signature: '' } }),
  ev('ping', { type: 'ping' }),
  ev('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'thinking_delta', thinking: 'Let me ' } }),
  ev('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'thinking_delta', thinking: 'think 🤔.' } }),
  ev('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'signature_delta', signature: 'EqQBCkYIARgCIkA=' } }),
  ev('content_block_stop', { type: 'content_block_stop', index: 0 }),
  ev('content_block_start', { type: 'content_block_start', index: 1, content_block: { type: 'text', text: '' } }),
  ev('content_block_delta', { type: 'content_block_delta', index: 1, delta: { type: 'text_delta', text: 'Héllo, 世界' } }),
  ev('content_block_delta', { type: 'content_block_delta', index: 1, delta: { type: 'text_delta', text: '! Running ls.' } }),
  ev('content_block_stop', { type: 'content_block_stop', index: 1 }),
  ev('content_block_start', { type: 'content_block_start', index: 2, content_block: { type: 'tool_use', id: 'toolu_01X', name: 'Bash', input: {} } }),
  ev('content_block_delta', { type: 'content_block_delta', index: 2, delta: { type: 'input_json_delta', partial_json: '' } }),
  ev('content_block_delta', { type: 'content_block_delta', index: 2, delta: { type: 'input_json_delta', partial_json: '{"command": "l' } }),
  ev('content_block_delta', { type: 'content_block_delta', index: 2, delta: { type: 'input_json_delta', partial_json: 's -la", "description": "List"}' } }),
  ev('content_block_stop', { type: 'content_block_stop', index: 2 }),
  ev('message_delta', { type: 'message_delta', delta: { stop_reason: 'tool_use', stop_sequence: null }, usage: { output_tokens: 87 } }),
  ev('message_stop', { type: 'message_stop' }),
].join('');

const EXPECTED_MESSAGE = {
  id: 'msg_01ABC',
  type: 'message',
  role: 'assistant',
  model: 'claude-sonnet-4-5-20250929',
  stop_reason: 'tool_use',
  stop_sequence: null,
  content: [
    { type: 'thinking', thinking: 'Let me think 🤔.', signature: 'EqQBCkYIARgCIkA=' },
    { type: 'text', text: 'Héllo, 世界! Running ls.' },
    { type: 'tool_use', id: 'toolu_01X', name: 'Bash', input: { command: 'ls -la', description: 'List' } },
  ],
  usage: { input_tokens: 1200, cache_creation_input_tokens: 30, cache_read_input_tokens: 4000, output_tokens: 87, service_tier: 'standard' },
};

const EXPECTED_USAGE = { inputTokens: 1200, outputTokens: 87, cacheReadInputTokens: 4000, cacheCreationInputTokens: 30 };

function feedInPieces(bytes: Buffer, cuts: number[]): SseEvent[] {
  const p = new SseParser();
  const out: SseEvent[] = [];
  let at = 0;
  for (const c of [...cuts, bytes.length]) {
    out.push(...p.push(bytes.subarray(at, c)));
    at = c;
  }
  assert.equal(p.end().truncated, false);
  return out;
}

describe('SseParser', () => {
  const bytes = Buffer.from(STREAM, 'utf8');
  const whole = parseSse(bytes);

  it('parses every event with its type and data', () => {
    assert.equal(whole.length, 18);
    assert.equal(whole[0]!.event, 'message_start');
    assert.equal(whole[2]!.event, 'ping');
    assert.deepEqual(JSON.parse(whole[8]!.data), { type: 'content_block_delta', index: 1, delta: { type: 'text_delta', text: 'Héllo, 世界' } });
  });

  it('gives the same events for a split at every byte (including inside UTF-8 sequences)', () => {
    for (let cut = 0; cut <= bytes.length; cut++) assert.deepEqual(feedInPieces(bytes, [cut]), whole, `split at ${cut}`);
  });

  it('gives the same events fed one byte at a time', () => {
    assert.deepEqual(feedInPieces(bytes, Array.from({ length: bytes.length - 1 }, (_, i) => i + 1)), whole);
  });

  for (const [name, eol] of [
    ['CRLF', '\r\n'],
    ['CR', '\r'],
  ] as const) {
    it(`handles ${name} line endings, also split between CR and LF`, () => {
      const b = Buffer.from(STREAM.replace(/\n/g, eol), 'utf8');
      for (let cut = 0; cut <= b.length; cut += 7) assert.deepEqual(feedInPieces(b, [cut]), whole, `split at ${cut}`);
      for (let cut = 0; cut <= 200; cut++) assert.deepEqual(feedInPieces(b, [cut]), whole, `split at ${cut}`);
    });
  }

  it('follows the spec for comments, multi-line data, missing space, BOM, id and retry', () => {
    const text = '\uFEFF: comment\nretry: 1500\nid: 7\ndata:first\ndata: second\n\nevent: x\n\ndata\n\nevent: custom\ndata: {"a":1}\n\n';
    const b = Buffer.from(text, 'utf8');
    const expected: SseEvent[] = [
      { event: 'message', data: 'first\nsecond', id: '7', retry: 1500 },
      { event: 'message', data: '' },
      { event: 'custom', data: '{"a":1}' },
    ];
    for (let cut = 0; cut <= b.length; cut++) assert.deepEqual(feedInPieces(b, [cut]), expected, `split at ${cut}`);
  });

  it('reports an event cut off by the end of the stream', () => {
    const p = new SseParser();
    assert.deepEqual(p.push(Buffer.from('event: message_stop\ndata: {"type":"mess')), []);
    assert.equal(p.end().truncated, true);
  });

  it('joins a long line that arrives in many chunks', () => {
    const long = 'x'.repeat(100_000);
    const b = Buffer.from(`data: ${long}\n\n`);
    const cuts = Array.from({ length: 99 }, (_, i) => (i + 1) * 1000);
    assert.deepEqual(feedInPieces(b, cuts), [{ event: 'message', data: long }]);
  });
});

describe('MessageAssembler', () => {
  it('rebuilds the message and merges usage from message_start and message_delta', () => {
    const r = assembleMessage(parseSse(Buffer.from(STREAM)));
    assert.deepEqual(r.message, EXPECTED_MESSAGE);
    assert.deepEqual(r.usage, EXPECTED_USAGE);
    assert.equal(r.complete, true);
    assert.equal(r.error, null);
    assert.equal(r.eventCount, 18);
    assert.deepEqual(r.problems, []);
  });

  it('gives the same result for the stream split at every byte', () => {
    const bytes = Buffer.from(STREAM);
    for (let cut = 0; cut <= bytes.length; cut += 3) {
      const a = new MessageAssembler();
      for (const e of feedInPieces(bytes, [cut])) a.push(e);
      assert.deepEqual(a.result().message, EXPECTED_MESSAGE, `split at ${cut}`);
    }
  });

  it('keeps what arrived from an interrupted stream and records an error event', () => {
    const cut = STREAM.indexOf('event: content_block_stop', STREAM.indexOf('toolu_01X'));
    const partial = STREAM.slice(0, cut) + ev('error', { type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } });
    const r = assembleMessage(parseSse(Buffer.from(partial)));
    assert.equal(r.complete, false);
    assert.deepEqual(r.error, { type: 'overloaded_error', message: 'Overloaded' });
    const content = (r.message as { content: Array<Record<string, unknown>> }).content;
    assert.equal(content[1]!.text, 'Héllo, 世界! Running ls.');
    assert.deepEqual(content[2]!.input, {}); // the block never stopped: its input is not complete
    assert.deepEqual(r.usage, { inputTokens: 1200, outputTokens: 1, cacheReadInputTokens: 4000, cacheCreationInputTokens: 30 });
  });

  it('tool_use without input deltas gets {}; bad JSON is kept as text and reported, not thrown', () => {
    const s =
      ev('message_start', { type: 'message_start', message: { id: 'm', type: 'message', role: 'assistant', content: [], usage: { input_tokens: 1, output_tokens: 0 } } }) +
      ev('content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'tool_use', id: 't1', name: 'A', input: {} } }) +
      ev('content_block_stop', { type: 'content_block_stop', index: 0 }) +
      ev('content_block_start', { type: 'content_block_start', index: 1, content_block: { type: 'tool_use', id: 't2', name: 'B', input: {} } }) +
      ev('content_block_delta', { type: 'content_block_delta', index: 1, delta: { type: 'input_json_delta', partial_json: '{"a": ' } }) +
      ev('content_block_stop', { type: 'content_block_stop', index: 1 }) +
      'event: weird\ndata: not json\n\n';
    const r = assembleMessage(parseSse(Buffer.from(s)));
    const content = (r.message as { content: Array<Record<string, unknown>> }).content;
    assert.deepEqual(content[0]!.input, {});
    assert.equal(content[1]!.input, '{"a": ');
    assert.equal(r.problems.length, 2);
  });

  it('returns no message when there was no message_start', () => {
    const r = assembleMessage(parseSse(Buffer.from(ev('ping', { type: 'ping' }))));
    assert.equal(r.message, null);
    assert.equal(r.usage, null);
  });
});
