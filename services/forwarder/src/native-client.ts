// A small HTTP/1.1 keep-alive client for the one upstream of a relay thread, built for the
// hot path: one write per request (head + body, corked); reads land in one read buffer per
// pool (net's `onread`), so no buffer is allocated per read and no stream machinery runs;
// the parser hands out views into that buffer; pause and resume through the socket; and
// timeouts from one coarse sweep per pool instead of a timer per request. It speaks undici's
// legacy handler protocol (see upstream.ts) and uses undici's error codes, so the relay
// treats both clients alike.
//
// The read buffer is reused by the next read: a view into it is valid only until the
// callback that received it returns. Whatever outlives a read is copied here (a head or chunk
// line split across reads, bytes held while paused, the response head handed to onHeaders);
// body chunks go to `onData` as views, and the handler copies what it keeps.
//
// Not supported (not needed against the Anthropic API): pipelining, upgrades (101),
// HTTP/1.0 keep-alive, request trailers.
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { PoolSnapshot } from './metrics.js';
import type { UpstreamClient, UpstreamClientOptions, UpstreamHandler, UpstreamRequest } from './upstream.js';

const CONNECT_TIMEOUT_MS = 10_000;
/** Idle pooled connections are closed before a typical server keep-alive timeout (5 s) fires. */
export const DEFAULT_KEEP_ALIVE_MS = 4_000;
/**
 * Longest wait for a connection when all `connections` are busy. Every open stream holds one
 * for a whole turn (minutes), so a request that cannot get one soon is refused (503, which
 * Claude Code retries) instead of queueing behind streams.
 */
export const DEFAULT_QUEUE_TIMEOUT_MS = 2_000;
const MAX_CHUNK_LINE = 4096;
/** One read buffer per pool (thread): reads are processed synchronously, one at a time. */
const READ_BUFFER_BYTES = 64 * 1024;

export class UpstreamError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly syscall?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'UpstreamError';
  }
}

// Connection states.
const CONNECTING = 0;
const IDLE = 1;
const WAIT_HEAD = 2; // request written, waiting for the status line and headers
const BODY_LENGTH = 3;
const BODY_CHUNKED = 4;
const BODY_UNTIL_CLOSE = 5;

// Chunked-body sub-states.
const CHUNK_SIZE = 0;
const CHUNK_DATA = 1;
const CHUNK_DATA_END = 2; // CRLF after chunk data
const CHUNK_TRAILERS = 3;

const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1');
const LF = 0x0a;
const CR = 0x0d;

/** True when `s` has a character that would break a request line or header. */
function unsafe(s: string): boolean {
  return s.indexOf('\n') !== -1 || s.indexOf('\r') !== -1 || s.indexOf('\0') !== -1;
}

function isDigits(s: string): boolean {
  if (s.length === 0 || s.length > 15) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return false;
  }
  return true;
}

function isTokenChar(c: number): boolean {
  // RFC 9110 tchar
  return (
    (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) ||
    c === 0x21 || (c >= 0x23 && c <= 0x27) || c === 0x2a || c === 0x2b || c === 0x2d || c === 0x2e || c === 0x5e || c === 0x5f || c === 0x60 || c === 0x7c || c === 0x7e
  );
}

function trimOws(buf: Buffer, start: number, end: number): [number, number] {
  while (start < end && (buf[start] === 0x20 || buf[start] === 0x09)) start++;
  while (end > start && (buf[end - 1] === 0x20 || buf[end - 1] === 0x09)) end--;
  return [start, end];
}

interface Queued {
  req: UpstreamRequest;
  handler: UpstreamHandler;
  cancelled: boolean;
  /** Sweep tick when it was queued. */
  since: number;
}

