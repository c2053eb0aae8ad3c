// One client request relayed upstream: the uWS response on one side, the undici dispatch
// handler on the other. Everything here is the hot path: bodies are copied once out of uWS,
// response chunks go to the client as they arrive, and back-pressure from a slow client
// pauses the upstream body instead of buffering it.
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
import type { HeaderPair, RawCapture } from './capture.js';
import type { KeyIdentity } from './keys.js';
import { routeLabel } from './metrics.js';
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

const REDACTED = '[REDACTED]';
const EMPTY = new Uint8Array(0);

/** Errors that mean "no connection to upstream could be made". */
const CONNECT_ERRORS = new Set(['UND_ERR_CONNECT', 'ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'UND_ERR_CONNECT_TIMEOUT']);

function statusLine(status: number, text?: string): string {
  return `${status} ${text || STATUS_CODES[status] || 'Unknown'}`;
}

/** Copies parts into one buffer with its own ArrayBuffer (transferable to another thread). */
function concatOwned(parts: readonly Uint8Array[], total: number): Buffer {
  const out = Buffer.allocUnsafeSlow(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

export class Exchange implements UpstreamHandler {
  private id = '';
  private method = '';
  private path = '';
  private query = '';
  private readonly headers: string[] = [];
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
  private rawHeaders: Buffer[] = [];
  private lowerNames: string[] = [];
  private listedHopByHop: Set<string> | null = null;
  private bodyMode = BODY_CHUNKED;
  private contentLength = -1;
  private current: Buffer | null = null;
  private pending: Buffer | null = null;
  private pendingOffset = 0;
  private respParts: Buffer[] | null = null;
  private respBytes = 0;
  private glitchResponse: { headers: HeaderPair[]; body: Buffer } | null = null;

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
    let size = method.length + path.length + query.length + 12;
    req.forEach((name, value) => {
      headers.push(name, value);
      size += name.length + value.length + 4;
    });
    this.method = method;
    this.path = path;
    this.query = query;

    let key = '';
    let contentLength = -1;
    let chunked = false;
    let conflicting = false;
    for (let i = 0; i < headers.length; i += 2) {
      // uWS lower-cases header names.
      switch (headers[i]) {
        case GLITCH_KEY_HEADER:
          key = headers[i + 1]!;
          break;
        case 'content-length': {
          const n = Number(headers[i + 1]);
          // RFC 9112 §6.3: differing lengths are an unrecoverable framing error (smuggling).
          conflicting ||= contentLength !== -1 && contentLength !== n;
          contentLength = n;
          break;
        }
        case 'transfer-encoding':
          chunked = true;
          break;
      }
    }
    const hasBody = contentLength > 0 || chunked;

    if (size > ctx.opts.headerLimitBytes) return this.reject('headers_too_large', true);
    if (path.charCodeAt(0) !== 0x2f || conflicting || (chunked && contentLength !== -1) || !(contentLength >= -1) || !Number.isInteger(contentLength)) {
      return this.reject('malformed_request', true);
    }
    // Claude Code's credential-less connectivity checks: relayed, never recorded.
    const preconnect = method === 'HEAD' && (path === '/api/hello' || path === '/');
    if (!preconnect) {
      if (key === '') return this.reject('auth_missing', hasBody);
      const identity = ctx.keys.lookup(key);
      if (identity === null) return this.reject('auth_invalid', hasBody);
      this.identity = identity;
      this.recording = ctx.recording;
      if (this.recording) this.id = uuidv7(this.receivedAt);
    }
    if (contentLength > ctx.opts.bodyLimitBytes) return this.reject('body_too_large', true);

    ctx.inFlight.add(this);
    if (hasBody) {
      // Own ArrayBuffer (not the shared pool) so the capture can be transferred, not copied.
      if (contentLength > 0) this.body = Buffer.allocUnsafeSlow(contentLength);
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
      if (n > 0) {
        if (this.body !== null) {
          if (this.bodyLen + n > this.body.length) return this.reject('malformed_request', true);
          this.body.set(new Uint8Array(chunk), this.bodyLen);
        } else {
          if (this.bodyLen + n > this.ctx.opts.bodyLimitBytes) return this.reject('body_too_large', true);
          this.bodyParts!.push(Buffer.from(new Uint8Array(chunk))); // copy: uWS neuters it on return
        }
        this.bodyLen += n;
        this.ctx.metrics.bytesIn += n;
      }
      if (isLast) {
        if (this.bodyParts !== null) {
          this.body = concatOwned(this.bodyParts, this.bodyLen);
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
    const path = ctx.basePath + this.path + (this.query === '' ? '' : '?' + this.query);
    ctx.upstream.dispatch(
      {
        method: this.method,
        path,
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
    const spec = ERRORS[code];
    this.error = glitchError(code, message);
    if (this.responded) return;
    const requestId = this.id || (this.id = uuidv7(this.receivedAt));
    const body = errorBody(code, requestId, message);
    const headers: HeaderPair[] = [
      ['content-type', 'application/json'],
      ['request-id', requestId],
      ['x-glitch-error', code],
    ];
    this.status = spec.status;
    this.glitchResponse = { headers, body };
    this.responded = true;
    this.headSent = true;
    const res = this.res;
    const head = this.method === 'HEAD';
    res.cork(() => {
      res.writeStatus(statusLine(spec.status));
      for (const [n, v] of headers) res.writeHeader(n, v);
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

  // ---- upstream side (undici dispatch handler) --------------------------------------------

  onConnect(abort: (err?: Error) => void): void {
    this.abortUpstream = abort;
    if (this.abortReason !== null) abort(this.abortReason);
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean {
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

    const names = this.lowerNames;
    let contentLength = -1;
    for (let i = 0; i < rawHeaders.length; i += 2) {
      const name = rawHeaders[i]!.toString('latin1').toLowerCase();
      names.push(name);
      if (name === 'content-length') contentLength = Number(rawHeaders[i + 1]!.toString('latin1'));
      else if (name === 'connection') {
        for (const t of connectionTokens(rawHeaders[i + 1]!.toString('latin1'))) (this.listedHopByHop ??= new Set()).add(t);
      }
    }
    this.contentLength = contentLength;
    if (this.method === 'HEAD' || statusCode === 204 || statusCode === 304) this.bodyMode = BODY_NONE;
    else if (contentLength >= 0 && Number.isSafeInteger(contentLength)) this.bodyMode = BODY_SIZED;
    else this.bodyMode = BODY_CHUNKED;
    if (this.recording) this.respParts = [];
    // A stream's headers go out now so the client sees the response start; a sized body's
    // headers go out with its first chunk (one write instead of two).
    if (this.bodyMode === BODY_CHUNKED) this.res.cork(this.writeHead);
    this.overhead += performance.now() - t;
    return true;
  }

  onData(chunk: Buffer): boolean {
    const t = performance.now();
    this.respBytes += chunk.length;
    this.ctx.metrics.bytesOut += chunk.length;
    if (this.respParts !== null) this.respParts.push(chunk);
    if (this.responded) return !this.clientGone;
    this.current = chunk;
    this.res.cork(this.writeCurrent);
    this.overhead += performance.now() - t;
    return !this.paused;
  }

  onComplete(_trailers: string[] | null): void {
    if (!this.responded) {
      const t = performance.now();
      this.res.cork(this.endResponse);
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

  // ---- writing to the client (always inside res.cork) -----------------------------------

  private readonly writeHead = (): void => {
    const res = this.res;
    const raw = this.rawHeaders;
    const names = this.lowerNames;
    const listed = this.listedHopByHop;
    this.headSent = true;
    res.writeStatus(statusLine(this.status, this.statusText));
    for (let i = 0, j = 0; i < raw.length; i += 2, j++) {
      const name = names[j]!;
      if (isRelayedResponseHeader(name) && (listed === null || !listed.has(name))) res.writeHeader(raw[i]!, raw[i + 1]!);
      // HEAD / 304 carry the length of a body that is not sent: relay it as upstream said.
      else if (this.bodyMode === BODY_NONE && name === 'content-length') res.writeHeader(raw[i]!, raw[i + 1]!);
    }
  };

  private readonly writeCurrent = (): void => {
    const res = this.res;
    const chunk = this.current!;
    this.current = null;
    if (!this.headSent) this.writeHead();
    if (this.bodyMode === BODY_CHUNKED) {
      // uWS keeps what the socket did not take; false means "stop sending until writable".
      if (!res.write(chunk)) this.pauseUpstream();
    } else if (this.bodyMode === BODY_SIZED) {
      const offset = res.getWriteOffset();
      const [ok, done] = res.tryEnd(chunk, this.contentLength);
      if (done) this.responded = true;
      else if (!ok) {
        // tryEnd did not take all of it: retry the rest from onWritable.
        this.pending = chunk;
        this.pendingOffset = offset;
        this.pauseUpstream();
      }
    }
  };

  private readonly endResponse = (): void => {
    const res = this.res;
    if (!this.headSent) this.writeHead();
    this.responded = true;
    if (this.bodyMode === BODY_NONE) res.endWithoutBody();
    else if (this.bodyMode === BODY_CHUNKED || this.contentLength === 0) res.end();
    // BODY_SIZED with a length: the last tryEnd already completed the response.
  };

  private pauseUpstream(): void {
    this.paused = true;
    if (!this.writableRegistered) {
      this.writableRegistered = true;
      this.res.onWritable(this.onWritable);
    }
  }

  private readonly onWritable = (offset: number): boolean => {
    try {
      if (this.responded) return true;
      if (this.pending !== null) {
        const chunk = this.pending;
        const [ok, done] = this.res.tryEnd(chunk.subarray(offset - this.pendingOffset), this.contentLength);
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
  };

  // ---- completion -------------------------------------------------------------------------

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.phase = DONE;
    this.doneAt = performance.now();
    const ctx = this.ctx;
    ctx.inFlight.delete(this);
    const status = this.clientGone && !this.headSent ? 0 : this.status;
    ctx.metrics.request(routeLabel(this.path), status);
    if (this.error !== null) ctx.metrics.error(this.error.code);
    if (this.tDispatch > 0) ctx.metrics.addedLatency.observe(this.overhead / 1000);
    if (this.recording) ctx.captured(this);
    ctx.exchangeDone();
  }

  /** Builds the capture (called off the hot path, after the response has ended). */
  toCapture(): RawCapture {
    const t0 = this.t0;
    const requestHeaders: HeaderPair[] = [];
    const h = this.headers;
    for (let i = 0; i < h.length; i += 2) requestHeaders.push([h[i]!, h[i] === GLITCH_KEY_HEADER ? REDACTED : h[i + 1]!]);
    let requestBody: Uint8Array = EMPTY;
    if (this.body !== null) requestBody = this.body.subarray(0, this.bodyLen);
    else if (this.bodyParts !== null) requestBody = concatOwned(this.bodyParts, this.bodyLen);

    let responseSource: RawCapture['responseSource'] = 'none';
    let responseHeaders: HeaderPair[] = [];
    let responseBody: Uint8Array = EMPTY;
    if (this.glitchResponse !== null) {
      responseSource = 'glitch';
      responseHeaders = this.glitchResponse.headers;
      responseBody = this.glitchResponse.body;
    } else if (this.tFirstByte > 0) {
      responseSource = 'upstream';
      const raw = this.rawHeaders;
      for (let i = 0; i < raw.length; i += 2) responseHeaders.push([raw[i]!.toString('latin1'), raw[i + 1]!.toString('latin1')]);
      if (this.respParts !== null) responseBody = concatOwned(this.respParts, this.respBytes);
    }
    const identity = this.identity!;
    return {
      exchangeId: this.id,
      tenantId: identity.tenantId,
      keyId: identity.keyId,
      method: this.method,
      path: this.path,
      query: this.query,
      requestHeaders,
      requestBody,
      status: this.clientGone && !this.headSent ? 0 : this.status,
      responseSource,
      responseHeaders,
      responseBody,
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
}
