// Byte-level HTTP clients for wire tests: a node:http request that reports exactly what came
// back (and whether the response completed), a raw-socket exchange for malformed or
// dribbled requests, and a fetch wrapper that records what an SDK sent and received.
import { Agent, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';

export interface HttpResult {
  status: number;
  rawHeaders: string[];
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** True when the full response (e.g. the terminating chunk) arrived. */
  complete: boolean;
  /** Socket/parse error, if the exchange did not finish cleanly. */
  error: Error | null;
  /** ms from send to response headers, to first body byte, to end. */
  headersMs: number | null;
  firstByteMs: number | null;
  doneMs: number;
  /** Body chunks with their arrival time (ms since send). */
  chunks: Array<{ at: number; bytes: Buffer }>;
}

export interface HttpRequestOptions {
  url: string;
  method?: string;
  /** Headers in send order; names keep their case. */
  headers?: Array<[string, string]>;
  body?: Buffer | string | Array<Buffer | string>;
  /** Delay between body pieces when `body` is an array. */
  pieceDelayMs?: number;
  agent?: Agent | false;
  /** Abort (destroy the socket) once this many body bytes arrived. */
  abortAfterBytes?: number;
  /** Abort after this long (ms). */
  timeoutMs?: number;
  /** Called for each body chunk (e.g. to destroy at a chosen point). */
  onChunk?: (chunk: Buffer, destroy: () => void) => void;
}

/** Sends one request; never rejects (errors land in `error`, `complete` says if the response ended). */
export function send(opts: HttpRequestOptions): Promise<HttpResult> {
  const u = new URL(opts.url);
  const started = performance.now();
  const since = (): number => performance.now() - started;
  return new Promise((resolve) => {
    const chunks: HttpResult['chunks'] = [];
    let status = 0;
    let rawHeaders: string[] = [];
    let headers: IncomingHttpHeaders = {};
    let headersMs: number | null = null;
    let complete = false;
    let error: Error | null = null;
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ status, rawHeaders, headers, body: Buffer.concat(chunks.map((c) => c.bytes)), complete, error, headersMs, firstByteMs: chunks[0]?.at ?? null, doneMs: since(), chunks });
    };
    const flat: string[] = (opts.headers ?? []).flat();
    // With the raw-array form node does not add Host itself; HTTP/1.1 requires it.
    if (!flat.some((h, i) => i % 2 === 0 && h.toLowerCase() === 'host')) flat.unshift('Host', u.host);
    const req = httpRequest({
      host: u.hostname,
      port: u.port,
      path: u.pathname + u.search,
      method: opts.method ?? 'GET',
      headers: flat as unknown as Record<string, string>, // node accepts the rawHeaders array form
      agent: opts.agent ?? false,
    });
    const timer = setTimeout(() => {
      error = new Error(`client timeout after ${opts.timeoutMs} ms`);
      req.destroy(error);
      finish();
    }, opts.timeoutMs ?? 30_000);
    req.on('error', (e) => {
      error ??= e;
      finish();
    });
    req.on('response', (res) => {
      status = res.statusCode ?? 0;
      rawHeaders = res.rawHeaders;
      headers = res.headers;
      headersMs = since();
      let got = 0;
      const destroy = (): void => {
        error ??= new Error('aborted by test');
        res.destroy();
        req.destroy();
        finish();
      };
      res.on('data', (c: Buffer) => {
        chunks.push({ at: since(), bytes: c });
        got += c.length;
        opts.onChunk?.(c, destroy);
        if (opts.abortAfterBytes !== undefined && got >= opts.abortAfterBytes) destroy();
      });
      res.on('end', () => {
        complete = res.complete;
        finish();
      });
      res.on('aborted', () => {
        error ??= new Error('response aborted (connection closed before the end)');
      });
      res.on('error', (e) => {
        error ??= e;
        finish();
      });
      res.on('close', () => {
        complete = res.complete;
        if (!complete) error ??= new Error('connection closed before the response completed');
        finish();
      });
    });
    const body = opts.body;
    if (Array.isArray(body)) {
      let i = 0;
      const next = (): void => {
        if (done) return;
        if (i >= body.length) {
          req.end();
          return;
        }
        req.write(body[i++]!);
        setTimeout(next, opts.pieceDelayMs ?? 0);
      };
      next();
    } else {
      req.end(body);
    }
  });
}

