// One client request relayed upstream: the uWS response on one side, the upstream dispatch
// handler on the other. Everything here is the hot path: one pass over the request headers
// for framing and auth (the upstream header list is built only for admitted requests), the
// body copied once out of uWS into a buffer sized by Content-Length, response chunks written
// to the client as they arrive, and back-pressure from a slow client pausing the upstream
// body instead of buffering it. Per request there is one Exchange and two closures (the uWS callbacks that
// get no context); everything else is shared.
//
// uWS rules kept throughout: onAborted is registered before anything else; the request
// object is read synchronously in `begin`; `res` is never touched after it ended or aborted
// (`responded` / `clientGone`); writes outside a uWS callback are corked.
import {
  ERRORS,
  GLITCH_KEY_HEADER,
  connectionTokens,
  errorBody,
  glitchError,
  isRelayedResponseHeader,
  upstreamRequestHeaders,
  type ErrorCode,
  type GlitchError,
} from '@glitch/protocol';
import { STATUS_CODES } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { HttpRequest, HttpResponse } from 'uWebSockets.js';
import type { CaptureParts } from './capture-batch.js';
import type { KeyIdentity } from './keys.js';
import type { RelayContext } from './relay-context.js';
import type { UpstreamHandler } from './upstream.js';
import { uuidv7 } from './uuid.js';

/** Why the relay aborted an upstream request itself; carries the catalogue code. */
export class RelayAbort extends Error {
  constructor(readonly code: ErrorCode) {
    super(code);
    this.name = 'RelayAbort';
  }
}

const RECEIVING = 0; // reading the request body
const DISPATCHED = 1; // waiting for upstream headers
const RESPONDING = 2; // relaying the upstream response
const DONE = 3;

const BODY_NONE = 0; // HEAD, 204, 304: headers only
const BODY_SIZED = 1; // upstream sent content-length: tryEnd keeps it
const BODY_CHUNKED = 2; // no length (SSE): chunked writes, flushed per chunk

const EMPTY = new Uint8Array(0);
const NO_HEADERS: readonly string[] = [];
/** First allocation for a recorded response of unknown length (SSE); doubles as needed, up to the capture limit. */
const RESPONSE_CAPTURE_START = 16 * 1024;
/** Largest allocation made up front for a recorded response of known length (it may never arrive). */
const RESPONSE_CAPTURE_MAX_PREALLOC = 8 * 1024 * 1024;