class UpstreamConnection {
  state = CONNECTING;
  readonly socket: Socket;
  /** The socket closed (by either side); the connection is never reused. */
  closed = false;
  private handler: UpstreamHandler | null = null;
  private request: UpstreamRequest | null = null;
  private reusable = true;
  /** Response bytes seen for the current request (0 = nothing yet). */
  private received = 0;
  /** Sweep tick of the last activity; `limitMs` is the silence allowed in this phase. */
  activity = 0;
  private limitMs = CONNECT_TIMEOUT_MS;
  private head: Buffer | null = null; // partial response head
  private remaining = 0; // BODY_LENGTH bytes left, or CHUNK_DATA bytes left
  private chunkState = CHUNK_SIZE;
  private chunkLine: Buffer | null = null;
  private paused = false;
  private pendingBytes: Buffer | null = null;
  /** The response ended while the handler was paused: report it on resume. */
  private completePending = false;
  /** The response ended: return the connection to the pool once this read is processed. */
  private settlePending = false;
  private keepAliveMs: number;
  private readonly resume = (): void => this.onResume();

  constructor(private readonly pool: NativePool) {
    const o = pool.target;
    this.keepAliveMs = pool.keepAliveMs;
    const opts = { host: o.host, port: o.port, noDelay: true, onread: { buffer: pool.readBuffer, callback: this.onRead } };
    this.socket = o.tls
      ? tlsConnect({ ...opts, servername: isIP(o.host) ? undefined : o.host, ALPNProtocols: ['http/1.1'], ...(pool.ca !== undefined ? { ca: pool.ca } : {}) }, this.onConnected)
      : netConnect(opts, this.onConnected);
    this.socket.setKeepAlive(true, 30_000);
    this.activity = pool.tick;
    this.socket.on('error', this.onSocketError);
    this.socket.on('close', this.onSocketClose);
    this.socket.on('end', this.onSocketEnd);
  }

  get busy(): boolean {
    return this.handler !== null;
  }

  /** Assigns a request. The connection is IDLE or CONNECTING. */
  start(req: UpstreamRequest, handler: UpstreamHandler): void {
    this.request = req;
    this.handler = handler;
    this.received = 0;
    this.reusable = true;
    this.paused = false;
    this.completePending = false;
    this.settlePending = false;
    this.pendingBytes = null;
    this.head = null;
    this.activity = this.pool.tick;
    this.limitMs = CONNECT_TIMEOUT_MS;
    handler.onConnect((err) => this.abort(handler, err));
    // onConnect may have aborted it already.
    if (this.handler === handler && this.state === IDLE) this.write();
  }

  private readonly onConnected = (): void => {
    if (this.state !== CONNECTING || this.closed) return;
    this.state = IDLE;
    this.activity = this.pool.tick;
    if (this.handler !== null) this.write();
    else this.pool.release(this);
  };

  private write(): void {
    const req = this.request!;
    const h = req.headers;
    if (unsafe(req.path) || unsafe(req.method)) return this.fail(new UpstreamError('UND_ERR_INVALID_ARG', 'invalid request line'));
    let head = req.method + ' ' + req.path + ' HTTP/1.1\r\nhost: ' + this.pool.hostHeader + '\r\n';
    for (let i = 0; i < h.length; i += 2) {
      const v = h[i + 1]!;
      if (unsafe(h[i]!) || unsafe(v)) return this.fail(new UpstreamError('UND_ERR_INVALID_ARG', `invalid ${h[i]} header`));
      head += h[i] + ': ' + v + '\r\n';
    }
    const body = req.body;
    const hasBody = body !== null && body.length > 0;
    if (hasBody) head += 'content-length: ' + body.length + '\r\n\r\n';
    else if (req.method === 'POST' || req.method === 'PUT' || req.method === 'PATCH') head += 'content-length: 0\r\n\r\n';
    else head += '\r\n';
    this.state = WAIT_HEAD;
    this.limitMs = req.headersTimeout;
    this.activity = this.pool.tick;
    const s = this.socket;
    // uWS hands us UTF-8-decoded strings: writing UTF-8 restores their bytes.
    if (hasBody) {
      s.cork();
      s.write(head, 'utf8');
      s.write(body);
      s.uncork();
    } else {
      s.write(head, 'utf8');
    }
  }

