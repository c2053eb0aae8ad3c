// Captures for the recorder tests, completed by the forwarder's own completeCapture (content
// decoding, SSE reassembly), so the recorder sees exactly what the forwarder hands it.
import { randomUUID } from 'node:crypto';
import { completeCapture, type CapturedExchange, type HeaderPair, type RawCapture } from '@glitch/forwarder';

export function sseEvent(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** A complete Messages event stream: text "Hi there", usage in message_start and message_delta. */
export function sseStream(opts: { input?: number; output?: number; cacheRead?: number; cacheWrite?: number; stopAfter?: number } = {}): Buffer {
  const events = [
    sseEvent('message_start', {
      type: 'message_start',
      message: {
        id: 'msg_01TestTestTestTestTestTe',
        type: 'message',
        role: 'assistant',
        model: 'claude-sonnet-4-6',
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: { input_tokens: opts.input ?? 120, output_tokens: 1, cache_read_input_tokens: opts.cacheRead ?? 3000, cache_creation_input_tokens: opts.cacheWrite ?? 40 },
      },
    }),
    sseEvent('content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }),
    sseEvent('ping', { type: 'ping' }),
    sseEvent('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Hi ' } }),
    sseEvent('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'there' } }),
    sseEvent('content_block_stop', { type: 'content_block_stop', index: 0 }),
    sseEvent('message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: opts.output ?? 7 } }),
    sseEvent('message_stop', { type: 'message_stop' }),
  ];
  return Buffer.from(events.slice(0, opts.stopAfter ?? events.length).join(''), 'utf8');
}

export interface RawOverrides extends Partial<RawCapture> {
  sessionId?: string | null;
}

/** A raw capture of `POST /v1/messages?beta=true` as a relay thread would produce it. */
export function rawCapture(o: RawOverrides = {}): RawCapture {
  const sessionId = o.sessionId === undefined ? randomUUID() : o.sessionId;
  const requestHeaders: HeaderPair[] = [
    ['host', '127.0.0.1:8787'],
    ['content-type', 'application/json'],
    ['x-api-key', 'sk-ant-api03-secretsecretsecret'],
    ['anthropic-version', '2023-06-01'],
    ...(sessionId === null ? [] : ([['x-claude-code-session-id', sessionId]] as HeaderPair[])),
    ['x-glitch-key', 'glitch_sk_test_0123456789abcdef'],
  ];
  const responseBody = o.responseBody ?? sseStream();
  return {
    exchangeId: randomUUID(),
    tenantId: 'acme',
    keyId: 'key-1',
    method: 'POST',
    path: '/v1/messages',
    query: 'beta=true',
    requestHeaders,
    requestBody: Buffer.from(JSON.stringify({ model: 'claude-sonnet-4-6', messages: [{ role: 'user', content: 'hello' }], max_tokens: 64, stream: true })),
    status: 200,
    responseSource: 'upstream',
    responseHeaders: [
      ['content-type', 'text/event-stream; charset=utf-8'],
      ['request-id', 'req_011CTest'],
    ],
    responseBody,
    responseBodyBytes: responseBody.byteLength,
    responseBodyTruncated: false,
    timings: { receivedAt: 1_760_000_000_000.4, dispatchedMs: 0.8, upstreamFirstByteMs: 12.5, doneMs: 40.25, addedOverheadMs: 0.35 },
    clientAborted: false,
    error: null,
    ...o,
  };
}

export function capture(o: RawOverrides = {}): Promise<CapturedExchange> {
  return completeCapture(rawCapture(o));
}