/** Errors that mean "no connection to upstream could be made". */
const CONNECT_ERRORS = new Set(['UND_ERR_CONNECT', 'ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'UND_ERR_CONNECT_TIMEOUT']);

function statusLine(status: number, text?: string): string {
  return `${status} ${text || STATUS_CODES[status] || 'Unknown'}`;
}

/** Copies parts into `out` (exactly their total size). */
function concatInto(out: Buffer, parts: readonly Uint8Array[]): Buffer {
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** The names of a flat [name, value, …] header list, lower-cased (undici's path; the native client hands them over). */
function lowerCaseNames(rawHeaders: readonly Buffer[]): string[] {
  const names: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) names.push(rawHeaders[i]!.toString('latin1').toLowerCase());
  return names;
}

/** RFC 9110 Content-Length: 1*DIGIT. Number() would also take ` 5`, `0x5`, `1e3` or ``. */
function contentLengthValue(v: string): number {
  if (v.length === 0 || v.length > 15) return -2;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return -2;
  }
  return Number(v);
}

// ---- body buffers ------------------------------------------------------------------------
// Request bodies, and the recorded copies of response bodies, go back to a per-thread pool
// once the exchange is over (a recorded exchange's once its capture is packed): an
// ArrayBuffer allocated per request is external memory V8 reclaims only by full
// (mark-compact) collections, which at thousands of requests per second ran several times
// per second. By `finish` the upstream connection has written the body or was destroyed, so
// nothing reads a returned buffer any more.

const POOL_MIN_CLASS = 12; // 4 KiB
const POOL_MAX_CLASS = 20; // 1 MiB: larger bodies are allocated and left to the GC
const POOL_MAX_PER_CLASS = 64;
const bodyPool: Buffer[][] = Array.from({ length: POOL_MAX_CLASS + 1 }, () => []);

function sizeClass(n: number): number {
  const c = 32 - Math.clz32(n - 1);
  return c < POOL_MIN_CLASS ? POOL_MIN_CLASS : c;
}

/** A buffer of exactly `n` bytes (a view on a pooled one when it fits a class). */
function takeBody(n: number, pooled: boolean): Buffer {
  if (!pooled || n === 0 || n > 1 << POOL_MAX_CLASS) return Buffer.allocUnsafeSlow(n);
  const c = sizeClass(n);
  const free = bodyPool[c]!;
  const whole = free.length > 0 ? free.pop()! : Buffer.allocUnsafeSlow(1 << c);
  return whole.length === n ? whole : whole.subarray(0, n);
}

function returnBody(b: Buffer): void {
  const whole = b.byteOffset === 0 && b.length !== b.buffer.byteLength ? Buffer.from(b.buffer, 0, b.buffer.byteLength) : b;
  const n = whole.length;
  if (n < 1 << POOL_MIN_CLASS || n > 1 << POOL_MAX_CLASS || (n & (n - 1)) !== 0 || whole.byteOffset !== 0) return;
  const free = bodyPool[31 - Math.clz32(n)]!;
  if (free.length < POOL_MAX_PER_CLASS) free.push(whole);
}

// ---- shared callbacks --------------------------------------------------------------------
// uWS calls these synchronously (forEach, cork), so the target can sit in a module variable
// instead of a closure per request. Each reads its target before doing anything that could
// re-enter.

let collecting: string[] | null = null;
function collectHeader(name: string, value: string): void {
  collecting!.push(name, value);
}

let corkTarget: Exchange | null = null;
function corkedWriteCurrent(): void {
  const ex = corkTarget!;
  corkTarget = null;
  ex.writeCurrent();
}
function corkedWriteHead(): void {
  const ex = corkTarget!;
  corkTarget = null;
  ex.writeHead();
}
function corkedEnd(): void {
  const ex = corkTarget!;
  corkTarget = null;
  ex.endResponse();
}

export class Exchange implements UpstreamHandler {
  private id = '';
  private method = '';
  private path = '';
  private query = '';
  /** Request headers as received (flat, names lower-cased by uWS): kept for the capture. */
  private headers: string[] = [];
  /** What goes upstream (flat). */
  private identity: KeyIdentity | null = null;
  private recording = false;

  private phase = RECEIVING;
  private clientGone = false;
  /** `res` has ended (or was closed): it must not be used again. */
  private responded = false;
  /** Something was written to the client, so the status can no longer change. */
  private headSent = false;
  private finished = false;

  private body: Buffer | null = null;
  private bodyParts: Buffer[] | null = null;
  private bodyLen = 0;

  private abortUpstream: ((err?: Error) => void) | null = null;
  private resumeUpstream: (() => void) | null = null;
  private abortReason: RelayAbort | null = null;
  private paused = false;
  private writableRegistered = false;

  private status = 0;
  private statusText = '';
  private rawHeaders: Buffer[] | null = null;
  private lowerNames: string[] | null = null;
  private listedHopByHop: Set<string> | null = null;
  private bodyMode = BODY_CHUNKED;
  private contentLength = -1;
  private current: Buffer | null = null;
  /** The part of a sized body tryEnd could not send yet (own copy), from write offset pendingOffset. */
  private pending: Buffer | null = null;
  private pendingOffset = 0;
  /** Recorded response bytes (own copies: upstream chunks are views into a reused buffer), at most the capture limit. */
  private respBody: Buffer | null = null;
  /** Bytes written to respBody. */
  private respBytes = 0;
  /** Response body bytes upstream sent, whether captured or not. */
  private respTotal = 0;
  private glitchResponse: { headers: string[]; body: Buffer } | null = null;

  private readonly receivedAt = Date.now();
  private tDispatch = 0;
  private tFirstByte = 0;
  private doneAt = 0;
  private overhead = 0;
  private error: GlitchError | null = null;

  constructor(
    private readonly ctx: RelayContext,
    private readonly res: HttpResponse,
    private readonly t0: number,
  ) {}

  // ---- client side ----------------------------------------------------------------------

  /** Runs inside the uWS route handler; the request object is only valid until it returns. */
  begin(req: HttpRequest): void {
    const ctx = this.ctx;
    const method = req.getCaseSensitiveMethod();
    const path = req.getUrl();
    const query = req.getQuery() ?? '';
    const headers = this.headers;
    collecting = headers;
    req.forEach(collectHeader);
    collecting = null;
    this.method = method;
    this.path = path;
    this.query = query;

    // Framing checks and the Glitch key; the upstream header list is built at dispatch
    // (upstreamRequestHeaders), so refused requests never pay for it.
    let size = method.length + path.length + query.length + 12;
    let key = '';
    let contentLength = -1;
    let transferEncoding: string | null = null;
    let malformed = false;
    for (let i = 0; i < headers.length; i += 2) {
      // uWS lower-cases header names.
      const name = headers[i]!;
      const value = headers[i + 1]!;
      size += name.length + value.length + 4;
      switch (name) {
        case GLITCH_KEY_HEADER:
          key = value;
          break;
        case 'content-length': {
          const n = contentLengthValue(value);
          // RFC 9112 §6.3: an invalid or differing length is an unrecoverable framing error (smuggling).
          if (n < 0 || (contentLength !== -1 && contentLength !== n)) malformed = true;
          contentLength = n;
          break;
        }
        case 'transfer-encoding':
          // uWS decodes `chunked` only; any other (or a second) coding leaves the length unknown.
          if (transferEncoding !== null) malformed = true;
          transferEncoding = value;
          break;
      }
    }
    const chunked = transferEncoding !== null;
    if (chunked && transferEncoding!.trim().toLowerCase() !== 'chunked') malformed = true;
    const hasBody = contentLength > 0 || chunked;

    if (size > ctx.opts.headerLimitBytes) return this.reject('headers_too_large', true);
    // RFC 9112 §6.1: Content-Length with Transfer-Encoding is a smuggling attempt.
    if (malformed || path.charCodeAt(0) !== 0x2f || (chunked && contentLength !== -1)) return this.reject('malformed_request', true);
    // Claude Code's credential-less connectivity checks: relayed, never recorded.
    const preconnect = method === 'HEAD' && (path === '/api/hello' || path === '/');
    if (!preconnect) {
      if (key === '') return this.reject('auth_missing', hasBody);
      const identity = ctx.keys.lookup(key);
      if (identity === null) return this.reject('auth_invalid', hasBody);
      this.identity = identity;
      // Recording cannot take more (spool full under the refuse policy, or its backlog over
      // bound): nothing new goes upstream, and the refusal is counted in metrics, not
      // recorded (its record would only add to what is already too much).
      if (ctx.refusal !== null) return this.reject(ctx.refusal, hasBody);
      this.recording = ctx.recording; // its id is made with the capture, off the request's path
    }
    if (contentLength > ctx.opts.bodyLimitBytes) return this.reject('body_too_large', true);

    ctx.inFlight.add(this);
    if (hasBody) {
      // One copy out of uWS, into a buffer of the declared size, from the thread's pool when
      // it can go back there once the exchange is over (a capture copies what it keeps).
      if (contentLength > 0) this.body = takeBody(contentLength, ctx.upstream.bodyDoneAtSettle);
      else this.bodyParts = [];
      this.res.onData(this.onRequestBody);
      this.overhead += performance.now() - this.t0;
      return;
    }
    this.dispatch();
    this.overhead += performance.now() - this.t0;
  }

  readonly onAborted = (): void => {
    if (this.responded || this.finished) return; // uWS may report a close after a complete response
    this.clientGone = true;
    this.responded = true;
    if (this.phase === RECEIVING) {
      this.error = glitchError('client_aborted');
      this.finish();
      return;
    }
    this.abortWith(new RelayAbort('client_aborted'));
  };

  private readonly onRequestBody = (chunk: ArrayBuffer, isLast: boolean): void => {
    const t = performance.now();
    try {
      if (this.responded || this.phase !== RECEIVING) return;
      const n = chunk.byteLength;
      const body = this.body;
      if (n > 0) {
        if (body !== null) {
          if (this.bodyLen + n > body.length) return this.reject('malformed_request', true);
          body.set(new Uint8Array(chunk), this.bodyLen);
        } else {
          if (this.bodyLen + n > this.ctx.opts.bodyLimitBytes) return this.reject('body_too_large', true);
          this.bodyParts!.push(Buffer.from(new Uint8Array(chunk))); // copy: uWS neuters it on return
        }
        this.bodyLen += n;
        this.ctx.metrics.bytesIn += n;
      }
      if (isLast) {
        if (body !== null) {
          // Short of the declared length: the rest of the buffer was never written, and
          // uninitialized memory must never go upstream.
          if (this.bodyLen !== body.length) return this.reject('malformed_request', true);
        } else {
          this.body = concatInto(takeBody(this.bodyLen, this.ctx.upstream.bodyDoneAtSettle), this.bodyParts!);
          this.bodyParts = null;
        }
        this.dispatch();
      }
    } catch (e) {
      this.fail(e);
    } finally {
      this.overhead += performance.now() - t;
    }
  };

  private dispatch(): void {
    const ctx = this.ctx;
    this.phase = DISPATCHED;
    this.tDispatch = performance.now();
    const query = this.query;
    ctx.upstream.dispatch(
      {
        method: this.method,
        path: query === '' ? ctx.basePath + this.path : ctx.basePath + this.path + '?' + query,
        headers: upstreamRequestHeaders(this.headers),
        body: this.body !== null && this.body.length > 0 ? this.body : null,
        headersTimeout: ctx.opts.firstByteTimeoutMs,
        bodyTimeout: ctx.opts.idleTimeoutMs,
      },
      this,
    );
  }

  /** Glitch answers itself with an Anthropic-shaped error. */
  private respondError(code: ErrorCode, message: string | undefined, closeConnection: boolean): void {
    const spec: { status: number; retryAfterSeconds?: number } = ERRORS[code];
    this.error = glitchError(code, message);
    if (this.responded) return;
    const requestId = this.id || (this.id = uuidv7(this.receivedAt));
    const body = errorBody(code, requestId, message);
    // Flat [name, value, …], as captures take them.
    const headers = ['content-type', 'application/json', 'request-id', requestId, 'x-glitch-error', code];
    if (spec.retryAfterSeconds !== undefined) headers.push('retry-after', String(spec.retryAfterSeconds));
    this.status = spec.status;
    this.glitchResponse = { headers, body };
    this.responded = true;
    this.headSent = true;
    const res = this.res;
    const head = this.method === 'HEAD';
    res.cork(() => {
      res.writeStatus(statusLine(spec.status));
      for (let i = 0; i + 1 < headers.length; i += 2) res.writeHeader(headers[i]!, headers[i + 1]!);
      // A response to HEAD has no body (uWS would send one). endWithoutBody only without
      // arguments leaves the length to us and the connection reusable in this uWS version.
      if (head) res.writeHeader('content-length', String(body.length)).endWithoutBody();
      else res.end(body, closeConnection);
    });
  }

  /** Refuses the request before it goes upstream. */
  private reject(code: ErrorCode, closeConnection: boolean): void {
    this.respondError(code, undefined, closeConnection);
    this.finish();
  }

  /** An unexpected exception in the relay code: answer 500 or cut the stream, never crash. */
  fail(e: unknown): void {
    this.ctx.log('error', 'relay error', { err: e, path: this.path });
    this.abortWith(new RelayAbort('internal_error'));
    if (!this.headSent) this.respondError('internal_error', undefined, true);
    else if (!this.responded) this.closeClient();
    this.error ??= glitchError('internal_error');
    if (this.phase === RECEIVING) this.finish();
  }

  private closeClient(): void {
    if (this.responded) return;
    this.responded = true; // close() runs onAborted synchronously: it must see the response as over
    this.res.close();
  }

  private abortWith(reason: RelayAbort): void {
    if (this.phase === RECEIVING || this.phase === DONE) return;
    this.abortReason ??= reason;
    // Not yet on a connection (queued in the pool): onConnect aborts it.
    this.abortUpstream?.(reason);
  }

  /** Shutdown deadline passed: answer 503 if nothing was sent yet, else cut the stream. */
  abortForShutdown(): void {
    if (this.finished) return;
    if (this.phase === RECEIVING) {
      this.respondError('shutdown_aborted', undefined, true);
      this.finish();
      return;
    }
    this.abortWith(new RelayAbort('shutdown_aborted'));
  }

  // ---- upstream side (dispatch handler) ---------------------------------------------------

  onConnect(abort: (err?: Error) => void): void {
    this.abortUpstream = abort;
    if (this.abortReason !== null) abort(this.abortReason);
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string, lowerNames?: string[]): boolean {
    if (statusCode < 200) return true; // informational; the final response follows
    const t = performance.now();
    this.tFirstByte = t;
    this.ctx.metrics.upstreamLatency.observe((t - this.tDispatch) / 1000);
    this.phase = RESPONDING;
    this.resumeUpstream = resume;
    this.status = statusCode;
    this.statusText = statusText;
    this.rawHeaders = rawHeaders;
    if (this.clientGone) return false;

    const names = lowerNames ?? lowerCaseNames(rawHeaders);
    let contentLength = -1;
    for (let i = 0, j = 0; i < rawHeaders.length; i += 2, j++) {
      const name = names[j]!;
      if (name.length === 14 && name === 'content-length') contentLength = Number(rawHeaders[i + 1]!.toString('latin1'));
      else if (name.length === 10 && name === 'connection') {
        for (const t of connectionTokens(rawHeaders[i + 1]!.toString('latin1'))) (this.listedHopByHop ??= new Set()).add(t);
      }
    }
    this.lowerNames = names;
    this.contentLength = contentLength;
    if (this.method === 'HEAD' || statusCode === 204 || statusCode === 304) this.bodyMode = BODY_NONE;
    else if (contentLength >= 0 && Number.isSafeInteger(contentLength)) this.bodyMode = BODY_SIZED;
    else this.bodyMode = BODY_CHUNKED;
    if (this.recording && this.bodyMode !== BODY_NONE) {
      const first = this.bodyMode === BODY_SIZED ? Math.min(contentLength, RESPONSE_CAPTURE_MAX_PREALLOC) : RESPONSE_CAPTURE_START;
      this.respBody = takeBody(Math.min(first, this.ctx.opts.responseCaptureLimitBytes), true);
    }
    // A stream's headers go out now so the client sees the response start; a sized body's
    // headers go out with its first chunk (one write instead of two).
    if (this.bodyMode === BODY_CHUNKED) {
      corkTarget = this;
      this.res.cork(corkedWriteHead);
    }
    this.overhead += performance.now() - t;
    return true;
  }

  onData(chunk: Buffer): boolean {
    const t = performance.now();
    const n = chunk.length;
    this.ctx.metrics.bytesOut += n;
    this.respTotal += n;
    if (this.respBody !== null && this.respBytes < this.ctx.opts.responseCaptureLimitBytes) this.record(chunk);
    if (this.responded) return !this.clientGone;
    this.current = chunk;
    corkTarget = this;
    this.res.cork(corkedWriteCurrent);
    this.overhead += performance.now() - t;
    return !this.paused;
  }

  /**
   * Appends a response chunk to the recorded body (a copy: `chunk` is only valid now), up to
   * the capture limit; the buffer never grows past it.
   */
  private record(chunk: Buffer): void {
    const limit = this.ctx.opts.responseCaptureLimitBytes;
    const at = this.respBytes;
    const take = Math.min(chunk.length, limit - at);
    const end = at + take;
    let buf = this.respBody!;
    if (end > buf.length) {
      // A stream grew, a sized body outgrew its capped prealloc, or upstream sent more than
      // its content-length (it is cut off by then). Aim at the declared length, so a
      // complete body needs no second growth.
      let size = Math.max(end, buf.length * 2);
      if (this.bodyMode === BODY_SIZED && this.contentLength >= end) size = Math.min(size, this.contentLength);
      const grown = takeBody(Math.min(size, limit), true);
      buf.copy(grown, 0, 0, at);
      returnBody(buf);
      this.respBody = buf = grown;
    }
    chunk.copy(buf, at, 0, take);
    this.respBytes = end;
  }

  onComplete(_trailers: string[] | null): void {
    if (!this.responded) {
      const t = performance.now();
      corkTarget = this;
      this.res.cork(corkedEnd);
      this.overhead += performance.now() - t;
    }
    this.finish();
  }

  onError(err: Error): void {
    const code = this.classify(err);
    if (this.clientGone) {
      this.error = glitchError(code);
    } else if (!this.headSent) {
      const detail = code === 'malformed_request' || code === 'internal_error' ? undefined : this.errorDetail(code, err);
      this.respondError(code, detail, code === 'malformed_request');
    } else {
      // The status line is out: all that is left is to tell the client the body is incomplete.
      this.error = glitchError(code, this.errorDetail(code, err));
      this.closeClient();
    }
    if (code === 'internal_error') this.ctx.log('error', 'unexpected upstream error', { err, path: this.path });
    this.finish();
  }

  private classify(err: Error): ErrorCode {
    if (err instanceof RelayAbort) return err.code;
    if (this.clientGone) return 'client_aborted';
    const e = err as NodeJS.ErrnoException;
    const code = e.code ?? '';
    if (code === 'UND_ERR_HEADERS_TIMEOUT') return 'upstream_first_byte_timeout';
    if (code === 'UND_ERR_BODY_TIMEOUT') return this.headSent ? 'upstream_idle_timeout' : 'upstream_first_byte_timeout';
    if (code === 'UND_ERR_POOL_FULL') return 'upstream_pool_exhausted';
    if (CONNECT_ERRORS.has(code) || e.syscall === 'connect' || e.syscall === 'getaddrinfo' || code.startsWith('ERR_TLS_') || code.startsWith('ERR_SSL_')) {
      return 'upstream_connect_failed';
    }
    if (code === 'UND_ERR_INVALID_ARG' || code === 'UND_ERR_NOT_SUPPORTED' || code === 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH') {
      return this.phase === DISPATCHED ? 'malformed_request' : 'upstream_protocol_error';
    }
    if (code === 'UND_ERR_DESTROYED' || code === 'UND_ERR_CLOSED') return 'shutdown_aborted';
    const afterHeaders = this.phase === RESPONDING;
    if (code === 'UND_ERR_SOCKET' || code === 'ECONNRESET' || code === 'EPIPE' || code === 'UND_ERR_ABORTED') {
      return afterHeaders ? 'upstream_stream_interrupted' : 'upstream_connection_lost';
    }
    if (code.startsWith('HPE_') || code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH' || code === 'UND_ERR_INFO' || code === 'UND_ERR_HEADERS_OVERFLOW') {
      return afterHeaders ? 'upstream_stream_interrupted' : 'upstream_protocol_error';
    }
    return afterHeaders ? 'upstream_stream_interrupted' : 'internal_error';
  }

  private errorDetail(code: ErrorCode, err: Error): string {
    const cause = (err as NodeJS.ErrnoException).code ?? err.name;
    return `${ERRORS[code].message.replace(/\.$/, '')} (${cause}).`;
  }

  // ---- writing to the client (always inside res.cork, via the shared callbacks) ------------

  writeHead(): void {
    const res = this.res;
    const raw = this.rawHeaders!;
    const names = this.lowerNames!;
    const listed = this.listedHopByHop;
    this.headSent = true;
    res.writeStatus(statusLine(this.status, this.statusText));
    for (let i = 0, j = 0; i < raw.length; i += 2, j++) {
      const name = names[j]!;
      if (isRelayedResponseHeader(name) && (listed === null || !listed.has(name))) res.writeHeader(raw[i]!, raw[i + 1]!);
      // HEAD / 304 carry the length of a body that is not sent: relay it as upstream said.
      else if (this.bodyMode === BODY_NONE && name === 'content-length') res.writeHeader(raw[i]!, raw[i + 1]!);
    }
  }

  writeCurrent(): void {
    const res = this.res;
    const chunk = this.current!;
    this.current = null;
    if (!this.headSent) this.writeHead();
    if (this.bodyMode === BODY_CHUNKED) {
      // uWS keeps (copies) what the socket did not take; false means "stop sending until writable".
      if (!res.write(chunk)) this.pauseUpstream();
    } else if (this.bodyMode === BODY_SIZED) {
      const offset = res.getWriteOffset();
      const [ok, done] = res.tryEnd(chunk, this.contentLength);
      if (done) this.responded = true;
      else if (!ok) {
        // tryEnd sent only part of it and keeps none of the rest: retry that from onWritable,
        // from our own copy (`chunk` is only valid during this call).
        const sent = res.getWriteOffset() - offset;
        this.pending = Buffer.from(chunk.subarray(sent));
        this.pendingOffset = offset + sent;
        this.pauseUpstream();
      }
    }
  }

  endResponse(): void {
    const res = this.res;
    if (!this.headSent) this.writeHead();
    this.responded = true;
    if (this.bodyMode === BODY_NONE) res.endWithoutBody();
    else if (this.bodyMode === BODY_CHUNKED || this.contentLength === 0) res.end();
    // BODY_SIZED with a length: the last tryEnd already completed the response.
  }

  private pauseUpstream(): void {
    this.paused = true;
    if (!this.writableRegistered) {
      this.writableRegistered = true;
      this.res.onWritable((offset) => this.onWritable(offset)); // slow clients only
    }
  }

  private onWritable(offset: number): boolean {
    try {
      if (this.responded) return true;
      if (this.pending !== null) {
        const rest = this.pending;
        const from = offset - this.pendingOffset;
        const [ok, done] = this.res.tryEnd(from > 0 ? rest.subarray(from) : rest, this.contentLength);
        if (done) this.responded = true;
        else if (!ok) return false;
        this.pending = null;
      }
      if (this.paused) {
        this.paused = false;
        this.resumeUpstream?.(); // may deliver more data synchronously, which may pause again
      }
      return this.pending === null;
    } catch (e) {
      this.fail(e);
      return true;
    }
  }

  // ---- completion -------------------------------------------------------------------------

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.phase = DONE;
    this.doneAt = performance.now();
    const ctx = this.ctx;
    ctx.inFlight.delete(this);
    ctx.metrics.request(this.path, this.clientGone && !this.headSent ? 0 : this.status);
    if (this.error !== null) ctx.metrics.error(this.error.code);
    if (this.tDispatch > 0) ctx.metrics.addedLatency.observe(this.overhead / 1000);
    if (this.recording) ctx.captured(this);
    else if (this.body !== null && ctx.upstream.bodyDoneAtSettle) {
      returnBody(this.body);
      this.body = null;
    }
    ctx.exchangeDone();
  }

  /**
   * What the capture is made of (called off the hot path, after the response has ended). Its
   * bodies and upstream's header bytes are this exchange's own, valid until
   * releaseCaptureBuffers(): the caller copies what it keeps (writeBatch). By then the
   * upstream connection has either finished writing the request body or been destroyed, so
   * nothing else reads those buffers.
   */
  captureParts(): CaptureParts {
    const t0 = this.t0;
    let requestBody: Uint8Array = EMPTY;
    // Cut short (the client left mid-upload): only what arrived.
    if (this.body !== null) requestBody = this.body.subarray(0, this.bodyLen);
    else if (this.bodyParts !== null) requestBody = Buffer.concat(this.bodyParts, this.bodyLen);

    let responseSource: CaptureParts['responseSource'] = 'none';
    let responseHeaders: readonly (Uint8Array | string)[] = NO_HEADERS;
    let responseBody: Uint8Array = EMPTY;
    if (this.glitchResponse !== null) {
      responseSource = 'glitch';
      responseHeaders = this.glitchResponse.headers;
      responseBody = this.glitchResponse.body;
    } else if (this.tFirstByte > 0) {
      responseSource = 'upstream';
      responseHeaders = this.rawHeaders!;
      if (this.respBody !== null) responseBody = this.respBody.subarray(0, this.respBytes);
    }
    const identity = this.identity!;
    return {
      exchangeId: this.id || (this.id = uuidv7(this.receivedAt)),
      tenantId: identity.tenantId,
      keyId: identity.keyId,
      method: this.method,
      path: this.path,
      query: this.query,
      requestHeaders: this.headers,
      requestBody,
      status: this.clientGone && !this.headSent ? 0 : this.status,
      responseSource,
      responseHeaders,
      responseBody,
      responseBodyBytes: responseSource === 'upstream' ? this.respTotal : responseBody.byteLength,
      responseBodyTruncated: responseSource === 'upstream' && this.respTotal > responseBody.byteLength,
      timings: {
        receivedAt: this.receivedAt,
        dispatchedMs: this.tDispatch > 0 ? this.tDispatch - t0 : null,
        upstreamFirstByteMs: this.tFirstByte > 0 ? this.tFirstByte - t0 : null,
        doneMs: this.doneAt - t0,
        addedOverheadMs: this.overhead,
      },
      clientAborted: this.clientGone,
      error: this.error,
    };
  }

  /** Body bytes its capture will carry (what the hand-off copies, give or take the headers). */
  get captureBytes(): number {
    return this.bodyLen + this.respBytes;
  }

  /** After the capture was copied: the body buffers go back to the thread's pool. */
  releaseCaptureBuffers(): void {
    if (this.body !== null && this.ctx.upstream.bodyDoneAtSettle) returnBody(this.body);
    this.body = null;
    if (this.respBody !== null) returnBody(this.respBody);
    this.respBody = null;
  }
}