  // ---- response parsing ---------------------------------------------------------------------

  /** net's `onread` callback: `nread` bytes in the pool's read buffer. false pauses the socket. */
  private readonly onRead = (nread: number, buf: Uint8Array): boolean => {
    this.activity = this.pool.tick;
    if (this.handler === null) {
      this.destroy(); // bytes nobody asked for: the connection is out of sync
      return false;
    }
    const data = this.pool.readView(buf, nread);
    this.received += nread;
    if (this.paused) {
      this.keep(data, 0);
      return false;
    }
    this.run(data);
    return !this.paused;
  };

  /** Parses bytes, then completes and returns the connection as the parse left it. */
  private run(data: Buffer | null): void {
    try {
      if (data !== null) this.process(data);
      if (this.handler !== null && !this.paused && this.state === BODY_LENGTH && this.remaining === 0) this.complete();
    } catch (e) {
      this.fail(e instanceof UpstreamError ? e : new UpstreamError('HPE_INTERNAL', (e as Error).message, undefined, { cause: e }));
      return;
    }
    this.settle();
  }

  /** Holds unprocessed bytes while paused (copied: the read buffer is reused). */
  private keep(data: Buffer, from: number): void {
    if (from >= data.length) return;
    const rest = data.subarray(from);
    this.pendingBytes = this.pendingBytes === null ? Buffer.from(rest) : Buffer.concat([this.pendingBytes, rest]);
    this.socket.pause();
  }

  private process(data: Buffer): void {
    let at = 0;
    while (at < data.length) {
      if (this.handler === null || this.completePending) {
        // Bytes after the end of the response: no pipelining, so the server is broken.
        this.reusable = false;
        return;
      }
      if (this.paused) {
        this.keep(data, at);
        return;
      }
      switch (this.state) {
        case WAIT_HEAD:
          at = this.parseHead(data, at);
          break;
        case BODY_LENGTH: {
          const n = Math.min(this.remaining, data.length - at);
          const chunk = data.subarray(at, at + n);
          at += n;
          this.remaining -= n;
          this.deliver(chunk);
          if (this.remaining === 0) this.complete();
          break;
        }
        case BODY_CHUNKED:
          at = this.parseChunked(data, at);
          break;
        case BODY_UNTIL_CLOSE:
          this.deliver(at === 0 ? data : data.subarray(at));
          at = data.length;
          break;
        default:
          throw new UpstreamError('HPE_INTERNAL', 'upstream data in an unexpected state');
      }
    }
  }

  private deliver(chunk: Buffer): void {
    if (chunk.length === 0) return;
    if (this.handler!.onData(chunk) === false) {
      this.paused = true;
      this.socket.pause();
    }
  }

  /** Parses (part of) the response head; returns where the body starts in `data`. */
  private parseHead(data: Buffer, at: number): number {
    let buf = data;
    let from = at;
    let searchFrom = at;
    if (this.head !== null) {
      searchFrom = Math.max(0, this.head.length - 3);
      buf = Buffer.concat([this.head, data.subarray(at)]);
      from = 0;
    }
    const end = buf.indexOf(CRLFCRLF, searchFrom);
    if (end === -1) {
      if (buf.length - from > this.pool.maxHeaderSize) throw new UpstreamError('UND_ERR_HEADERS_OVERFLOW', 'upstream response headers too large');
      this.head = Buffer.from(buf.subarray(from)); // own copy: a head split across reads is rare
      return data.length;
    }
    this.head = null;
    if (end - from > this.pool.maxHeaderSize) throw new UpstreamError('UND_ERR_HEADERS_OVERFLOW', 'upstream response headers too large');
    const bodyStart = end + 4;
    // The header views handed to onHeaders outlive this read: give them their own copy
    // (a small slice of Node's buffer pool; `buf` is already a copy when the head was split).
    if (buf === data) {
      const own = Buffer.allocUnsafe(end + 2 - from);
      data.copy(own, 0, from, end + 2);
      this.onHead(own, 0, end - from);
    } else {
      this.onHead(buf, from, end);
    }
    // Everything after the head in `buf` is the tail of `data`.
    return data.length - (buf.length - bodyStart);
  }

