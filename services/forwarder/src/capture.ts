// What the relay hands to a Recorder for every authenticated exchange, and the off-hot-path
// step that completes a raw capture: decode the response's content-encoding and, for SSE,
// reassemble the message and its usage.
import type { AdmissionSignal } from './forwarder.js';
import type { ScalarMetric } from './metrics.js';
import { MessageAssembler, SseParser, normalizeUsage, type AssembledMessage, type GlitchError, type TokenUsage } from '@glitch/protocol';
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';

export type HeaderPair = [name: string, value: string];

export interface ExchangeTimings {
  /** Epoch ms when the request headers arrived. */
  receivedAt: number;
  /** ms after receivedAt when the request (body complete) was handed to upstream; null if never. */
  dispatchedMs: number | null;
  /** ms after receivedAt when upstream's response headers arrived; null if they never did. */
  upstreamFirstByteMs: number | null;
  /** ms after receivedAt when the exchange ended (response complete, failed or aborted). */
  doneMs: number;
  /** ms the forwarder itself spent: handling the request before dispatch plus relaying each upstream chunk. */
  addedOverheadMs: number;
}

/** The capture as a relay thread produces it: bytes and facts, no parsing. */
export interface RawCapture {
  /** UUIDv7; also the `request_id` of Glitch's own error responses. */
  exchangeId: string;
  tenantId: string;
  keyId: string;
  method: string;
  /** Path as received, without the query string. */
  path: string;
  /** Query string without `?` ('' when none), e.g. `beta=true`. */
  query: string;
  /** As received (names lower-cased by the HTTP parser); the X-Glitch-Key value is `[REDACTED]`. */
  requestHeaders: HeaderPair[];
  /** Request body bytes exactly as received (may be partial if the client left mid-upload). */
  requestBody: Uint8Array;
  /** Status the client received; 0 if it received none. */
  status: number;
  /** `upstream`: relayed from upstream; `glitch`: Glitch answered itself (an error); `none`: no response. */
  responseSource: 'upstream' | 'glitch' | 'none';
  /** Upstream's headers as received (case and order kept), or the headers of Glitch's own answer. */
  responseHeaders: HeaderPair[];
  /**
   * Response body bytes as received from upstream (still content-encoded), or Glitch's error
   * body. Only the first `responseCaptureLimitBytes` of a larger body (see responseBodyTruncated).
   */
  responseBody: Uint8Array;
  /** Response body bytes upstream sent (all relayed to the client, captured or not); for Glitch's own answer its length. */
  responseBodyBytes: number;
  /** responseBody holds only the first part of the body: the capture limit was reached. */
  responseBodyTruncated: boolean;
  timings: ExchangeTimings;
  clientAborted: boolean;
  error: GlitchError | null;
}

/** The message reassembled from the events (as the non-streaming API would return it), usage, and what did not parse. */
export type SseCapture = AssembledMessage;

export interface CapturedExchange extends RawCapture {
  /** The response was an event stream (`text/event-stream`). */
  stream: boolean;
  /** `content-encoding` of the response body, lower-cased; null when none. */
  contentEncoding: string | null;
  /** responseBody with its content-encoding removed (the same bytes when none); null if it did not decode. */
  decodedResponseBody: Uint8Array | null;
  sse: SseCapture | null;
  /** Token usage from the SSE stream or the JSON body; null when the response carried none. */
  usage: TokenUsage | null;
}

/** Receives every completed exchange. Lives in the main thread; must not throw. */
export interface Recorder {
  record(exchange: CapturedExchange): void;
  /**
   * When the recorder can no longer keep records (its spool is full under a `refuse`
   * policy), the forwarder turns new requests away with 503 rather than lose their records.
   * Used unless ForwarderOptions.admission is given.
   */
  readonly admission?: AdmissionSignal;
  /** The recorder's own counters, served with the forwarder's on the admin port. */
  metrics?(): readonly ScalarMetric[];
}

const MAX_DECODED_BYTES = 512 * 1024 * 1024;
const gunzip = promisify<zlib.InputType, zlib.ZlibOptions, Buffer>(zlib.gunzip);
const inflate = promisify<zlib.InputType, zlib.ZlibOptions, Buffer>(zlib.inflate);
const inflateRaw = promisify<zlib.InputType, zlib.ZlibOptions, Buffer>(zlib.inflateRaw);
const brotli = promisify<zlib.InputType, zlib.BrotliOptions, Buffer>(zlib.brotliDecompress);

