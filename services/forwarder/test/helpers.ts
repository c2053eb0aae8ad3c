// A tiny node:http upstream and a raw HTTP client for the forwarder's own socket tests.
import { request as httpRequest, createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { StaticKey } from '../src/keys.js';
import type { RelayThreadOptions } from '../src/relay.js';

export interface SeenRequest {
  method: string;
  url: string;
  rawHeaders: string[];
  body: Buffer;
  /** Resolves when the upstream connection of this request closed before the response ended. */
  aborted: Promise<void>;
}

export type UpstreamHandler = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void;

export interface TestUpstream {
  url: string;
  port: number;
  seen: SeenRequest[];
  /** TCP connections currently open to this upstream, and opened in total. */
  openConnections(): number;
  totalConnections(): number;
  handle(h: UpstreamHandler): void;
  close(): Promise<void>;
}

export async function startUpstream(): Promise<TestUpstream> {
  let handler: UpstreamHandler = (_req, res) => res.end('ok');
  const seen: SeenRequest[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    let abortedResolve: () => void = () => {};
    const aborted = new Promise<void>((r) => (abortedResolve = r));
    res.on('close', () => {
      if (!res.writableFinished) abortedResolve();
    });
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      seen.push({ method: req.method ?? '', url: req.url ?? '', rawHeaders: req.rawHeaders, body, aborted });
      handler(req, res, body);
    });
  });
  let open = 0;
  let total = 0;
  server.on('connection', (socket) => {
    open++;
    total++;
    socket.once('close', () => open--);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    seen,
    openConnections: () => open,
    totalConnections: () => total,
    handle(h) {
      handler = h;
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  rawHeaders: string[];
  body: Buffer;
}

export interface SendOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: Buffer | string;
  /** Send the body with chunked transfer-encoding (no content-length). */
  chunked?: boolean;
}

/** One request on a fresh connection; resolves with the exact response bytes. */
export function send(url: string, opts: SendOptions = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const body = typeof opts.body === 'string' ? Buffer.from(opts.body) : opts.body;
    const headers: Record<string, string> = { ...opts.headers };
    if (body && !opts.chunked) headers['content-length'] = String(body.length);
    const req = httpRequest(url, { method: opts.method ?? (body ? 'POST' : 'GET'), headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, rawHeaders: res.rawHeaders, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body && opts.chunked) {
      const half = Math.floor(body.length / 2);
      req.write(body.subarray(0, half));
      req.write(body.subarray(half));
    } else if (body) req.write(body);
    req.end();
  });
}

export function header(rawHeaders: readonly string[], name: string): string | undefined {
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]!.toLowerCase() === name) return rawHeaders[i + 1];
  return undefined;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Waits until `check` is true (polling), or fails after `ms`. */
export async function eventually(check: () => boolean, ms = 3_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

export function sseEvent(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** A minimal capture: exchange id from `i`, a zeroed request body of `bodyBytes`. */
export function rawCapture(i: number, bodyBytes: number): import('../src/capture.js').RawCapture {
  return {
    exchangeId: `0190a0a0-0000-7000-8000-${String(i).padStart(12, '0')}`,
    tenantId: 't',
    keyId: 'k',
    method: 'POST',
    path: '/v1/messages',
    query: '',
    requestHeaders: [['content-type', 'application/json']],
    requestBody: new Uint8Array(bodyBytes),
    status: 200,
    responseSource: 'upstream',
    responseHeaders: [['content-type', 'application/json']],
    responseBody: new Uint8Array(0),
    responseBodyBytes: 0,
    responseBodyTruncated: false,
    timings: { receivedAt: Date.now(), dispatchedMs: 0, upstreamFirstByteMs: 1, doneMs: 2, addedOverheadMs: 0.1 },
    clientAborted: false,
    error: null,
  };
}

/** Options for a RelayThread started directly by a test: recording on, loopback, 1 MiB bodies, 5 s timeouts. */
export function relayThreadOptions(upstreamUrl: string, key: StaticKey, extra: Partial<RelayThreadOptions> = {}): RelayThreadOptions {
  return {
    refusal: null,
    upstreamKeepAliveMs: 4_000,
    upstreamQueueTimeoutMs: 2_000,
    host: '127.0.0.1',
    port: 0,
    exclusivePort: true,
    upstreamUrl,
    upstreamConnections: 16,
    keys: [key],
    recording: true,
    upstreamClient: 'native',
    bodyLimitBytes: 1024 * 1024,
    headerLimitBytes: 64 * 1024,
    firstByteTimeoutMs: 5_000,
    idleTimeoutMs: 5_000,
    ...extra,
  };
}