  private onHead(buf: Buffer, start: number, end: number): void {
    // Status line: HTTP/1.x SP 3DIGIT [SP reason]
    let lineEnd = buf.indexOf(LF, start);
    if (lineEnd === -1 || lineEnd > end) lineEnd = end;
    const statusEnd = buf[lineEnd - 1] === CR ? lineEnd - 1 : lineEnd;
    const d0 = buf[start + 9]! - 0x30;
    const d1 = buf[start + 10]! - 0x30;
    const d2 = buf[start + 11]! - 0x30;
    if (
      statusEnd - start < 12 ||
      buf.toString('latin1', start, start + 7) !== 'HTTP/1.' ||
      buf[start + 8] !== 0x20 ||
      !(d0 >= 1 && d0 <= 5 && d1 >= 0 && d1 <= 9 && d2 >= 0 && d2 <= 9) ||
      (statusEnd > start + 12 && buf[start + 12] !== 0x20)
    ) {
      throw new UpstreamError('HPE_INVALID_STATUS', 'invalid upstream status line');
    }
    const http10 = buf[start + 7] === 0x30;
    const status = d0 * 100 + d1 * 10 + d2;
    const statusText = statusEnd > start + 13 ? buf.toString('latin1', start + 13, statusEnd) : '';

    const raw: Buffer[] = [];
    /** Lower-cased names, one per header: the handler needs them, and here they cost one decode. */
    const names: string[] = [];
    let contentLength = -1;
    let chunked = false;
    let hasTransferEncoding = false;
    let close = http10;
    let pos = lineEnd + 1;
    const stop = end + 2; // through the line break of the last header line
    // Header lines are short: plain loops beat Buffer#indexOf's native call per search.
    while (pos < stop) {
      let nl = pos;
      while (nl < stop && buf[nl] !== LF) nl++;
      const lineStop = buf[nl - 1] === CR ? nl - 1 : nl;
      if (lineStop > pos) {
        const first = buf[pos]!;
        if (first === 0x20 || first === 0x09) throw new UpstreamError('HPE_INVALID_HEADER_TOKEN', 'obsolete line folding in upstream response');
        let colon = pos;
        while (colon < lineStop && buf[colon] !== 0x3a) {
          if (!isTokenChar(buf[colon]!)) throw new UpstreamError('HPE_INVALID_HEADER_TOKEN', 'invalid upstream header name');
          colon++;
        }
        if (colon >= lineStop || colon === pos) throw new UpstreamError('HPE_INVALID_HEADER_TOKEN', 'invalid upstream header line');
        const [vs, ve] = trimOws(buf, colon + 1, lineStop);
        raw.push(buf.subarray(pos, colon), buf.subarray(vs, ve));
        // Token characters are ASCII: the latin1 string is the name exactly.
        const lower = buf.toString('latin1', pos, colon).toLowerCase();
        names.push(lower);
        const len = colon - pos;
        // Only framing headers are interpreted here; their name lengths filter cheaply.
        if (len === 14 || len === 17 || len === 10) {
          if (lower === 'content-length') {
            const v = buf.toString('latin1', vs, ve);
            if (!isDigits(v)) throw new UpstreamError('HPE_INVALID_CONTENT_LENGTH', 'invalid upstream content-length');
            const n = Number(v);
            if (contentLength !== -1 && contentLength !== n) throw new UpstreamError('HPE_INVALID_CONTENT_LENGTH', 'conflicting upstream content-length');
            contentLength = n;
          } else if (lower === 'transfer-encoding') {
            hasTransferEncoding = true;
            const codings = buf.toString('latin1', vs, ve).toLowerCase().split(',');
            chunked = codings[codings.length - 1]!.trim() === 'chunked';
          } else if (lower === 'connection') {
            const v = buf.toString('latin1', vs, ve).toLowerCase();
            if (v.includes('close')) close = true;
            else if (http10 && v.includes('keep-alive')) close = false;
          } else if (lower === 'keep-alive') {
            const m = /timeout=(\d+)/i.exec(buf.toString('latin1', vs, ve));
            if (m) this.keepAliveMs = Math.max(500, Math.min(this.pool.keepAliveMs, Number(m[1]) * 1000 - 1000));
          }
        }
      }
      pos = nl + 1;
    }

    if (status < 200) {
      if (status === 101) throw new UpstreamError('HPE_INVALID_STATUS', 'upstream switched protocols');
      return; // informational: the final response follows
    }
    if (close) this.reusable = false;
    const method = this.request!.method;
    if (method === 'HEAD' || status === 204 || status === 304) {
      this.state = BODY_LENGTH;
      this.remaining = 0;
    } else if (hasTransferEncoding) {
      if (contentLength !== -1) this.reusable = false; // RFC 9112 §6.1: a smuggling risk, never reuse
      if (chunked) {
        this.state = BODY_CHUNKED;
        this.chunkState = CHUNK_SIZE;
        this.chunkLine = null;
      } else {
        this.state = BODY_UNTIL_CLOSE;
        this.reusable = false;
      }
    } else if (contentLength >= 0) {
      this.state = BODY_LENGTH;
      this.remaining = contentLength;
    } else {
      this.state = BODY_UNTIL_CLOSE;
      this.reusable = false;
    }
    this.limitMs = this.request!.bodyTimeout;
    if (this.handler!.onHeaders(status, raw, this.resume, statusText, names) === false) {
      this.paused = true;
      this.socket.pause();
    }
  }

