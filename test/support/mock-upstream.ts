// A local mock of the Anthropic API on node:http for e2e and fault tests.
//
// It records, per request, the exact bytes it received (method, url with query, raw header
// array, raw body) and the exact bytes it sent (status, headers, every body chunk), tracks
// sockets and requests the peer abandoned, and answers either from defaults (realistic
// Messages JSON / SSE, count_tokens, models, HEAD preconnects) or from what the test
// scripted: a queue of replies for `POST /v1/messages`, or a `respond(req)` function.
//
//   const up = await startMockUpstream();
//   up.script(reply.stream({ content: [{ type: 'tool_use', name: 'Bash', input: { command: 'ls' } }] }),
//             reply.stream({ content: [{ type: 'text', text: 'done' }] }));
//   ... run a client against the forwarder pointed at up.url ...
//   assert.deepEqual(up.requests[0]!.body, bytesTheClientSent);
import { EventEmitter } from 'node:events';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { DEFAULT_MODEL, encodeEvent, errorJson, estimateTokens, ids, messageEvents, messageJson, type MessageSpec, type SseEvent } from './sse.js';

export type HeaderList = Array<[string, string]>;

/** What the mock does with one request. Build these with `reply.*`. */
export interface Reply {
  status: number;
  /** Response headers in send order, names as written. Node adds Date/Connection (and chunking when no content-length). */
  headers: HeaderList;
  /** Body, written one chunk per write (an SSE reply has one chunk per event). */
  chunks: Buffer[];
  /** Wait this long before the status line (time to first byte). */
  firstByteDelayMs?: number;
  /** Wait this long between body chunks (the first chunk goes out right after the headers). */
  chunkDelayMs?: number;
  /** Destroy the socket after writing this many body chunks (0 = right after the headers). */
  destroyAfterChunks?: number;
  /** How destroyAfterChunks ends the connection: `fin` (after written bytes drain; default) or `rst` (TCP reset). */
  disconnect?: 'fin' | 'rst';
  /** Write this many body chunks, then go silent without ending the response. */
  stallAfterChunks?: number;
  /** `hang`: never answer at all; `destroy`: close the socket without any response (after firstByteDelayMs). */
  action?: 'respond' | 'hang' | 'destroy';
}

export interface SentResponse {
  status: number | null;
  headers: HeaderList;
  chunks: Buffer[];
  /** performance.now() when each chunk was written (same clock as a client in this process). */
  chunkTimes: number[];
  /** Concatenation of every body chunk written so far. */
  readonly body: Buffer;
  headersAt: number | null;
  finishedAt: number | null;
}

export type Outcome =
  | 'pending'
  /** The response was written completely. */
  | 'completed'
  /** The peer closed the connection before the response was complete (client went away). */
  | 'aborted'
  /** The mock destroyed the socket on purpose (a `destroy` reply or destroyAfterChunks). */
  | 'destroyed';

export interface ReceivedRequest {
  /** 0-based arrival order. */
  index: number;
  /** Which TCP connection carried it (0-based accept order): equal ids = keep-alive reuse. */
  connectionId: number;
  method: string;
  /** Path plus query exactly as in the request line, e.g. `/v1/messages?beta=true`. */
  url: string;
  path: string;
  /** Query string without the `?` ('' when none). */
  query: string;
  httpVersion: string;
  /** Header names and values exactly as received, alternating [name, value, name, value, …]. */
  rawHeaders: string[];
  /** Node's parsed (lower-cased) view, for convenience. */
  headers: IncomingHttpHeaders;
  /** The request body bytes exactly as received. */
  body: Buffer;
  receivedAt: number;
  bodyCompleteAt: number | null;
  response: SentResponse;
  outcome: Outcome;
  closedAt: number | null;
}

/** Header names (as received, original case) of a request, in order. */
export function headerNames(r: Pick<ReceivedRequest, 'rawHeaders'>): string[] {
  const out: string[] = [];
  for (let i = 0; i < r.rawHeaders.length; i += 2) out.push(r.rawHeaders[i]!);
  return out;
}

