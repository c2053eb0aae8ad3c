// Rebuilds the Messages API response object from its SSE events, as the non-streaming API
// would have returned it: content blocks from their deltas (text, thinking, signature,
// tool_use input JSON, citations), stop reason and usage from `message_delta`.
import type { SseEvent } from './sse.js';

/** Token counts as records keep them (same shape as `@glitch/records` Usage). */
export interface TokenUsage {
  inputTokens: number;
  outputTokens: number;
  cacheReadInputTokens: number;
  cacheCreationInputTokens: number;
}

export interface AssembledMessage {
  /** The reassembled message (`type: "message"`), or null when no `message_start` came. */
  message: Record<string, unknown> | null;
  /** `message_start.usage` merged with the cumulative `message_delta.usage`, normalized. */
  usage: TokenUsage | null;
  /** The merged usage object with the API's own field names (server_tool_use, service_tier, …). */
  rawUsage: Record<string, unknown> | null;
  /** `message_stop` was seen. */
  complete: boolean;
  /** An `error` event (e.g. overloaded mid-stream), as sent. */
  error: { type: string; message: string } | null;
  eventCount: number;
  /** Things that did not parse (bad JSON, unknown delta types); never thrown. */
  problems: string[];
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function count(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? Math.trunc(v) : 0;
}

/** Normalizes an API `usage` object; null when there is none. */
export function normalizeUsage(raw: unknown): TokenUsage | null {
  if (!isObject(raw)) return null;
  return {
    inputTokens: count(raw.input_tokens),
    outputTokens: count(raw.output_tokens),
    cacheReadInputTokens: count(raw.cache_read_input_tokens),
    cacheCreationInputTokens: count(raw.cache_creation_input_tokens),
  };
}

export class MessageAssembler {
  private message: Json | null = null;
  private content: Json[] = [];
  private partialJson = new Map<number, string>();
  private usage: Json | null = null;
  private complete = false;
  private error: { type: string; message: string } | null = null;
  private events = 0;
  private readonly problems: string[] = [];

  push(ev: SseEvent): void {
    this.events++;
    let data: unknown;
    try {
      data = JSON.parse(ev.data);
    } catch {
      this.problem(`event ${this.events} (${ev.event}): data is not JSON`);
      return;
    }
    if (!isObject(data)) {
      this.problem(`event ${this.events} (${ev.event}): data is not an object`);
      return;
    }
    const type = typeof data.type === 'string' ? data.type : ev.event;
    switch (type) {
      case 'message_start':
        return this.onMessageStart(data);
      case 'content_block_start':
        return this.onBlockStart(data);
      case 'content_block_delta':
        return this.onBlockDelta(data);
      case 'content_block_stop':
        return this.onBlockStop(data);
      case 'message_delta':
        return this.onMessageDelta(data);
      case 'message_stop':
        this.complete = true;
        return;
      case 'error': {
        const e = isObject(data.error) ? data.error : {};
        this.error = { type: String(e.type ?? 'unknown'), message: String(e.message ?? '') };
        return;
      }
      case 'ping':
        return;
      default:
        return; // new event types are tolerated, as the API asks of clients
    }
  }

  result(): AssembledMessage {
    let message: Json | null = null;
    if (this.message) {
      message = { ...this.message, content: this.content.filter((b) => b !== undefined) };
      if (this.usage) message.usage = this.usage;
    }
    return {
      message,
      usage: normalizeUsage(this.usage),
      rawUsage: this.usage,
      complete: this.complete,
      error: this.error,
      eventCount: this.events,
      problems: this.problems,
    };
  }

  private problem(text: string): void {
    if (this.problems.length < 20) this.problems.push(text);
  }

  private onMessageStart(data: Json): void {
    if (!isObject(data.message)) return this.problem('message_start without message');
    const { content, usage, ...rest } = data.message;
    this.message = rest;
    // Some servers put initial content in message_start; keep it as the starting blocks.
    this.content = Array.isArray(content) ? content.filter(isObject) : [];
    this.usage = isObject(usage) ? { ...usage } : null;
  }

  private index(data: Json): number | null {
    const i = data.index;
    if (typeof i === 'number' && Number.isInteger(i) && i >= 0 && i < 10_000) return i;
    this.problem(`${String(data.type)} with bad index`);
    return null;
  }

  private onBlockStart(data: Json): void {
    const i = this.index(data);
    if (i === null) return;
    if (!isObject(data.content_block)) return this.problem(`content_block_start ${i} without content_block`);
    this.content[i] = { ...data.content_block };
  }

  private onBlockDelta(data: Json): void {
    const i = this.index(data);
    if (i === null) return;
    const block = this.content[i];
    const delta = data.delta;
    if (!block || !isObject(delta)) return this.problem(`content_block_delta ${i} without a started block`);
    switch (delta.type) {
      case 'text_delta':
        block.text = String(block.text ?? '') + String(delta.text ?? '');
        return;
      case 'thinking_delta':
        block.thinking = String(block.thinking ?? '') + String(delta.thinking ?? '');
        return;
      case 'signature_delta':
        block.signature = String(block.signature ?? '') + String(delta.signature ?? '');
        return;
      case 'input_json_delta':
        this.partialJson.set(i, (this.partialJson.get(i) ?? '') + String(delta.partial_json ?? ''));
        return;
      case 'citations_delta':
        block.citations = [...(Array.isArray(block.citations) ? block.citations : []), delta.citation];
        return;
      default:
        this.problem(`content_block_delta ${i}: unknown delta type ${String(delta.type)}`);
    }
  }

  private onBlockStop(data: Json): void {
    const i = this.index(data);
    if (i === null) return;
    const json = this.partialJson.get(i);
    const block = this.content[i];
    if (json === undefined || !block) return;
    this.partialJson.delete(i);
    if (json.trim() === '') {
      block.input = {}; // a tool called without arguments streams no input deltas
      return;
    }
    try {
      block.input = JSON.parse(json);
    } catch {
      block.input = json; // keep what came, for the record, rather than nothing
      this.problem(`content block ${i}: tool input is not valid JSON`);
    }
  }

  private onMessageDelta(data: Json): void {
    if (isObject(data.delta) && this.message) Object.assign(this.message, data.delta);
    // message_delta usage is cumulative: its fields replace message_start's.
    if (isObject(data.usage)) {
      this.usage ??= {};
      for (const [k, v] of Object.entries(data.usage)) if (v !== null && v !== undefined) this.usage[k] = v;
    }
  }
}

/** Reassembles a complete list of events. */
export function assembleMessage(events: Iterable<SseEvent>): AssembledMessage {
  const a = new MessageAssembler();
  for (const ev of events) a.push(ev);
  return a.result();
}