// SYNC_FLUSH instead of FINISH: a stream cut mid-body still yields what arrived.
const ZLIB_OPTS: zlib.ZlibOptions = { finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: MAX_DECODED_BYTES };
const BROTLI_OPTS: zlib.BrotliOptions = { finishFlush: zlib.constants.BROTLI_OPERATION_FLUSH, maxOutputLength: MAX_DECODED_BYTES };

function header(headers: readonly HeaderPair[], lowerName: string): string | undefined {
  for (const [n, v] of headers) if (n.toLowerCase() === lowerName) return v;
  return undefined;
}

async function decodeOne(coding: string, data: Buffer): Promise<Buffer | null> {
  switch (coding) {
    case 'identity':
      return data;
    case 'gzip':
    case 'x-gzip':
      return gunzip(data, ZLIB_OPTS);
    case 'deflate':
      // "deflate" is zlib-wrapped by the spec, but some servers send raw deflate.
      return inflate(data, ZLIB_OPTS).catch(() => inflateRaw(data, ZLIB_OPTS));
    case 'br':
      return brotli(data, BROTLI_OPTS);
    default:
      return null;
  }
}

/** Removes `content-encoding` (applied in listed order, so undone in reverse). */
export async function decodeBody(body: Uint8Array, contentEncoding: string | null): Promise<Uint8Array | null> {
  if (!contentEncoding) return body;
  let data: Buffer | null = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  const codings = contentEncoding.split(',').map((c) => c.trim().toLowerCase()).filter(Boolean).reverse();
  try {
    for (const c of codings) {
      data = await decodeOne(c, data);
      if (data === null) return null;
    }
  } catch {
    return null;
  }
  return data;
}

export function reassembleSse(body: Uint8Array): SseCapture {
  const parser = new SseParser();
  const assembler = new MessageAssembler();
  for (const ev of parser.push(body)) assembler.push(ev);
  const { truncated } = parser.end();
  const r = assembler.result();
  const problems = truncated ? [...r.problems, 'stream ended inside an event'] : r.problems;
  return { message: r.message, usage: r.usage, rawUsage: r.rawUsage, complete: r.complete, error: r.error, eventCount: r.eventCount, problems };
}

function jsonUsage(body: Uint8Array): TokenUsage | null {
  try {
    const json: unknown = JSON.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8'));
    return typeof json === 'object' && json !== null ? normalizeUsage((json as { usage?: unknown }).usage) : null;
  } catch {
    return null;
  }
}

/** `content-encoding` of a capture's response, lower-cased; null when none (or Glitch answered). */
function responseEncoding(raw: RawCapture): string | null {
  return raw.responseSource === 'upstream' ? header(raw.responseHeaders, 'content-encoding')?.trim().toLowerCase() || null : null;
}

/**
 * Completes a raw capture without waiting when its response body needs no decoding (the
 * common case); null when it does (use completeCapture). Never throws.
 */
export function completeCaptureNow(raw: RawCapture): CapturedExchange | null {
  const encoding = responseEncoding(raw);
  if (encoding !== null && encoding !== 'identity') return null;
  return finishCapture(raw, encoding, raw.responseBody);
}

/** Completes a raw capture. Runs on the recorder side; never throws. */
export async function completeCapture(raw: RawCapture): Promise<CapturedExchange> {
  const encoding = responseEncoding(raw);
  return finishCapture(raw, encoding, await decodeBody(raw.responseBody, encoding));
}

function finishCapture(raw: RawCapture, encoding: string | null, decoded: Uint8Array | null): CapturedExchange {
  const fromUpstream = raw.responseSource === 'upstream';
  const contentType = (header(raw.responseHeaders, 'content-type') ?? '').toLowerCase();
  const stream = fromUpstream && contentType.startsWith('text/event-stream');
  let sse: SseCapture | null = null;
  let usage: TokenUsage | null = null;
  if (decoded && stream) {
    sse = reassembleSse(decoded);
    usage = sse.usage;
    if (raw.responseBodyTruncated) sse.problems = [...sse.problems, `response body truncated at ${raw.responseBody.byteLength} of ${raw.responseBodyBytes} bytes`];
  } else if (decoded && fromUpstream && contentType.includes('json') && decoded.byteLength < 64 * 1024 * 1024) {
    usage = jsonUsage(decoded);
  }
  return { ...raw, stream, contentEncoding: encoding, decodedResponseBody: decoded, sse, usage };
}
