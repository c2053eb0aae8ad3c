// Anthropic Messages API payloads for tests: realistic ids, usage blocks, the real SSE event
// sequence, and a small builder so a test reads like the stream it produces.
//
//   const events = sse().messageStart({ model }).text('Hello').toolUse('Bash', { command: 'ls' })
//     .messageDelta('tool_use').messageStop().events;
//
// Shapes follow https://docs.anthropic.com/en/api/messages-streaming (event: + data: lines,
// one blank line between events, a `ping` after the first content_block_start).
import { randomBytes } from 'node:crypto';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

function base62(n: number): string {
  const bytes = randomBytes(n);
  let s = '';
  for (const b of bytes) s += BASE62[b % 62];
  return s;
}

/** `msg_01…`, `toolu_01…`, `req_011C…`: the prefixes and lengths the real API uses. */
export const ids = {
  message: (): string => `msg_01${base62(22)}`,
  toolUse: (): string => `toolu_01${base62(22)}`,
  request: (): string => `req_011C${base62(20)}`,
  signature: (): string => randomBytes(96).toString('base64'),
};

export const DEFAULT_MODEL = 'claude-sonnet-4-6';

export interface UsageBlock {
  input_tokens: number;
  cache_creation_input_tokens: number;
  cache_read_input_tokens: number;
  cache_creation: { ephemeral_5m_input_tokens: number; ephemeral_1h_input_tokens: number };
  output_tokens: number;
  service_tier: 'standard';
}

export function usage(input: number, output: number, cacheRead = 0, cacheWrite = 0): UsageBlock {
  return {
    input_tokens: input,
    cache_creation_input_tokens: cacheWrite,
    cache_read_input_tokens: cacheRead,
    cache_creation: { ephemeral_5m_input_tokens: cacheWrite, ephemeral_1h_input_tokens: 0 },
    output_tokens: output,
    service_tier: 'standard',
  };
}

export type ContentBlock =
  | { type: 'text'; text: string }
  | { type: 'thinking'; thinking: string; signature?: string }
  | { type: 'tool_use'; name: string; input: Record<string, unknown>; id?: string };

export type StopReason = 'end_turn' | 'tool_use' | 'max_tokens' | 'stop_sequence' | 'pause_turn' | 'refusal';

export interface MessageSpec {
  model?: string;
  content: ContentBlock[];
  stopReason?: StopReason;
  inputTokens?: number;
  outputTokens?: number;
  id?: string;
}

/** Rough token estimate for mock usage numbers (4 bytes per token, at least 1). */
export function estimateTokens(text: string | Buffer): number {
  const len = typeof text === 'string' ? Buffer.byteLength(text) : text.length;
  return Math.max(1, Math.ceil(len / 4));
}

function outputTokensOf(content: ContentBlock[]): number {
  let n = 0;
  for (const b of content) {
    if (b.type === 'text') n += estimateTokens(b.text);
    else if (b.type === 'thinking') n += estimateTokens(b.thinking);
    else n += estimateTokens(JSON.stringify(b.input)) + 8;
  }
  return Math.max(1, n);
}

function defaultStop(content: ContentBlock[]): StopReason {
  return content.some((b) => b.type === 'tool_use') ? 'tool_use' : 'end_turn';
}

/** A complete non-streaming Messages response body (what `POST /v1/messages` returns). */
export function messageJson(spec: MessageSpec): Record<string, unknown> {
  const content = spec.content.map((b) => {
    if (b.type === 'text') return { type: 'text', text: b.text };
    if (b.type === 'thinking') return { type: 'thinking', thinking: b.thinking, signature: b.signature ?? ids.signature() };
    return { type: 'tool_use', id: b.id ?? ids.toolUse(), name: b.name, input: b.input };
  });
  return {
    id: spec.id ?? ids.message(),
    type: 'message',
    role: 'assistant',
    model: spec.model ?? DEFAULT_MODEL,
    content,
    stop_reason: spec.stopReason ?? defaultStop(spec.content),
    stop_sequence: null,
    usage: usage(spec.inputTokens ?? 25, spec.outputTokens ?? outputTokensOf(spec.content)),
  };
}

export interface SseEvent {
  /** The `event:` line value. */
  event: string;
  /** The `data:` line, exactly as sent (already serialized, so spacing is under test control). */
  data: string;
}

/** Serializes one event as the API does: `event: X\ndata: {...}\n\n`. */
export function encodeEvent(e: SseEvent): Buffer {
  return Buffer.from(`event: ${e.event}\ndata: ${e.data}\n\n`, 'utf8');
}

function ev(event: string, data: unknown): SseEvent {
  return { event, data: JSON.stringify(data) };
}

/** Splits `s` into pieces of at most `size` code points (never splits a surrogate pair). */
export function splitText(s: string, size: number): string[] {
  const chars = Array.from(s);
  const out: string[] = [];
  for (let i = 0; i < chars.length; i += size) out.push(chars.slice(i, i + size).join(''));
  return out.length ? out : [''];
}

/** Builds an SSE event sequence block by block; `.events` is the result. */
export class SseBuilder {
  readonly events: SseEvent[] = [];
  private index = 0;
  private pinged = false;
  private outputTokens = 0;
  private model = DEFAULT_MODEL;
  private inputTokens = 25;

