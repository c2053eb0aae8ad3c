// ExchangeRecord / Finding / SecurityEvent / PolicyUpdate ⇄ ClickHouse rows (JSONEachRow).
// Pure functions: no client here.
import type { Body, ExchangeRecord, Finding, InlineFinding, PolicyUpdate, SecurityEvent } from '@glitch/records';
import { createHash } from 'node:crypto';

/** Where a row came from: the Kafka message that completed it. */
export interface Provenance {
  topic: string;
  partition: number;
  offset: string | number | bigint;
}

/** Provenance columns for rows that did not come through Kafka. */
export const NO_PROVENANCE = { kafka_topic: '', kafka_partition: -1, kafka_offset: -1 } as const;

/** Epoch milliseconds → `YYYY-MM-DD hh:mm:ss.mmm` (UTC), which every ClickHouse parses as DateTime64(3). */
export function dateTime64(ms: number): string {
  return new Date(ms).toISOString().replace('T', ' ').replace('Z', '');
}

/** `YYYY-MM-DD hh:mm:ss[.fff]` (UTC) → epoch milliseconds. */
export function epochMs(value: string): number {
  const ms = Date.parse(value.replace(' ', 'T') + 'Z');
  if (Number.isNaN(ms)) throw new Error(`not a ClickHouse DateTime: ${JSON.stringify(value)}`);
  return ms;
}

function provenanceColumns(p: Provenance | undefined) {
  if (!p) return NO_PROVENANCE;
  return { kafka_topic: p.topic, kafka_partition: p.partition, kafka_offset: String(p.offset) };
}

export interface ExchangeRow {
  id: string;
  schema_version: number;
  tenant_id: string;
  key_id: string;
  session_id: string | null;
  device_id: string | null;
  received_at: string;
  method: string;
  route: string;
  query: string;
  model: string | null;
  stream: boolean;
  status: number;
  request_headers: string;
  request_body: string;
  request_body_encoding: string;
  request_body_bytes: number | string;
  response_headers: string;
  response_body: string;
  response_body_encoding: string;
  response_body_bytes: number | string;
  response_events: string | null;
  response_events_encoding: string | null;
  response_events_bytes: number | string | null;
  response_body_truncated: boolean;
  response_body_wire_bytes: number | string | null;
  input_tokens: number | string | null;
  output_tokens: number | string | null;
  cache_read_input_tokens: number | string | null;
  cache_creation_input_tokens: number | string | null;
  upstream_first_byte_ms: number | null;
  done_ms: number;
  added_overhead_ms: number;
  verdict_action: string;
  findings: string;
  finding_rule_ids: string[];
  client_aborted: boolean;
  error_code: string | null;
  error_message: string | null;
  kafka_topic: string;
  kafka_partition: number;
  kafka_offset: number | string;
}

export function exchangeRow(r: ExchangeRecord, provenance?: Provenance): ExchangeRow {
  return {
    id: r.id,
    schema_version: r.schemaVersion,
    tenant_id: r.tenantId,
    key_id: r.keyId,
    session_id: r.sessionId,
    device_id: r.deviceId,
    received_at: dateTime64(r.timings.receivedAt),
    method: r.method,
    route: r.route,
    query: r.query,
    model: r.model,
    stream: r.stream,
    status: r.response.status,
    request_headers: JSON.stringify(r.request.headers),
    request_body: r.request.body.data,
    request_body_encoding: r.request.body.encoding,
    request_body_bytes: r.request.body.bytes,
    response_headers: JSON.stringify(r.response.headers),
    response_body: r.response.body.data,
    response_body_encoding: r.response.body.encoding,
    response_body_bytes: r.response.body.bytes,
    response_events: r.response.events?.data ?? null,
    response_events_encoding: r.response.events?.encoding ?? null,
    response_events_bytes: r.response.events?.bytes ?? null,
    response_body_truncated: r.response.bodyTruncated,
    response_body_wire_bytes: r.response.bodyWireBytes,
    input_tokens: r.usage?.inputTokens ?? null,
    output_tokens: r.usage?.outputTokens ?? null,
    cache_read_input_tokens: r.usage?.cacheReadInputTokens ?? null,
    cache_creation_input_tokens: r.usage?.cacheCreationInputTokens ?? null,
    upstream_first_byte_ms: r.timings.upstreamFirstByteMs,
    done_ms: r.timings.doneMs,
    added_overhead_ms: r.timings.addedOverheadMs,
    verdict_action: r.verdict.action,
    findings: JSON.stringify(r.verdict.findings),
    finding_rule_ids: r.verdict.findings.map((f) => f.ruleId),
    client_aborted: r.clientAborted,
    error_code: r.error?.code ?? null,
    error_message: r.error?.message ?? null,
    ...provenanceColumns(provenance),
  };
}

const num = (v: number | string): number => Number(v);
const numOrNull = (v: number | string | null): number | null => (v === null ? null : Number(v));

