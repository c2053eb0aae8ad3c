// Everything that crosses a process boundary: zod schemas, their TypeScript types, topic
// and channel names. Every message carries `schemaVersion` so a consumer can refuse
// (dead-letter) what it does not understand instead of misreading it.
import { isUtf8 } from 'node:buffer';
import { z } from 'zod';

export const SCHEMA_VERSION = 1 as const;

export const TOPICS = {
  exchanges: 'glitch.exchanges.v1',
  findings: 'glitch.findings.v1',
  deadLetter: 'glitch.deadletter.v1',
} as const;
export type TopicName = (typeof TOPICS)[keyof typeof TOPICS];

/** Redis keys for the retroactive policy channel (stream of updates + snapshot hash). */
export const CHANNELS = {
  policyStream: 'glitch:policy:updates',
  policySnapshot: 'glitch:policy:snapshot',
} as const;

const uuid = z.string().regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i, 'must be a UUID');
const epochMs = z.number().int().nonnegative();
const headerMap = z.record(z.string(), z.union([z.string(), z.array(z.string())]));
const version = z.literal(SCHEMA_VERSION, { error: `unsupported schemaVersion (this build reads ${SCHEMA_VERSION})` });

/** A body exactly as it crossed the wire: utf8 text when it decodes cleanly, else base64. */
export const Body = z.object({
  encoding: z.enum(['utf8', 'base64']),
  data: z.string(),
  bytes: z.number().int().nonnegative(),
});
export type Body = z.infer<typeof Body>;

export const Usage = z.object({
  inputTokens: z.number().int().nonnegative(),
  outputTokens: z.number().int().nonnegative(),
  cacheReadInputTokens: z.number().int().nonnegative(),
  cacheCreationInputTokens: z.number().int().nonnegative(),
});
export type Usage = z.infer<typeof Usage>;

export const Severity = z.enum(['info', 'low', 'medium', 'high', 'critical']);
export type Severity = z.infer<typeof Severity>;

export const Action = z.enum(['allow', 'log', 'redact', 'block']);
export type Action = z.infer<typeof Action>;

export const InlineFinding = z.object({
  ruleId: z.string().min(1),
  severity: Severity,
  action: Action,
  message: z.string(),
  /** Where in the exchange: e.g. "request.messages[3].content[0]" or "response.content[1]". */
  location: z.string(),
});
export type InlineFinding = z.infer<typeof InlineFinding>;

export const ExchangeRecord = z.object({
  schemaVersion: version,
  kind: z.literal('exchange'),
  id: uuid, // UUIDv7: time-ordered
  tenantId: z.string().min(1),
  keyId: z.string().min(1),
  sessionId: z.string().nullable(),
  deviceId: z.string().nullable(),
  method: z.string().min(1),
  route: z.string().startsWith('/'),
  query: z.string(),
  model: z.string().nullable(),
  stream: z.boolean(),
  request: z.object({ headers: headerMap, body: Body }),
  response: z.object({
    status: z.number().int().min(0).max(599), // 0 = no response (upstream unreachable, client gone)
    headers: headerMap,
    /** JSON body; for SSE the message reassembled from the events. */
    body: Body,
    /** For SSE: the raw event stream exactly as relayed. */
    events: Body.nullable(),
    /**
     * The forwarder kept only the first part of a large response body (its capture limit):
     * body / events hold what was kept, decoded. The client still received every byte.
     */
    bodyTruncated: z.boolean().default(false),
    /**
     * Response body bytes upstream sent, as on the wire (still content-encoded; for SSE the
     * event stream), counted in full even when truncated. null: not known (records written
     * before this field).
     */
    bodyWireBytes: z.number().int().nonnegative().nullable().default(null),
  }),
  usage: Usage.nullable(),
  timings: z.object({
    receivedAt: epochMs,
    upstreamFirstByteMs: z.number().nonnegative().nullable(),
    doneMs: z.number().nonnegative(),
    addedOverheadMs: z.number().nonnegative(),
  }),
  verdict: z.object({ action: Action, findings: z.array(InlineFinding) }),
  clientAborted: z.boolean(),
  error: z.object({ code: z.string(), message: z.string() }).nullable(),
});
export type ExchangeRecord = z.infer<typeof ExchangeRecord>;

/** A record too large for one broker message, split under the same key; consumers reassemble. */
export const RecordChunk = z.object({
  schemaVersion: version,
  kind: z.literal('chunk'),
  recordId: uuid,
  index: z.number().int().nonnegative(),
  count: z.number().int().positive(),
  data: z.string(), // base64 slice of the serialized record
});
export type RecordChunk = z.infer<typeof RecordChunk>;

