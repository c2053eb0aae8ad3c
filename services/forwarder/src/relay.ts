// One relay thread: a uWS app listening on the forwarder port (shared through SO_REUSEPORT
// when several threads run) and an undici pool to upstream. Runs in the main thread when
// threads = 1, otherwise one per worker thread.
import { performance } from 'node:perf_hooks';
import uWS from 'uWebSockets.js';
import type { HttpRequest, HttpResponse, TemplatedApp, us_listen_socket } from 'uWebSockets.js';
import type { CaptureParts } from './capture-batch.js';
import { Exchange } from './exchange.js';
import { staticKeyStore, type KeyStore, type StaticKey } from './keys.js';
import { RelayMetrics, type MetricsSnapshot } from './metrics.js';
import type { RefusalCode, RelayContext, RelaySettings } from './relay-context.js';
import type { RelayLog } from './relay-log.js';
import { createUpstreamClient, type UpstreamClient, type UpstreamClientKind } from './upstream.js';

/** Response body bytes a capture keeps by default (RelayThreadOptions.responseCaptureLimitBytes). */
export const DEFAULT_RESPONSE_CAPTURE_LIMIT_BYTES = 32 * 1024 * 1024;

/** How long a finished exchange's capture waits for others before the hand-off (RelayThreadOptions.captureHandoffDelayMs). */
export const DEFAULT_CAPTURE_HANDOFF_DELAY_MS = 1;
/** A waiting batch is handed over at once when it holds this many captures… */
const HANDOFF_MAX_CAPTURES = 32;
/** …or this many body bytes (well inside a capture ring entry, so batches rarely go by message). */
const HANDOFF_MAX_BYTES = 256 * 1024;

/** Everything a relay thread needs; plain data so it can be a worker's workerData. */
export interface RelayThreadOptions extends Omit<RelaySettings, 'responseCaptureLimitBytes'> {
  /** See RelaySettings; default DEFAULT_RESPONSE_CAPTURE_LIMIT_BYTES. 0 keeps no response body. */
  responseCaptureLimitBytes?: number;
  /** Admission state at start (see RelayThread.refusal). */
  refusal: RefusalCode | null;
  /** Idle pooled upstream connections are closed after this long. */
  upstreamKeepAliveMs: number;
  /** Longest wait for an upstream connection when all are busy (then 503). */
  upstreamQueueTimeoutMs: number;
  /** PEM CA certificates for an https upstream (default: Node's). */
  upstreamCa?: string;
  host: string;
  port: number;
  /** Refuse a port someone else holds; off when threads share the port via SO_REUSEPORT. */
  exclusivePort: boolean;
  upstreamUrl: string;
  /** Upstream connections of this thread's pool. */
  upstreamConnections: number;
  keys: StaticKey[];
  /** Build captures for a Recorder. */
  recording: boolean;
  /**
   * Captures of finished exchanges are handed over this many ms later, together (default
   * DEFAULT_CAPTURE_HANDOFF_DELAY_MS; 0: each at once, as its exchange finishes). See
   * RelayThread.captured.
   */
  captureHandoffDelayMs?: number;
  /** Which HTTP client talks to upstream (default `native`). */
  upstreamClient: UpstreamClientKind;
}

export interface RelaySinks {
  /**
   * Completed exchanges' capture parts. Their bodies and header bytes are the relay's own
   * (pooled) buffers, which go back to the pool when this returns: the sink copies what it
   * keeps (writeBatch, capture-batch.ts).
   */
  captures(captures: readonly CaptureParts[]): void;
  log: RelayLog;
}

const LIBUS_LISTEN_EXCLUSIVE_PORT = 1;
type ListenWithOptions = (host: string, port: number, options: number, cb: (s: us_listen_socket | false) => void) => TemplatedApp;

/** captureHandoffDelayMs, checked (TypeError when it is not an integer from 0 to 1000). */
export function captureHandoffDelay(value: number | undefined): number {
  const v = value ?? DEFAULT_CAPTURE_HANDOFF_DELAY_MS;
  if (!Number.isSafeInteger(v) || v < 0 || v > 1_000) throw new TypeError(`relay option captureHandoffDelayMs must be an integer from 0 to 1000 (got ${String(value)})`);
  return v;
}

function captureLimit(value: number | undefined): number {
  const v = value ?? DEFAULT_RESPONSE_CAPTURE_LIMIT_BYTES;
  if (!Number.isSafeInteger(v) || v < 0) throw new TypeError(`relay option responseCaptureLimitBytes must be a non-negative integer (got ${String(value)})`);
  return v;
}

export class RelayThread implements RelayContext {
  readonly opts: RelaySettings;
  readonly keys: KeyStore;
  readonly upstream: UpstreamClient;
  readonly basePath: string;
  readonly metrics = new RelayMetrics();
  readonly inFlight = new Set<Exchange>();
  readonly recording: boolean;
  readonly log: RelayLog;
  /**
   * Admission: while set, every new authenticated request is answered 503 with this code
   * without going upstream (recording cannot take more). Set from the main thread.
   */
  refusal: RefusalCode | null;
  port = 0;