/** All values of header `name` (case-insensitive) in arrival order. */
export function headerValues(r: Pick<ReceivedRequest, 'rawHeaders'>, name: string): string[] {
  const lower = name.toLowerCase();
  const out: string[] = [];
  for (let i = 0; i < r.rawHeaders.length; i += 2) if (r.rawHeaders[i]!.toLowerCase() === lower) out.push(r.rawHeaders[i + 1]!);
  return out;
}

// ---- reply builders -----------------------------------------------------------------------

function orgHeaders(requestId: string): HeaderList {
  return [
    ['request-id', requestId],
    ['anthropic-organization-id', '00000000-0000-4000-8000-00000000c0de'],
    ['x-robots-tag', 'none'],
  ];
}

function rateLimitHeaders(): HeaderList {
  const reset = new Date(Date.now() + 60_000).toISOString().replace(/\.\d{3}Z$/, 'Z');
  return [
    ['anthropic-ratelimit-requests-limit', '4000'],
    ['anthropic-ratelimit-requests-remaining', '3999'],
    ['anthropic-ratelimit-requests-reset', reset],
    ['anthropic-ratelimit-input-tokens-limit', '2000000'],
    ['anthropic-ratelimit-input-tokens-remaining', '2000000'],
    ['anthropic-ratelimit-input-tokens-reset', reset],
  ];
}

interface CommonOpts {
  status?: number;
  /** Extra headers, appended after the defaults. */
  headers?: HeaderList;
  firstByteDelayMs?: number;
}

export interface StreamOpts extends CommonOpts {
  /** Delay between events (ms). */
  eventDelayMs?: number;
  /** Destroy the socket after this many events (mid-stream disconnect). */
  destroyAfterEvents?: number;
  /** Send this many events, then go silent (never end). */
  stallAfterEvents?: number;
  /** How destroyAfterEvents ends the connection (default `fin`). */
  disconnect?: 'fin' | 'rst';
}

export const reply = {
  /** Any JSON body with content-length; `body` may be pre-serialized bytes. */
  json(body: unknown, opts: CommonOpts = {}): Reply {
    const bytes = Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body), 'utf8');
    const requestId = ids.request();
    return {
      status: opts.status ?? 200,
      headers: [['content-type', 'application/json'], ['content-length', String(bytes.length)], ...orgHeaders(requestId), ...(opts.headers ?? [])],
      chunks: [bytes],
      firstByteDelayMs: opts.firstByteDelayMs,
    };
  },

  /** A non-streaming Messages response. */
  message(spec: MessageSpec, opts: CommonOpts = {}): Reply {
    return reply.json(messageJson(spec), { ...opts, headers: [...rateLimitHeaders(), ...(opts.headers ?? [])] });
  },

  /** An SSE Messages response: either explicit events or the sequence for a message spec. */
  stream(what: MessageSpec | SseEvent[], opts: StreamOpts = {}): Reply {
    const events = Array.isArray(what) ? what : messageEvents(what);
    return {
      status: opts.status ?? 200,
      headers: [
        ['content-type', 'text/event-stream; charset=utf-8'],
        ['cache-control', 'no-cache'],
        ...orgHeaders(ids.request()),
        ...rateLimitHeaders(),
        ...(opts.headers ?? []),
      ],
      chunks: events.map(encodeEvent),
      firstByteDelayMs: opts.firstByteDelayMs,
      chunkDelayMs: opts.eventDelayMs,
      destroyAfterChunks: opts.destroyAfterEvents,
      disconnect: opts.disconnect,
      stallAfterChunks: opts.stallAfterEvents,
    };
  },

  /** An Anthropic-shaped error. */
  error(status: number, type: string, message: string, opts: CommonOpts & { retryAfterSeconds?: number } = {}): Reply {
    const extra: HeaderList = opts.retryAfterSeconds !== undefined ? [['retry-after', String(opts.retryAfterSeconds)]] : [];
    const requestId = ids.request();
    return reply.json(errorJson(type, message, requestId), { ...opts, status, headers: [...extra, ...(opts.headers ?? [])] });
  },

  rateLimited(retryAfterSeconds = 7, opts: CommonOpts = {}): Reply {
    return reply.error(429, 'rate_limit_error', 'Number of request tokens has exceeded your per-minute rate limit', { ...opts, retryAfterSeconds });
  },

  overloaded(opts: CommonOpts = {}): Reply {
    return reply.error(529, 'overloaded_error', 'Overloaded', opts);
  },

  serverError(opts: CommonOpts = {}): Reply {
    return reply.error(500, 'api_error', 'Internal server error', opts);
  },

  /** Exact bytes: the test controls every header and body chunk. */
  raw(status: number, headers: HeaderList, chunks: Array<Buffer | string>, opts: Omit<Reply, 'status' | 'headers' | 'chunks'> = {}): Reply {
    return { status, headers, chunks: chunks.map((c) => (typeof c === 'string' ? Buffer.from(c, 'utf8') : c)), ...opts };
  },

  /** Accept the request and never answer (until the peer gives up or the mock closes). */
  hang(): Reply {
    return { status: 0, headers: [], chunks: [], action: 'hang' };
  },

  /** Close the connection without a response. */
  destroy(afterMs = 0): Reply {
    return { status: 0, headers: [], chunks: [], action: 'destroy', firstByteDelayMs: afterMs };
  },
};