  messageStart(opts: { model?: string; id?: string; inputTokens?: number; cacheRead?: number; cacheWrite?: number } = {}): this {
    this.model = opts.model ?? this.model;
    this.inputTokens = opts.inputTokens ?? this.inputTokens;
    this.events.push(
      ev('message_start', {
        type: 'message_start',
        message: {
          id: opts.id ?? ids.message(),
          type: 'message',
          role: 'assistant',
          model: this.model,
          content: [],
          stop_reason: null,
          stop_sequence: null,
          usage: usage(this.inputTokens, 1, opts.cacheRead ?? 0, opts.cacheWrite ?? 0),
        },
      }),
    );
    return this;
  }

  /** The API sends `{"type": "ping"}` (with a space) once, after the first block starts. */
  ping(): this {
    this.events.push({ event: 'ping', data: '{"type": "ping"}' });
    return this;
  }

  private blockStart(block: Record<string, unknown>): void {
    this.events.push(ev('content_block_start', { type: 'content_block_start', index: this.index, content_block: block }));
    if (!this.pinged) {
      this.pinged = true;
      this.ping();
    }
  }

  private delta(delta: Record<string, unknown>): void {
    this.events.push(ev('content_block_delta', { type: 'content_block_delta', index: this.index, delta }));
  }

  private blockStop(): void {
    this.events.push(ev('content_block_stop', { type: 'content_block_stop', index: this.index }));
    this.index++;
  }

  /** A text block streamed as `text_delta`s of `chunkChars` characters. */
  text(text: string, chunkChars = 12): this {
    this.blockStart({ type: 'text', text: '' });
    for (const piece of splitText(text, chunkChars)) this.delta({ type: 'text_delta', text: piece });
    this.blockStop();
    this.outputTokens += estimateTokens(text);
    return this;
  }

  /** An extended-thinking block: `thinking_delta`s then one `signature_delta`. */
  thinking(thinking: string, signature = ids.signature(), chunkChars = 24): this {
    this.blockStart({ type: 'thinking', thinking: '', signature: '' });
    for (const piece of splitText(thinking, chunkChars)) this.delta({ type: 'thinking_delta', thinking: piece });
    this.delta({ type: 'signature_delta', signature });
    this.blockStop();
    this.outputTokens += estimateTokens(thinking);
    return this;
  }

  /** A tool_use block whose input JSON arrives as `input_json_delta` fragments. */
  toolUse(name: string, input: Record<string, unknown>, opts: { id?: string; chunkChars?: number } = {}): this {
    this.blockStart({ type: 'tool_use', id: opts.id ?? ids.toolUse(), name, input: {} });
    const json = JSON.stringify(input);
    // The API opens with an empty partial_json, then fragments.
    this.delta({ type: 'input_json_delta', partial_json: '' });
    for (const piece of splitText(json, opts.chunkChars ?? 10)) this.delta({ type: 'input_json_delta', partial_json: piece });
    this.blockStop();
    this.outputTokens += estimateTokens(json) + 8;
    return this;
  }

  messageDelta(stopReason: StopReason = 'end_turn', outputTokens?: number): this {
    this.events.push(
      ev('message_delta', {
        type: 'message_delta',
        delta: { stop_reason: stopReason, stop_sequence: null },
        usage: {
          input_tokens: this.inputTokens,
          cache_creation_input_tokens: 0,
          cache_read_input_tokens: 0,
          output_tokens: outputTokens ?? Math.max(1, this.outputTokens),
        },
      }),
    );
    return this;
  }

  messageStop(): this {
    this.events.push(ev('message_stop', { type: 'message_stop' }));
    return this;
  }

  /** An `event: error` mid-stream (e.g. overloaded), as the API sends it. */
  error(type: string, message: string): this {
    this.events.push(ev('error', { type: 'error', error: { type, message } }));
    return this;
  }
}

export function sse(): SseBuilder {
  return new SseBuilder();
}

/** The whole event sequence for a message made of `spec.content`. */
export function messageEvents(spec: MessageSpec): SseEvent[] {
  const b = sse().messageStart({ model: spec.model, id: spec.id, inputTokens: spec.inputTokens });
  for (const block of spec.content) {
    if (block.type === 'text') b.text(block.text);
    else if (block.type === 'thinking') b.thinking(block.thinking, block.signature);
    else b.toolUse(block.name, block.input, { id: block.id });
  }
  return b.messageDelta(spec.stopReason ?? defaultStop(spec.content), spec.outputTokens).messageStop().events;
}

/** Parses an SSE byte stream back into events (for assertions; tolerant of \r\n). */
export function parseSse(bytes: Buffer | string): SseEvent[] {
  const text = typeof bytes === 'string' ? bytes : bytes.toString('utf8');
  const out: SseEvent[] = [];
  for (const raw of text.split(/\r?\n\r?\n/)) {
    if (!raw.trim()) continue;
    let event = 'message';
    const data: string[] = [];
    for (const line of raw.split(/\r?\n/)) {
      if (line.startsWith('event:')) event = line.slice(6).trimStart();
      else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
    }
    out.push({ event, data: data.join('\n') });
  }
  return out;
}

/** Anthropic's error body: `{"type":"error","error":{"type","message"},"request_id"}`. */
export function errorJson(type: string, message: string, requestId = ids.request()): Record<string, unknown> {
  return { type: 'error', error: { type, message }, request_id: requestId };
}