  private readonly app: TemplatedApp;
  private listenSocket: us_listen_socket | null = null;
  private idleWaiters: Array<() => void> = [];
  private stopping: Promise<void> | null = null;
  private readonly handoffDelayMs: number;
  /** Finished exchanges whose captures wait for the hand-off (their buffers are held until then). */
  private handoffWaiting: Exchange[] = [];
  private handoffBytes = 0;
  private handoffTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly options: RelayThreadOptions,
    private readonly sinks: RelaySinks,
  ) {
    this.opts = {
      bodyLimitBytes: options.bodyLimitBytes,
      headerLimitBytes: options.headerLimitBytes,
      firstByteTimeoutMs: options.firstByteTimeoutMs,
      idleTimeoutMs: options.idleTimeoutMs,
      responseCaptureLimitBytes: captureLimit(options.responseCaptureLimitBytes),
    };
    this.keys = staticKeyStore(options.keys);
    this.recording = options.recording;
    this.handoffDelayMs = captureHandoffDelay(options.captureHandoffDelayMs);
    this.refusal = options.refusal;
    this.log = sinks.log;
    const upstream = new URL(options.upstreamUrl);
    this.basePath = upstream.pathname.replace(/\/+$/, '');
    this.upstream = createUpstreamClient(options.upstreamClient, {
      origin: upstream.origin,
      connections: options.upstreamConnections,
      headersTimeout: options.firstByteTimeoutMs,
      bodyTimeout: options.idleTimeoutMs,
      maxHeaderSize: Math.max(16 * 1024, options.headerLimitBytes),
      keepAliveMs: options.upstreamKeepAliveMs,
      queueTimeoutMs: options.upstreamQueueTimeoutMs,
      ...(options.upstreamCa !== undefined ? { ca: options.upstreamCa } : {}),
    });
    this.app = uWS.App().any('/*', this.onRequest);
  }

  private readonly onRequest = (res: HttpResponse, req: HttpRequest): void => {
    const ex = new Exchange(this, res, performance.now());
    res.onAborted(ex.onAborted);
    try {
      ex.begin(req);
    } catch (e) {
      ex.fail(e);
    }
  };

  /** Binds the port; resolves with the actual port (useful for port 0). */
  listen(): Promise<number> {
    const { host, port, exclusivePort } = this.options;
    return new Promise((resolve, reject) => {
      const done = (socket: us_listen_socket | false): void => {
        if (!socket) {
          reject(new Error(`cannot listen on ${host}:${port} (address in use or not available)`));
          return;
        }
        this.listenSocket = socket;
        this.port = uWS.us_socket_local_port(socket);
        resolve(this.port);
      };
      if (exclusivePort) (this.app.listen as unknown as ListenWithOptions).call(this.app, host, port, LIBUS_LISTEN_EXCLUSIVE_PORT, done);
      else this.app.listen(host, port, done);
    });
  }

  /** Stops accepting connections; open ones keep being served. */
  closeListener(): void {
    if (this.listenSocket !== null) {
      uWS.us_listen_socket_close(this.listenSocket);
      this.listenSocket = null;
    }
  }

  /**
   * Graceful stop: stop accepting, let in-flight exchanges finish for up to `graceMs`, then
   * abort the rest (503 if nothing was sent yet, otherwise the connection is closed).
   */
  stop(graceMs: number): Promise<void> {
    this.stopping ??= (async () => {
      this.closeListener();
      await this.waitIdle(graceMs);
      if (this.inFlight.size > 0) {
        this.log('warn', 'shutdown grace period over: aborting in-flight exchanges', { count: this.inFlight.size });
        for (const ex of [...this.inFlight]) ex.abortForShutdown();
        await this.waitIdle(1_000);
      }
      this.handOver(); // captures still waiting go before the thread reports it stopped
      // Closes the idle keep-alive connections too, so the thread can exit.
      (this.app as unknown as { close(): void }).close();
      await this.upstream.destroy();
    })();
    return this.stopping;
  }

  snapshot(): MetricsSnapshot {
    return this.metrics.snapshot(this.inFlight.size, this.upstream.stats());
  }

  // ---- RelayContext ---------------------------------------------------------------------

  /**
   * A recorded exchange finished. Its capture waits up to `captureHandoffDelayMs` and is
   * handed over with the others that finished meanwhile. The hand-off (the capture's bytes
   * copied into the ring) costs this thread ~10 µs warm, 20–25 µs alone on cold caches, and
   * done here it would come right after the response's last write: whoever that write
   * woke on this thread's CPU (a client on the same host, like Claude Code beside `npm
   * start`'s sensor, or the bench's load generator) would wait for it. Deferred, the
   * thread sleeps first; under load one hand-off carries many captures. Costs: one timer
   * wake per batch, and the exchange's buffers held that much longer.
   */
  captured(ex: Exchange): void {
    this.handoffWaiting.push(ex);
    this.handoffBytes += ex.captureBytes;
    if (this.handoffDelayMs === 0 || this.handoffWaiting.length >= HANDOFF_MAX_CAPTURES || this.handoffBytes >= HANDOFF_MAX_BYTES) {
      this.handOver();
    } else {
      this.handoffTimer ??= setTimeout(this.handOver, this.handoffDelayMs);
    }
  }

  /** Hands every waiting capture over, in the order their exchanges finished. */
  private readonly handOver = (): void => {
    if (this.handoffTimer !== undefined) {
      clearTimeout(this.handoffTimer);
      this.handoffTimer = undefined;
    }
    const waiting = this.handoffWaiting;
    if (waiting.length === 0) return;
    this.handoffWaiting = [];
    this.handoffBytes = 0;
    const parts: CaptureParts[] = [];
    for (const ex of waiting) {
      try {
        parts.push(ex.captureParts());
      } catch (e) {
        this.log('error', 'could not build capture', { err: e });
      }
    }
    try {
      if (parts.length > 0) this.sinks.captures(parts);
    } catch (e) {
      this.log('error', 'capture sink failed', { err: e, captures: parts.length });
    } finally {
      for (const ex of waiting) ex.releaseCaptureBuffers();
    }
  };

  exchangeDone(): void {
    if (this.inFlight.size === 0 && this.idleWaiters.length > 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  private waitIdle(timeoutMs: number): Promise<void> {
    if (this.inFlight.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(resolve, timeoutMs);
      this.idleWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}