// ---- the server ---------------------------------------------------------------------------

export interface MockUpstreamOptions {
  host?: string;
  port?: number;
  /** Text of the default assistant answer (default: "Hello from the mock upstream."). */
  defaultText?: string;
  /** Server keep-alive timeout (ms); default 60 s so pooled upstream sockets stay open during a test. */
  keepAliveTimeoutMs?: number;
  /** Keep body bytes of at most this many requests (default: all). Large load tests set this low. */
  keepRequests?: number;
}

export type Responder = (req: ReceivedRequest) => Reply | undefined;

export class MockUpstream extends EventEmitter {
  readonly requests: ReceivedRequest[] = [];
  /** Replies for `POST /v1/messages` (not count_tokens), used in order before the defaults. */
  readonly queue: Reply[] = [];
  /** When set, decides every reply; return undefined to fall back to queue/defaults. */
  respond: Responder | undefined;
  defaultText: string;

  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private connections = 0;
  private received = 0;
  private readonly keepRequests: number;
  private counts = { completed: 0, aborted: 0, destroyed: 0 };
  private peak = 0;
  private readonly perConnection = new Map<number, { requests: number; inFlight: number }>();
  url = '';
  port = 0;

  constructor(private readonly opts: MockUpstreamOptions = {}) {
    super();
    this.setMaxListeners(0);
    this.defaultText = opts.defaultText ?? 'Hello from the mock upstream.';
    this.keepRequests = opts.keepRequests ?? Infinity;
    this.server = createServer({ keepAliveTimeout: opts.keepAliveTimeoutMs ?? 60_000, requestTimeout: 0, headersTimeout: 60_000 }, (req, res) => this.onRequest(req, res));
    this.server.on('connection', (socket: Socket) => {
      const id = this.connections++;
      (socket as Socket & { glitchId?: number }).glitchId = id;
      this.sockets.add(socket);
      this.perConnection.set(id, { requests: 0, inFlight: 0 });
      socket.on('close', () => {
        this.sockets.delete(socket);
        this.perConnection.delete(id);
        this.emit('change');
      });
      this.emit('change');
    });
  }

