// The upstream side of the relay as Exchange sees it: one dispatch call per request and a
// handler with undici's (legacy) callback protocol, which both clients speak:
//   - `native` (default): the HTTP/1.1 keep-alive client in native-client.ts, about 40% less
//     CPU per request than undici on this path (measured: ~60 vs ~100 µs per 9 KB POST);
//   - `undici`: undici's Pool, kept as a fallback.
import { Pool } from 'undici';
import type { PoolSnapshot } from './metrics.js';
import { NativePool } from './native-client.js';

export interface UpstreamRequest {
  method: string;
  /** Path with query string, as sent on the request line. */
  path: string;
  /** Flat [name, value, …]; no host, content-length or hop-by-hop headers. */
  headers: string[];
  body: Buffer | null;
  /** Time from the request being written to the response headers. */
  headersTimeout: number;
  /** Longest silence while the response body streams. */
  bodyTimeout: number;
}

/** undici's legacy dispatch handler protocol (the subset the relay uses). */
export interface UpstreamHandler {
  /** `abort` cancels this request (its connection is not reused). */
  onConnect(abort: (err?: Error) => void): void;
  /**
   * Return false to pause the body until `resume` is called. `lowerNames` (native client
   * only): the header names lower-cased, one per name/value pair of rawHeaders.
   */
  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string, lowerNames?: string[]): boolean;
  /**
   * Return false to pause. `chunk` may be a view into a reused read buffer: it is valid only
   * during this call, so whatever the handler keeps it must copy.
   */
  onData(chunk: Buffer): boolean;
  onComplete(trailers: string[] | null): void;
  onError(err: Error): void;
}

export interface UpstreamClient {
  /**
   * True when the request body is no longer read once the handler got onComplete or onError
   * (written, or the connection destroyed), so the relay may reuse its buffer.
   */
  readonly bodyDoneAtSettle: boolean;
  dispatch(req: UpstreamRequest, handler: UpstreamHandler): void;
  stats(): PoolSnapshot;
  destroy(): Promise<void>;
}

export type UpstreamClientKind = 'native' | 'undici';

export interface UpstreamClientOptions {
  /** Origin, e.g. `https://api.anthropic.com`. */
  origin: string;
  connections: number;
  headersTimeout: number;
  bodyTimeout: number;
  maxHeaderSize: number;
  /** Idle pooled connections are closed after this long (native client; default 4 s). */
  keepAliveMs?: number;
  /** Longest wait for a free connection when all are busy (native client; default 2 s). */
  queueTimeoutMs?: number;
  /** PEM certificates trusted for an https upstream instead of Node's default CAs. */
  ca?: string;
}

class UndiciClient implements UpstreamClient {
  /** Not promised by undici's API: bodies are never reused with it. */
  readonly bodyDoneAtSettle = false;
  private readonly pool: Pool;
  constructor(o: UpstreamClientOptions) {
    this.pool = new Pool(o.origin, {
      connections: o.connections,
      pipelining: 1,
      headersTimeout: o.headersTimeout,
      bodyTimeout: o.bodyTimeout,
      connectTimeout: 10_000,
      maxHeaderSize: o.maxHeaderSize,
      ...(o.ca !== undefined ? { connect: { ca: o.ca } } : {}),
      ...(o.keepAliveMs !== undefined ? { keepAliveTimeout: o.keepAliveMs, keepAliveMaxTimeout: o.keepAliveMs } : {}),
    });
  }

  dispatch(req: UpstreamRequest, handler: UpstreamHandler): void {
    this.pool.dispatch(
      { method: req.method, path: req.path, headers: req.headers, body: req.body, headersTimeout: req.headersTimeout, bodyTimeout: req.bodyTimeout },
      handler,
    );
  }

  stats(): PoolSnapshot {
    const s = this.pool.stats;
    return { connected: s.connected, free: s.free, pending: s.pending, running: s.running };
  }

  destroy(): Promise<void> {
    return this.pool.destroy().catch(() => {});
  }
}

export function createUpstreamClient(kind: UpstreamClientKind, o: UpstreamClientOptions): UpstreamClient {
  return kind === 'undici' ? new UndiciClient(o) : new NativePool(o);
}