function body(data: string, encoding: string, bytes: number | string): Body {
  if (encoding !== 'utf8' && encoding !== 'base64') throw new Error(`unknown body encoding ${JSON.stringify(encoding)}`);
  return { encoding, data, bytes: num(bytes) };
}

/** A row read back with `SELECT * FROM exchanges` (JSONEachRow) → the record it stores. */
export function exchangeFromRow(row: ExchangeRow): { record: ExchangeRecord; provenance: Provenance } {
  const usage =
    row.input_tokens === null
      ? null
      : {
          inputTokens: num(row.input_tokens),
          outputTokens: num(row.output_tokens ?? 0),
          cacheReadInputTokens: num(row.cache_read_input_tokens ?? 0),
          cacheCreationInputTokens: num(row.cache_creation_input_tokens ?? 0),
        };
  const record: ExchangeRecord = {
    schemaVersion: 1,
    kind: 'exchange',
    id: row.id,
    tenantId: row.tenant_id,
    keyId: row.key_id,
    sessionId: row.session_id,
    deviceId: row.device_id,
    method: row.method,
    route: row.route,
    query: row.query,
    model: row.model,
    stream: row.stream,
    request: { headers: JSON.parse(row.request_headers) as ExchangeRecord['request']['headers'], body: body(row.request_body, row.request_body_encoding, row.request_body_bytes) },
    response: {
      status: row.status,
      headers: JSON.parse(row.response_headers) as ExchangeRecord['response']['headers'],
      body: body(row.response_body, row.response_body_encoding, row.response_body_bytes),
      events:
        row.response_events === null
          ? null
          : body(row.response_events, row.response_events_encoding ?? 'utf8', row.response_events_bytes ?? 0),
      bodyTruncated: row.response_body_truncated,
      bodyWireBytes: numOrNull(row.response_body_wire_bytes),
    },
    usage,
    timings: {
      receivedAt: epochMs(row.received_at),
      upstreamFirstByteMs: numOrNull(row.upstream_first_byte_ms),
      doneMs: row.done_ms,
      addedOverheadMs: row.added_overhead_ms,
    },
    verdict: { action: row.verdict_action as ExchangeRecord['verdict']['action'], findings: JSON.parse(row.findings) as InlineFinding[] },
    clientAborted: row.client_aborted,
    error: row.error_code === null ? null : { code: row.error_code, message: row.error_message ?? '' },
  };
  return { record, provenance: { topic: row.kafka_topic, partition: row.kafka_partition, offset: String(row.kafka_offset) } };
}

export function securityEventRow(e: SecurityEvent, provenance?: Provenance) {
  return {
    id: e.id,
    schema_version: e.schemaVersion,
    exchange_id: e.exchangeId,
    tenant_id: e.tenantId,
    session_id: e.sessionId,
    source: e.source,
    rule_id: e.ruleId,
    severity: e.severity,
    action: e.action,
    message: e.message,
    at: dateTime64(e.at),
    ...provenanceColumns(provenance),
  };
}

export function findingRow(f: Finding, provenance?: Provenance) {
  return {
    id: f.id,
    schema_version: f.schemaVersion,
    exchange_id: f.exchangeId,
    tenant_id: f.tenantId,
    session_id: f.sessionId,
    detector: f.detector,
    detector_version: f.detectorVersion,
    severity: f.severity,
    category: f.category,
    summary: f.summary,
    evidence: f.evidence,
    recommended_action: f.recommendedAction,
    created_at: dateTime64(f.createdAt),
    ...provenanceColumns(provenance),
  };
}

export function policyUpdateRow(u: PolicyUpdate, provenance?: Provenance) {
  return {
    id: u.id,
    schema_version: u.schemaVersion,
    version: u.version,
    tenant_id: u.tenantId,
    update: u.update,
    target: u.target,
    pattern: u.pattern ?? null,
    ttl_seconds: u.ttlSeconds,
    reason: u.reason,
    created_by: u.createdBy,
    created_at: dateTime64(u.createdAt),
    ...provenanceColumns(provenance),
  };
}

/**
 * The security events an exchange's inline verdict implies: one per inline finding. Their
 * ids are derived from the exchange id and the finding's position, so replaying the same
 * exchange yields the same ids (and ReplacingMergeTree keeps one copy).
 */
export function securityEventsFromExchange(r: ExchangeRecord): SecurityEvent[] {
  return r.verdict.findings.map((f, i) => ({
    schemaVersion: 1,
    kind: 'security_event',
    id: derivedUuid(`${r.id}/inline/${i}`),
    exchangeId: r.id,
    tenantId: r.tenantId,
    sessionId: r.sessionId,
    source: 'inline',
    ruleId: f.ruleId,
    severity: f.severity,
    action: f.action,
    message: f.location ? `${f.message} (at ${f.location})` : f.message,
    at: r.timings.receivedAt,
  }));
}

/** A stable UUID (RFC 9562 version 8, name-based) for `name`. */
export function derivedUuid(name: string): string {
  const h = createHash('sha256').update(name).digest();
  h[6] = (h[6]! & 0x0f) | 0x80;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}