  async listen(): Promise<this> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.opts.port ?? 0, this.opts.host ?? '127.0.0.1', () => resolve());
    });
    const addr = this.server.address() as AddressInfo;
    this.port = addr.port;
    this.url = `http://${addr.address}:${addr.port}`;
    return this;
  }

  /** Queue replies for the next `POST /v1/messages` requests. */
  script(...replies: Reply[]): this {
    this.queue.push(...replies);
    return this;
  }

  /** TCP connections currently open to the mock. */
  get openSockets(): number {
    return this.sockets.size;
  }

  /**
   * Open TCP connections with how many requests each carried and how many of those are still
   * unsettled: an open connection with `inFlight: 0` is an idle pooled connection, not a leak.
   */
  openConnections(): Array<{ id: number; requests: number; inFlight: number }> {
    return [...this.sockets].map((s) => {
      const id = (s as Socket & { glitchId?: number }).glitchId ?? -1;
      const st = this.perConnection.get(id);
      return { id, requests: st?.requests ?? 0, inFlight: st?.inFlight ?? 0 };
    });
  }

  /** TCP connections accepted since start. */
  get totalConnections(): number {
    return this.connections;
  }

  get totalRequests(): number {
    return this.received;
  }

  /** Requests settled per outcome since start (counts survive `keepRequests` trimming). */
  get outcomes(): Readonly<{ completed: number; aborted: number; destroyed: number }> {
    return this.counts;
  }

  /** Requests still in flight (received, response not complete, connection not closed). */
  get inFlight(): number {
    return this.received - this.counts.completed - this.counts.aborted - this.counts.destroyed;
  }

  /** Most requests in flight at once since start (or since `resetPeak()`). */
  get peakInFlight(): number {
    return this.peak;
  }

  resetPeak(): void {
    this.peak = this.inFlight;
  }

  /** Forget recorded requests and scripted replies (counters keep running). */
  reset(): void {
    this.requests.length = 0;
    this.queue.length = 0;
    this.respond = undefined;
  }

  /** Resolves when `cond()` holds (re-checked on every request/socket change), or rejects after timeoutMs. */
  waitFor(cond: () => boolean, timeoutMs: number, what = 'condition'): Promise<void> {
    if (cond()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!cond()) return;
        cleanup();
        resolve();
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`mock upstream: timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const poll = setInterval(check, 50);
      const cleanup = (): void => {
        clearTimeout(timer);
        clearInterval(poll);
        this.off('change', check);
      };
      this.on('change', check);
    });
  }

  /** Waits until `requests[position]` (0 = first recorded since the last reset) exists and has settled. */
  async settled(position: number, timeoutMs = 5_000): Promise<ReceivedRequest> {
    const done = (): boolean => {
      const r = this.requests[position];
      return r !== undefined && r.outcome !== 'pending' && r.closedAt !== null;
    };
    await this.waitFor(done, timeoutMs, `requests[${position}] to settle`);
    return this.requests[position]!;
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // ---- defaults ---------------------------------------------------------------------------

  /** What the mock answers when nothing was scripted. Exposed so a `respond` can delegate. */
  defaultReply(req: ReceivedRequest): Reply {
    const { method, path } = req;
    if (method === 'HEAD' && (path === '/' || path === '/api/hello')) {
      return { status: 200, headers: [['content-type', 'text/plain; charset=utf-8'], ['content-length', '0']], chunks: [] };
    }
    if (method === 'GET' && path === '/v1/models') {
      const data = [
        { type: 'model', id: 'claude-opus-4-7', display_name: 'Claude Opus 4.7', created_at: '2026-01-15T00:00:00Z' },
        { type: 'model', id: DEFAULT_MODEL, display_name: 'Claude Sonnet 4.6', created_at: '2025-12-10T00:00:00Z' },
        { type: 'model', id: 'claude-haiku-4-5-20251001', display_name: 'Claude Haiku 4.5', created_at: '2025-10-01T00:00:00Z' },
      ];
      return reply.json({ data, has_more: false, first_id: data[0]!.id, last_id: data[data.length - 1]!.id });
    }
    if (method === 'POST' && path === '/v1/messages/count_tokens') {
      const parsed = parseJson(req.body);
      if (!parsed.ok) return reply.error(400, 'invalid_request_error', `There was an issue with your request body: ${parsed.reason}`);
      return reply.json({ input_tokens: estimateTokens(req.body) });
    }
    if (method === 'POST' && path === '/v1/messages') {
      const parsed = parseJson(req.body);
      if (!parsed.ok) return reply.error(400, 'invalid_request_error', `There was an issue with your request body: ${parsed.reason}`);
      const body = parsed.value as { model?: unknown; stream?: unknown };
      if (typeof body.model !== 'string') return reply.error(400, 'invalid_request_error', 'model: Field required');
      const spec: MessageSpec = { model: body.model, content: [{ type: 'text', text: this.defaultText }], inputTokens: estimateTokens(req.body) };
      return body.stream === true ? reply.stream(spec) : reply.message(spec);
    }
    return reply.error(404, 'not_found_error', `Not found: ${method} ${path}`);
  }

  // ---- request handling -------------------------------------------------------------------

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const body: Buffer[] = [];
    const chunks: Buffer[] = [];
    const rec: ReceivedRequest = {
      index: this.received++,
      connectionId: (req.socket as Socket & { glitchId?: number }).glitchId ?? -1,
      method: req.method ?? '',
      url,
      path: q === -1 ? url : url.slice(0, q),
      query: q === -1 ? '' : url.slice(q + 1),
      httpVersion: req.httpVersion,
      rawHeaders: req.rawHeaders.slice(),
      headers: req.headers,
      body: Buffer.alloc(0),
      receivedAt: Date.now(),
      bodyCompleteAt: null,
      response: {
        status: null,
        headers: [],
        chunks,
        chunkTimes: [],
        get body() {
          return Buffer.concat(chunks);
        },
        headersAt: null,
        finishedAt: null,
      },
      outcome: 'pending',
      closedAt: null,
    };
    this.requests.push(rec);
    if (this.requests.length > this.keepRequests) this.requests.shift();
    this.peak = Math.max(this.peak, this.inFlight);
    this.emit('change');

    const conn = this.perConnection.get(rec.connectionId);
    if (conn) {
      conn.requests++;
      conn.inFlight++;
    }
    const settle = (outcome: Outcome): void => {
      if (rec.outcome !== 'pending') return;
      rec.outcome = outcome;
      if (conn) conn.inFlight--;
      this.counts[outcome as 'completed' | 'aborted' | 'destroyed']++;
      this.emit('change');
    };
    res.on('close', () => {
      rec.closedAt = Date.now();
      if (!res.writableFinished) settle('aborted');
      this.emit('change');
    });

    req.on('data', (c: Buffer) => body.push(c));
    req.on('end', () => {
      rec.body = Buffer.concat(body);
      rec.bodyCompleteAt = Date.now();
      let r: Reply | undefined;
      try {
        r = this.respond?.(rec);
        if (!r && rec.method === 'POST' && rec.path === '/v1/messages') r = this.queue.shift();
        r ??= this.defaultReply(rec);
      } catch (e) {
        r = reply.error(500, 'api_error', `mock upstream responder threw: ${(e as Error).message}`);
      }
      this.emit('change');
      this.play(r, rec, res, settle);
    });
  }

  private later(ms: number | undefined, fn: () => void): void {
    if (!ms) {
      fn();
      return;
    }
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }

  private play(r: Reply, rec: ReceivedRequest, res: ServerResponse, settle: (o: Outcome) => void): void {
    const gone = (): boolean => res.destroyed || rec.outcome !== 'pending';
    if (r.action === 'hang') return;
    this.later(r.firstByteDelayMs, () => {
      if (gone()) return;
      if (r.action === 'destroy') {
        settle('destroyed');
        res.socket?.destroy();
        return;
      }
      rec.response.status = r.status;
      rec.response.headers = r.headers;
      rec.response.headersAt = Date.now();
      res.writeHead(r.status, r.headers.flat());
      // Send the status line and headers now, so "first byte" is measurable before the body.
      if (rec.method !== 'HEAD') res.flushHeaders();
      let i = 0;
      const next = (): void => {
        if (gone()) return;
        if (r.destroyAfterChunks !== undefined && i >= r.destroyAfterChunks) {
          settle('destroyed');
          const socket = res.socket;
          if (!socket) return;
          if (r.disconnect === 'rst') socket.resetAndDestroy();
          else socket.destroySoon(); // FIN once the bytes already written have left
          return;
        }
        if (r.stallAfterChunks !== undefined && i >= r.stallAfterChunks) return;
        if (i >= r.chunks.length) {
          res.end(() => {
            rec.response.finishedAt = Date.now();
            settle('completed');
          });
          return;
        }
        const chunk = r.chunks[i++]!;
        rec.response.chunks.push(chunk);
        rec.response.chunkTimes.push(performance.now());
        res.write(chunk);
        this.later(i < r.chunks.length ? r.chunkDelayMs : 0, next);
      };
      next();
    });
  }
}

function parseJson(buf: Buffer): { ok: true; value: unknown } | { ok: false; reason: string } {
  try {
    return { ok: true, value: JSON.parse(buf.toString('utf8')) };
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
}

export async function startMockUpstream(opts: MockUpstreamOptions = {}): Promise<MockUpstream> {
  return new MockUpstream(opts).listen();
}