export const Finding = z.object({
  schemaVersion: version,
  kind: z.literal('finding'),
  id: uuid,
  exchangeId: uuid,
  tenantId: z.string().min(1),
  sessionId: z.string().nullable(),
  detector: z.string().min(1),
  detectorVersion: z.string().min(1),
  severity: Severity,
  category: z.string().min(1),
  summary: z.string(),
  evidence: z.string(), // already redacted by the detector
  recommendedAction: Action,
  createdAt: epochMs,
});
export type Finding = z.infer<typeof Finding>;

export const PolicyUpdateKind = z.enum(['block_session', 'block_key', 'block_tenant', 'add_signature', 'lift']);
export const PolicyUpdate = z
  .object({
    schemaVersion: version,
    kind: z.literal('policy_update'),
    id: uuid,
    version: z.number().int().positive(),
    tenantId: z.string().min(1),
    update: PolicyUpdateKind,
    /** Session id, key id, signature id, or the id of the update being lifted. */
    target: z.string().min(1),
    /** Signature body for add_signature (a regex source); absent otherwise. */
    pattern: z.string().optional(),
    ttlSeconds: z.number().int().positive().nullable(),
    reason: z.string().min(1),
    createdBy: z.string().min(1),
    createdAt: epochMs,
  })
  .refine((u) => u.update !== 'add_signature' || u.pattern !== undefined, {
    message: 'add_signature needs a pattern',
    path: ['pattern'],
  });
export type PolicyUpdate = z.infer<typeof PolicyUpdate>;

export const SecurityEvent = z.object({
  schemaVersion: version,
  kind: z.literal('security_event'),
  id: uuid,
  exchangeId: uuid.nullable(),
  tenantId: z.string().min(1),
  sessionId: z.string().nullable(),
  source: z.enum(['inline', 'detector', 'policy']),
  ruleId: z.string().min(1),
  severity: Severity,
  action: Action,
  message: z.string(),
  at: epochMs,
});
export type SecurityEvent = z.infer<typeof SecurityEvent>;

export const DeadLetter = z.object({
  schemaVersion: version,
  kind: z.literal('dead_letter'),
  sourceTopic: z.string(),
  partition: z.number().int().nonnegative(),
  offset: z.string(),
  reason: z.string(),
  payload: z.string(), // base64 of the original message value
  at: epochMs,
});
export type DeadLetter = z.infer<typeof DeadLetter>;

// ---- decoding ------------------------------------------------------------------------

export type Decoded<T> = { ok: true; value: T } | { ok: false; reason: string };

/** Readable one-line summary of a zod error: `field.path: message; other: message`. */
export function describeZodError(error: z.ZodError): string {
  return error.issues
    .map((i) => `${i.path.length ? i.path.map(String).join('.') : '(root)'}: ${i.message}`)
    .join('; ');
}

/**
 * Parses a wire message (Buffer or string of JSON) against `schema`. Never throws: a bad
 * message is an outcome (dead-letter with this reason), not an exception.
 */
export function decode<S extends z.ZodType>(schema: S, raw: Buffer | string | null | undefined): Decoded<z.output<S>> {
  if (raw === null || raw === undefined) return { ok: false, reason: 'empty message' };
  let json: unknown;
  try {
    json = JSON.parse(typeof raw === 'string' ? raw : raw.toString('utf8'));
  } catch (e) {
    return { ok: false, reason: `not JSON: ${(e as Error).message}` };
  }
  const r = schema.safeParse(json);
  return r.success ? { ok: true, value: r.data } : { ok: false, reason: describeZodError(r.error) };
}

/** Validates before encoding so a producer can never put a malformed message on the wire. */
export function encode<S extends z.ZodType>(schema: S, value: z.input<S>): string {
  return JSON.stringify(schema.parse(value));
}

/** Body helper: utf8 when the bytes round-trip, base64 otherwise (bad UTF-8 is kept exact). */
export function bodyFromBytes(bytes: Uint8Array): Body {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // isUtf8 validates in native code without building a string first: valid UTF-8 decodes
  // and re-encodes to the same bytes, so the text form is exact.
  if (isUtf8(buf)) return { encoding: 'utf8', data: buf.toString('utf8'), bytes: buf.byteLength };
  return { encoding: 'base64', data: buf.toString('base64'), bytes: buf.byteLength };
}

export function bodyToBytes(body: Body): Buffer {
  return Buffer.from(body.data, body.encoding === 'utf8' ? 'utf8' : 'base64');
}