  private parseChunked(data: Buffer, at: number): number {
    while (at < data.length && this.handler !== null && !this.paused && !this.completePending) {
      switch (this.chunkState) {
        case CHUNK_SIZE:
        case CHUNK_TRAILERS: {
          const nl = data.indexOf(LF, at);
          const piece = data.subarray(at, nl === -1 ? data.length : nl);
          const line = this.chunkLine === null ? piece : Buffer.concat([this.chunkLine, piece]);
          if (line.length > MAX_CHUNK_LINE) throw new UpstreamError('HPE_INVALID_CHUNK_SIZE', 'upstream chunk line too long');
          if (nl === -1) {
            this.chunkLine = Buffer.from(line);
            return data.length;
          }
          this.chunkLine = null;
          at = nl + 1;
          const text = line.toString('latin1', 0, line.length > 0 && line[line.length - 1] === CR ? line.length - 1 : line.length);
          if (this.chunkState === CHUNK_TRAILERS) {
            if (text.length === 0) this.complete(); // trailers are read and dropped
            continue;
          }
          const semi = text.indexOf(';');
          const hex = (semi === -1 ? text : text.slice(0, semi)).trim();
          if (!/^[0-9a-fA-F]{1,12}$/.test(hex)) throw new UpstreamError('HPE_INVALID_CHUNK_SIZE', 'invalid upstream chunk size');
          const size = parseInt(hex, 16);
          if (size === 0) this.chunkState = CHUNK_TRAILERS;
          else {
            this.remaining = size;
            this.chunkState = CHUNK_DATA;
          }
          break;
        }
        case CHUNK_DATA: {
          const n = Math.min(this.remaining, data.length - at);
          const chunk = data.subarray(at, at + n);
          at += n;
          this.remaining -= n;
          if (this.remaining === 0) this.chunkState = CHUNK_DATA_END;
          this.deliver(chunk);
          break;
        }
        case CHUNK_DATA_END: {
          const b = data[at]!;
          if (b === CR) at++;
          else if (b === LF) {
            at++;
            this.chunkState = CHUNK_SIZE;
          } else throw new UpstreamError('HPE_INVALID_CHUNK_SIZE', 'missing line break after an upstream chunk');
          break;
        }
      }
    }
    return at;
  }

