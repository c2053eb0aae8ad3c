// CapturedExchange (what the relay saw) → ExchangeRecord v1 (what crosses Kafka).
// Runs off the hot path. Secrets in headers become [REDACTED]; bodies stay as received.
import type { CapturedExchange, HeaderPair } from '@glitch/forwarder';
import { redactHeaders } from '@glitch/log';
import { bodyFromBytes, ExchangeRecord, SCHEMA_VERSION, type Body } from '@glitch/records';

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

/**
 * Model and fleet identity from a Messages request body (as the record carries it, so the
 * bytes are decoded once); nothing when it is not JSON.
 */
export function requestFacts(body: Body): RequestFacts {
  const facts: RequestFacts = { model: null, deviceId: null, sessionId: null };
  if (body.encoding !== 'utf8' || body.data.charCodeAt(0) !== 0x7b /* { */) return facts;
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.data);
  } catch {
    return facts;
  }
  if (!parsed || typeof parsed !== 'object') return facts;
  const req = parsed as { model?: unknown; metadata?: { user_id?: unknown } };
  if (typeof req.model === 'string') facts.model = req.model;
  // Claude Code puts a JSON string here: {"device_id":…,"account_uuid":…,"session_id":…}
  const userId = req.metadata?.user_id;
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

export function buildExchangeRecord(x: CapturedExchange): ExchangeRecord {
  const requestBody = bodyFromBytes(x.requestBody);
  const facts = requestFacts(requestBody);
  const decoded = x.decodedResponseBody;
  let responseBody: Body;
  let events: Body | null = null;
  if (x.sse) {
    responseBody = bodyFromBytes(Buffer.from(JSON.stringify(x.sse.message ?? null)));
    events = bodyFromBytes(decoded ?? x.responseBody);
  } else {
    // Undecodable content-encoding: keep upstream's bytes (base64) rather than nothing.
    responseBody = bodyFromBytes(decoded ?? x.responseBody ?? EMPTY);
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