export interface RawResult {
  /** Everything the server sent back. */
  data: Buffer;
  /** The server closed the connection (FIN or RST) before our timeout. */
  closedByServer: boolean;
  error: Error | null;
  /** ms from connect to close (or to the timeout). */
  elapsedMs: number;
}

/**
 * Opens a TCP connection, writes `pieces` (with `pieceDelayMs` between them, e.g. one byte at
 * a time for slowloris), and collects what comes back until the server closes or `timeoutMs`.
 */
export function rawExchange(port: number, pieces: Array<Buffer | string>, opts: { pieceDelayMs?: number; timeoutMs?: number; host?: string; endAfterWrite?: boolean } = {}): Promise<RawResult> {
  const started = performance.now();
  return new Promise((resolve) => {
    const socket = connect(port, opts.host ?? '127.0.0.1');
    const got: Buffer[] = [];
    let closedByServer = false;
    let error: Error | null = null;
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearTimeout(writer);
      socket.destroy();
      resolve({ data: Buffer.concat(got), closedByServer, error, elapsedMs: performance.now() - started });
    };
    timer = setTimeout(finish, opts.timeoutMs ?? 10_000);
    socket.on('data', (c: Buffer) => got.push(c));
    socket.on('end', () => {
      closedByServer = true;
      finish();
    });
    socket.on('close', () => {
      if (!done) closedByServer = true;
      finish();
    });
    socket.on('error', (e) => {
      error = e;
      closedByServer = true;
      finish();
    });
    let i = 0;
    let writer: NodeJS.Timeout | undefined;
    const next = (): void => {
      if (done || socket.destroyed) return;
      if (i >= pieces.length) {
        if (opts.endAfterWrite) socket.end();
        return;
      }
      socket.write(pieces[i++]!);
      writer = setTimeout(next, opts.pieceDelayMs ?? 0);
    };
    socket.on('connect', next);
  });
}

/** Splits a raw HTTP response into status, header lines and body (no de-chunking). */
export function parseRawResponse(data: Buffer): { status: number; headerLines: string[]; body: Buffer } | null {
  const end = data.indexOf('\r\n\r\n');
  if (end === -1) return null;
  const head = data.subarray(0, end).toString('latin1').split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(head[0] ?? '');
  if (!m) return null;
  return { status: Number(m[1]), headerLines: head.slice(1), body: data.subarray(end + 4) };
}

// ---- recording fetch ---------------------------------------------------------------------

export interface FetchRecord {
  url: string;
  method: string;
  /** The headers the caller handed to fetch (what the SDK chose to send). */
  requestHeaders: Headers;
  /** The body bytes the caller handed to fetch. */
  requestBody: Buffer | null;
  status: number;
  responseHeaders: Headers;
  /** Resolves to every byte of the response body the client received. */
  responseBody: Promise<Buffer>;
  /** performance.now() when each response chunk arrived at the client. */
  chunkTimes: number[];
}

async function bodyBytes(body: unknown): Promise<Buffer | null> {
  if (body === undefined || body === null) return null;
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  if (body instanceof ArrayBuffer) return Buffer.from(body);
  if (ArrayBuffer.isView(body)) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  return Buffer.from(await new Response(body as ConstructorParameters<typeof Response>[0]).arrayBuffer());
}

/** A fetch that records exactly what its caller sent and what came back (via a tee of the body). */
export function recordingFetch(log: FetchRecord[], base: typeof fetch = fetch): typeof fetch {
  return (async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const requestBody = await bodyBytes(init?.body);
    // Send the same bytes we recorded (a stream body can only be read once).
    const sendInit: RequestInit = { ...init, ...(init?.body !== undefined && typeof init.body !== 'string' && requestBody ? { body: requestBody } : {}) };
    const res = await base(input, sendInit);
    const [a, b] = res.body ? res.body.tee() : [null, null];
    const chunkTimes: number[] = [];
    const responseBody = (async () => {
      if (!b) return Buffer.alloc(0);
      const parts: Buffer[] = [];
      for await (const c of b as unknown as AsyncIterable<Uint8Array>) {
        chunkTimes.push(performance.now());
        parts.push(Buffer.from(c));
      }
      return Buffer.concat(parts);
    })();
    log.push({ url, method: init?.method ?? 'GET', requestHeaders: new Headers(init?.headers), requestBody, status: res.status, responseHeaders: res.headers, responseBody, chunkTimes });
    return new Response(a, { status: res.status, statusText: res.statusText, headers: res.headers });
  }) as typeof fetch;
}