  private complete(): void {
    if (this.paused) {
      // The handler still has data to send: report the end only after it resumes.
      this.completePending = true;
      return;
    }
    const h = this.handler!;
    this.handler = null;
    this.request = null;
    this.completePending = false;
    this.settlePending = true;
    h.onComplete(null);
  }

  /** After a response ended: back to the pool, or closed if it cannot be reused. */
  private settle(): void {
    if (!this.settlePending || this.handler !== null) return;
    this.settlePending = false;
    if (this.reusable && !this.closed && this.pendingBytes === null && this.socket.writableLength === 0) {
      this.state = IDLE;
      this.activity = this.pool.tick;
      this.pool.release(this);
    } else {
      this.destroy();
    }
  }

  private onResume(): void {
    if (!this.paused || this.handler === null) return;
    this.paused = false;
    this.activity = this.pool.tick;
    const pending = this.pendingBytes;
    this.pendingBytes = null;
    if (pending !== null) {
      try {
        this.process(pending);
      } catch (e) {
        this.fail(e instanceof UpstreamError ? e : new UpstreamError('HPE_INTERNAL', (e as Error).message, undefined, { cause: e }));
        return;
      }
    }
    if (this.paused || this.handler === null) return this.settle();
    if (this.completePending) {
      this.complete();
      return this.settle();
    }
    if (this.state === BODY_LENGTH && this.remaining === 0) {
      this.complete();
      return this.settle();
    }
    if (!this.closed) this.socket.resume();
    else if (this.state === BODY_UNTIL_CLOSE) {
      this.complete(); // the body ended with the connection
      this.settle();
    } else this.failClosed();
  }

  // ---- errors, timeouts, closing ---------------------------------------------------------

  private abort(h: UpstreamHandler, err?: Error): void {
    if (this.handler !== h) return; // that request is over
    this.handler = null;
    this.request = null;
    this.destroy();
    h.onError(err ?? new UpstreamError('UND_ERR_ABORTED', 'request aborted'));
  }

  /** Fails the current request; a connection with nothing written yet stays usable. */
  private fail(err: Error): void {
    const h = this.handler;
    this.handler = null;
    this.request = null;
    if (this.state === IDLE && !this.closed) this.pool.release(this);
    else this.destroy();
    h?.onError(err);
  }

  private failClosed(): void {
    this.fail(
      new UpstreamError('UND_ERR_SOCKET', this.received === 0 ? 'upstream closed the connection before responding' : 'upstream closed the connection mid-response'),
    );
  }

  /**
   * Called by the pool's sweep. `activity` is the tick current when the last event happened,
   * which was anywhere inside that tick: only whole ticks after it count, so a timeout fires
   * between `limitMs` and `limitMs + tickMs` of silence, never before (a 300 ms first-byte
   * timeout used to fire after as little as 225 ms).
   */
  checkTimeout(tick: number, tickMs: number): void {
    const silentMs = (tick - this.activity - 1) * tickMs;
    if (this.handler === null) {
      // An idle pooled connection is closed before the server's keep-alive timeout would
      // close it under a request we are about to send.
      if (this.state === IDLE && silentMs >= this.keepAliveMs) this.destroy();
      return;
    }
    if (this.paused) {
      // Waiting for the client to read, not for upstream: silence counts from the resume.
      this.activity = tick;
      return;
    }
    if (silentMs < this.limitMs) return;
    if (this.state === CONNECTING) this.fail(new UpstreamError('UND_ERR_CONNECT_TIMEOUT', 'connecting to upstream timed out', 'connect'));
    else if (this.state === WAIT_HEAD) this.fail(new UpstreamError('UND_ERR_HEADERS_TIMEOUT', 'upstream sent no response headers in time'));
    else this.fail(new UpstreamError('UND_ERR_BODY_TIMEOUT', 'upstream stopped sending the response body'));
  }

