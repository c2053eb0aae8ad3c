// Fast canned "Anthropic API" for the forwarder bench, on uWebSockets.js in its own process
// so it costs the proxies under test as little CPU as possible. The query string picks the
// behaviour (proxies relay it unchanged):
//   ?mode=json                     1 KB Messages JSON with content-length (default)
//   ?mode=sse&events=N&gap=MS      SSE, N events: message_start + content_block_start at once,
//                                  N-5 deltas MS apart, then content_block_stop + message_delta +
//                                  message_stop one gap later; gap=0: all of it at once
//   ?mode=hold                     SSE: message_start, then nothing until the client leaves
//   GET /__stats                   {"open":…,"aborted":…,"completed":…} (JSON)
// Usage: node --import tsx upstream.ts [port]   → prints "LISTENING <port>" when ready.
import uWS from 'uWebSockets.js';

const port = Number(process.argv[2] ?? 0);

const messageJson = Buffer.from(
  JSON.stringify({
    id: 'msg_01BenchBenchBenchBenchBench',
    type: 'message',
    role: 'assistant',
    model: 'claude-sonnet-4-6',
    content: [{ type: 'text', text: 'The quick brown fox jumps over the lazy dog. '.repeat(18) }],
    stop_reason: 'end_turn',
    stop_sequence: null,
    usage: { input_tokens: 2600, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 180, service_tier: 'standard' },
  }),
);

const ev = (event: string, data: unknown): Buffer => Buffer.from(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
const messageStart = ev('message_start', {
  type: 'message_start',
  message: { id: 'msg_01BenchStream', type: 'message', role: 'assistant', model: 'claude-sonnet-4-6', content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: 2600, output_tokens: 1 } },
});
const blockStart = ev('content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } });
const delta = (i: number): Buffer => ev('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: `token ${i} ` } });
const tail = Buffer.concat([
  ev('content_block_stop', { type: 'content_block_stop', index: 0 }),
  ev('message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 42 } }),
  ev('message_stop', { type: 'message_stop' }),
]);

const stats = { open: 0, aborted: 0, completed: 0 };

function sseHead(res: uWS.HttpResponse): void {
  res.writeStatus('200 OK').writeHeader('content-type', 'text/event-stream; charset=utf-8').writeHeader('cache-control', 'no-cache').writeHeader('request-id', 'req_bench');
}

function handle(res: uWS.HttpResponse, query: URLSearchParams, state: { aborted: boolean; timer?: NodeJS.Timeout }): void {
  const mode = query.get('mode') ?? 'json';
  if (mode === 'json') {
    res.cork(() => {
      res.writeStatus('200 OK').writeHeader('content-type', 'application/json').writeHeader('request-id', 'req_bench').end(messageJson);
    });
    stats.completed++;
    return;
  }
  stats.open++;
  const finish = (): void => {
    stats.open--;
    stats.completed++;
  };
  if (mode === 'hold') {
    res.cork(() => {
      sseHead(res);
      res.write(messageStart);
    });
    return;
  }
  const events = Math.max(5, Number(query.get('events') ?? 20));
  const gap = Number(query.get('gap') ?? 5);
  if (gap <= 0) {
    res.cork(() => {
      sseHead(res);
      res.write(messageStart);
      res.write(blockStart);
      for (let d = 1; d <= events - 5; d++) res.write(delta(d));
      res.end(tail);
    });
    finish();
    return;
  }
  res.cork(() => {
    sseHead(res);
    res.write(messageStart);
    res.write(blockStart);
  });
  let i = 1;
  const tick = (): void => {
    if (state.aborted) return;
    if (i > events - 5) {
      res.cork(() => res.end(tail));
      finish();
      return;
    }
    res.cork(() => res.write(delta(i++)));
    state.timer = setTimeout(tick, gap);
  };
  state.timer = setTimeout(tick, gap);
}

const app = uWS.App();
app.get('/__stats', (res) => {
  res.cork(() => res.writeHeader('content-type', 'application/json').end(JSON.stringify(stats)));
});
app.any('/*', (res, req) => {
  const method = req.getMethod();
  const query = new URLSearchParams(req.getQuery() ?? '');
  const state: { aborted: boolean; timer?: NodeJS.Timeout; streaming?: boolean } = { aborted: false };
  res.onAborted(() => {
    state.aborted = true;
    clearTimeout(state.timer);
    const mode = query.get('mode') ?? 'json';
    if (mode !== 'json') {
      stats.open--;
      stats.aborted++;
    }
  });
  if (method === 'get' || method === 'head') {
    handle(res, query, state);
    return;
  }
  // Read (and discard) the whole request body before answering, as the real API does.
  res.onData((_chunk, isLast) => {
    if (isLast && !state.aborted) handle(res, query, state);
  });
});
app.listen('127.0.0.1', port, (sock) => {
  if (!sock) {
    console.error(`bench upstream: cannot listen on ${port}`);
    process.exit(1);
  }
  console.log(`LISTENING ${uWS.us_socket_local_port(sock)}`);
});
