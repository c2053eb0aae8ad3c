// CapturedExchange (what the relay saw) → ExchangeRecord v1 (what crosses Kafka).
// Runs off the hot path. Secrets in headers become [REDACTED]; bodies stay as received.
import type { CapturedExchange, HeaderPair } from '@glitch/forwarder';
import { redactHeaders } from '@glitch/log';
import { isUtf8 } from 'node:buffer';
import { bodyFromBytes, ExchangeRecord, SCHEMA_VERSION, type Body } from '@glitch/records';
import { topLevelValueRanges } from './top-level-keys.js';

const EMPTY = new Uint8Array(0);

function headerMap(pairs: readonly HeaderPair[]): Record<string, string | string[]> {
  const merged: Record<string, string | string[]> = {};
  for (const [name, value] of pairs) {
    const prev = merged[name];
    merged[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
  }
  return redactHeaders(merged);
}

function header(pairs: readonly HeaderPair[], lowerName: string): string | undefined {
  for (const [n, v] of pairs) if (n.toLowerCase() === lowerName) return v;
  return undefined;
}

interface RequestFacts {
  model: string | null;
  deviceId: string | null;
  sessionId: string | null;
}

const FACT_KEYS = ['model', 'metadata'] as const;

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * Model and fleet identity from a Messages request body; nothing when it is not a JSON
 * object in UTF-8. Only the two top-level values are decoded and parsed (the structure is
 * walked on a latin1 view, one char per byte), not the messages around them.
 */
export function requestFacts(bytes: Uint8Array, latin1: string = asBuffer(bytes).toString('latin1')): RequestFacts {
  const facts: RequestFacts = { model: null, deviceId: null, sessionId: null };
  if (latin1.charCodeAt(0) !== 0x7b /* { */) return facts;
  const ranges = topLevelValueRanges(latin1, FACT_KEYS);
  if (ranges === null) return facts;
  const buf = asBuffer(bytes);
  const value = (key: string): unknown => {
    const r = ranges.get(key);
    return r === undefined ? undefined : JSON.parse(buf.toString('utf8', r[0], r[1]));
  };
  let model: unknown;
  let metadata: unknown;
  try {
    model = value('model');
    metadata = value('metadata');
  } catch {
    return facts; // a wanted value that is not JSON: the body is not JSON
  }
  if (typeof model === 'string') facts.model = model;
  // Claude Code puts a JSON string here: {"device_id":…,"account_uuid":…,"session_id":…}
  const userId = typeof metadata === 'object' && metadata !== null ? (metadata as { user_id?: unknown }).user_id : undefined;
  if (typeof userId === 'string' && userId.startsWith('{')) {
    try {
      const u = JSON.parse(userId) as { device_id?: unknown; session_id?: unknown };
      if (typeof u.device_id === 'string') facts.deviceId = u.device_id;
      if (typeof u.session_id === 'string') facts.sessionId = u.session_id;
    } catch {
      /* not Claude Code's shape: leave unset */
    }
  }
  return facts;
}

/** How a builder turns body bytes into a record Body; `text` is the bytes as latin1 when they are UTF-8. */
type BodyOf = (bytes: Buffer, text: string | null) => Body;

/** utf8 text when the bytes are valid UTF-8 (the latin1 view, for reuse), else null. */
function utf8Text(bytes: Buffer): string | null {
  return isUtf8(bytes) ? bytes.toString('latin1') : null;
}

function buildRecord(x: CapturedExchange, bodyOf: BodyOf): ExchangeRecord {
  const requestBytes = asBuffer(x.requestBody);
  const requestText = utf8Text(requestBytes);
  const facts: RequestFacts = requestText === null ? { model: null, deviceId: null, sessionId: null } : requestFacts(requestBytes, requestText);
  const requestBody = bodyOf(requestBytes, requestText);
  const decoded = x.decodedResponseBody;
  let responseBody: Body;
  let events: Body | null = null;
  if (x.sse) {
    // JSON.stringify escapes lone surrogates, so its output is always valid UTF-8 text.
    const message = JSON.stringify(x.sse.message ?? null);
    responseBody = { encoding: 'utf8', data: message, bytes: Buffer.byteLength(message) };
    const eventBytes = asBuffer(decoded ?? x.responseBody);
    events = bodyOf(eventBytes, utf8Text(eventBytes));
  } else {
    // Undecodable content-encoding: keep upstream's bytes (base64) rather than nothing.
    const bytes = asBuffer(decoded ?? x.responseBody ?? EMPTY);
    responseBody = bodyOf(bytes, utf8Text(bytes));
  }
  const record: ExchangeRecord = {
    schemaVersion: SCHEMA_VERSION,
    kind: 'exchange',
    id: x.exchangeId,
    tenantId: x.tenantId,
    keyId: x.keyId,
    sessionId: header(x.requestHeaders, 'x-claude-code-session-id') ?? facts.sessionId,
    deviceId: facts.deviceId,
    method: x.method,
    route: x.path,
    query: x.query,
    model: facts.model,
    stream: x.stream,
    request: { headers: headerMap(x.requestHeaders), body: requestBody },
    response: {
      status: x.status,
      headers: headerMap(x.responseHeaders),
      body: responseBody,
      events,
      bodyTruncated: x.responseBodyTruncated,
      bodyWireBytes: x.responseBodyBytes,
    },
    usage: x.usage,
    timings: {
      receivedAt: Math.round(x.timings.receivedAt),
      upstreamFirstByteMs: x.timings.upstreamFirstByteMs,
      doneMs: x.timings.doneMs,
      addedOverheadMs: x.timings.addedOverheadMs,
    },
    verdict: { action: 'allow', findings: [] },
    clientAborted: x.clientAborted,
    error: x.error ? { code: x.error.code, message: x.error.message } : decoded === null && x.contentEncoding ? { code: 'undecodable_response', message: `content-encoding ${x.contentEncoding} could not be decoded; body kept as received` } : null,
  };
  // Validate here, in the producer: a malformed record never reaches the wire.
  return ExchangeRecord.parse(record);
}

/** Bodies as the record carries them, as plain strings (the records package's own helper). */
export function buildExchangeRecord(x: CapturedExchange): ExchangeRecord {
  return buildRecord(x, (bytes) => bodyFromBytes(bytes));
}

export interface EncodedRecord {
  /** Kafka key: the session, or the record id when there is none. */
  key: string;
  id: string;
  /** Exactly `Buffer.from(JSON.stringify(buildExchangeRecord(x)))`. */
  serialized: Buffer;
}

/**
 * Builds, validates and serializes the record of `x` without turning its bodies into
 * JavaScript strings. Bodies are most of a record's bytes (Claude Code sends its whole
 * conversation every turn), and the plain way (decode to a string, JSON.stringify the
 * record, encode it back to UTF-8) transcodes each of them three times, through two-byte
 * strings as soon as a body holds one character past U+00FF, and was most of the recording
 * thread's garbage. Here each UTF-8 body is viewed as latin1 (one char per byte, a copy),
 * escaped by JSON.stringify (which touches only `"`, `\` and control characters, all ASCII,
 * so the multi-byte sequences pass through untouched) and written back as latin1: the same
 * bytes the plain way produces, byte for byte (tested). The rest of the record is small and
 * goes through JSON.stringify as usual, with a placeholder where each body goes.
 */
export function encodeExchangeRecord(x: CapturedExchange, placeholderPrefix: string): EncodedRecord {
  if (!/^[A-Za-z0-9_-]+$/.test(placeholderPrefix)) throw new Error('placeholderPrefix: letters, digits, _ and - only (JSON.stringify must not escape it)');
  const escaped: string[] = [];
  const record = buildRecord(x, (bytes, text) => {
    if (text === null) return { encoding: 'base64', data: bytes.toString('base64'), bytes: bytes.length };
    escaped.push(JSON.stringify(text));
    return { encoding: 'utf8', data: `${placeholderPrefix}${escaped.length - 1}`, bytes: bytes.length };
  });
  const key = record.sessionId ?? record.id;
  const skeleton = JSON.stringify(record);
  // Cut the skeleton at each placeholder (a quoted string of its own); a placeholder that
  // also occurs elsewhere (a header value equal to it, however unlikely) means the
  // positions are ambiguous: then serialize the plain way.
  const pieces: string[] = [];
  let from = 0;
  for (let i = 0; i < escaped.length; i++) {
    const quoted = `"${placeholderPrefix}${i}"`;
    const at = skeleton.indexOf(quoted);
    if (at < from || skeleton.lastIndexOf(quoted) !== at) {
      return { key, id: record.id, serialized: Buffer.from(JSON.stringify(buildExchangeRecord(x)), 'utf8') };
    }
    pieces.push(skeleton.slice(from, at));
    from = at + quoted.length;
  }
  pieces.push(skeleton.slice(from));
  let size = 0;
  for (const p of pieces) size += Buffer.byteLength(p, 'utf8');
  for (const e of escaped) size += e.length;
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (let i = 0; i < pieces.length; i++) {
    at += out.write(pieces[i]!, at, 'utf8');
    if (i < escaped.length) at += out.write(escaped[i]!, at, 'latin1');
  }
  return { key, id: record.id, serialized: out };
}