  private readonly onSocketEnd = (): void => {
    // The server finished sending: that ends a read-until-close body.
    if (this.handler !== null && this.state === BODY_UNTIL_CLOSE && !this.paused) {
      this.complete();
      this.settle();
    }
  };

  private readonly onSocketError = (err: NodeJS.ErrnoException): void => {
    if (this.handler === null || this.paused) return; // the close handler decides
    if (this.state === CONNECTING) {
      this.fail(new UpstreamError(err.code ?? 'UND_ERR_CONNECT', `cannot connect to upstream: ${err.message}`, 'connect', { cause: err }));
    } else {
      this.fail(new UpstreamError('UND_ERR_SOCKET', `upstream connection failed: ${err.code ?? err.message}`, undefined, { cause: err }));
    }
  };

  private readonly onSocketClose = (): void => {
    const wasConnecting = this.state === CONNECTING;
    this.closed = true;
    this.pool.forget(this);
    if (this.handler === null) return;
    // Paused: what arrived is still to be relayed; resume() finishes or fails the response.
    if (this.paused) return;
    if (wasConnecting) this.fail(new UpstreamError('ECONNRESET', 'upstream closed the connection while connecting', 'connect'));
    else if (this.state === BODY_UNTIL_CLOSE) {
      this.complete();
      this.settle();
    } else this.failClosed();
  };

  destroy(): void {
    this.reusable = false;
    if (!this.socket.destroyed) this.socket.destroy();
  }
}

interface Target {
  tls: boolean;
  host: string;
  port: number;
}

export class NativePool implements UpstreamClient {
  /**
   * A response ends a request only after its body was written (writableLength 0) or with the
   * socket destroyed (fd closed: nothing reads the buffer any more); errors destroy too.
   */
  readonly bodyDoneAtSettle = true;
  readonly target: Target;
  readonly hostHeader: string;
  readonly maxHeaderSize: number;
  readonly keepAliveMs: number;
  readonly ca: string | undefined;
  /** Shared by every connection of the pool: see the module comment. */
  readonly readBuffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);
  tick = 0;
  private readonly tickMs: number;
  private readonly queueTimeoutMs: number;
  private readonly all = new Set<UpstreamConnection>();
  private idle: UpstreamConnection[] = [];
  private queue: Queued[] = [];
  private readonly maxConnections: number;
  private sweepTimer: NodeJS.Timeout | null = null;
  private destroyed = false;

  constructor(o: UpstreamClientOptions) {
    const url = new URL(o.origin);
    const tls = url.protocol === 'https:';
    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    this.target = { tls, host, port: url.port ? Number(url.port) : tls ? 443 : 80 };
    this.hostHeader = url.host;
    this.maxHeaderSize = o.maxHeaderSize;
    this.maxConnections = o.connections;
    this.keepAliveMs = o.keepAliveMs ?? DEFAULT_KEEP_ALIVE_MS;
    this.ca = o.ca;
    this.queueTimeoutMs = o.queueTimeoutMs ?? DEFAULT_QUEUE_TIMEOUT_MS;
    // Timeout precision: a quarter of the shortest timeout, between 10 ms and 1 s.
    this.tickMs = Math.max(10, Math.min(1_000, Math.floor(Math.min(o.headersTimeout, o.bodyTimeout, this.keepAliveMs, this.queueTimeoutMs) / 4)));
  }

  /** The first `nread` bytes of the read buffer as a Buffer (a view, valid during the read). */
  readView(buf: Uint8Array, nread: number): Buffer {
    return buf === this.readBuffer ? this.readBuffer.subarray(0, nread) : Buffer.from(buf.buffer, buf.byteOffset, nread);
  }

  dispatch(req: UpstreamRequest, handler: UpstreamHandler): void {
    if (this.destroyed) {
      handler.onError(new UpstreamError('UND_ERR_DESTROYED', 'upstream client destroyed'));
      return;
    }
    this.ensureSweep();
    let conn = this.idle.pop();
    while (conn !== undefined && (conn.state !== IDLE || conn.closed)) conn = this.idle.pop();
    if (conn === undefined) {
      if (this.all.size >= this.maxConnections) {
        const q: Queued = { req, handler, cancelled: false, since: this.tick };
        this.queue.push(q);
        handler.onConnect((err) => {
          if (q.cancelled) return;
          q.cancelled = true;
          this.queue = this.queue.filter((x) => x !== q);
          handler.onError(err ?? new UpstreamError('UND_ERR_ABORTED', 'request aborted'));
        });
        return;
      }
      conn = new UpstreamConnection(this);
      this.all.add(conn);
    }
    conn.start(req, handler);
  }

  /** A connection is free (connected, or done with a response). */
  release(conn: UpstreamConnection): void {
    while (this.queue.length > 0) {
      const q = this.queue.shift()!;
      if (q.cancelled) continue;
      q.cancelled = true;
      conn.start(q.req, q.handler);
      return;
    }
    this.idle.push(conn);
  }

  /** A connection closed. */
  forget(conn: UpstreamConnection): void {
    this.all.delete(conn);
    const i = this.idle.indexOf(conn);
    if (i !== -1) this.idle.splice(i, 1);
    // Queued requests waited for a connection slot: this is one.
    while (this.queue.length > 0 && this.all.size < this.maxConnections && !this.destroyed) {
      const q = this.queue.shift()!;
      if (q.cancelled) continue;
      q.cancelled = true;
      const c = new UpstreamConnection(this);
      this.all.add(c);
      c.start(q.req, q.handler);
      break;
    }
  }

  private ensureSweep(): void {
    if (this.sweepTimer !== null) return;
    this.sweepTimer = setInterval(this.sweep, this.tickMs);
    this.sweepTimer.unref();
  }

  private readonly sweep = (): void => {
    this.tick++;
    for (const c of this.all) c.checkTimeout(this.tick, this.tickMs);
    this.expireQueued();
    if (this.all.size === 0 && this.queue.length === 0 && this.sweepTimer !== null) {
      clearInterval(this.sweepTimer);
      this.sweepTimer = null;
    }
  };

  /** Refuses requests that waited longer than queueTimeoutMs for a connection (oldest first). */
  private expireQueued(): void {
    while (this.queue.length > 0) {
      const q = this.queue[0]!;
      if (!q.cancelled && (this.tick - q.since - 1) * this.tickMs < this.queueTimeoutMs) return;
      this.queue.shift();
      if (q.cancelled) continue;
      q.cancelled = true;
      q.handler.onError(new UpstreamError('UND_ERR_POOL_FULL', `all ${this.maxConnections} upstream connections stayed busy for ${this.queueTimeoutMs} ms`));
    }
  }

  stats(): PoolSnapshot {
    let connected = 0;
    let running = 0;
    for (const c of this.all) {
      if (c.state !== CONNECTING && !c.closed) connected++;
      if (c.busy) running++;
    }
    return { connected, free: this.idle.length, pending: this.queue.length, running };
  }

  async destroy(): Promise<void> {
    this.destroyed = true;
    const queued = this.queue;
    this.queue = [];
    for (const q of queued) {
      if (q.cancelled) continue;
      q.cancelled = true;
      q.handler.onError(new UpstreamError('UND_ERR_DESTROYED', 'upstream client destroyed'));
    }
    const closing = [...this.all].map((c) => new Promise<void>((resolve) => (c.socket.destroyed ? resolve() : c.socket.once('close', () => resolve()))));
    for (const c of this.all) c.destroy();
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    await Promise.all(closing);
  }
}
