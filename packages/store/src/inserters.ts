// Typed, validated, idempotent inserts. Every insert carries an insert_deduplication_token
// (derived from the Kafka offsets it covers), so retrying the same batch (after a timeout
// whose insert had in fact landed, or after a restart) stores nothing new; the tables are
// ReplacingMergeTree on the row id as a second line of defence for replays with other tokens.
import type { ClickHouseClient } from '@clickhouse/client';
import { ExchangeRecord, Finding, PolicyUpdate, SecurityEvent, describeZodError } from '@glitch/records';
import { createHash } from 'node:crypto';
import type { z } from 'zod';
import { exchangeRow, findingRow, policyUpdateRow, securityEventRow, type Provenance } from './rows.js';

export interface InsertResult {
  table: string;
  rows: number;
  dedupToken: string;
}

export interface OffsetRange {
  topic: string;
  partition: number;
  firstOffset: string | number | bigint;
  lastOffset: string | number | bigint;
}

/**
 * The deduplication token of a batch: its table plus the topic/partition/offset ranges it
 * covers, in a canonical order. The same ranges always give the same token.
 */
export function dedupToken(table: string, ranges: readonly OffsetRange[]): string {
  if (ranges.length === 0) throw new Error('dedupToken needs at least one offset range');
  const parts = ranges
    .map((r) => ({ ...r, first: BigInt(r.firstOffset), last: BigInt(r.lastOffset) }))
    .sort((a, b) => (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.partition - b.partition || (a.first < b.first ? -1 : a.first > b.first ? 1 : 0)))
    .map((r) => `${r.topic}/${r.partition}:${r.first}-${r.last}`);
  const token = `${table}:${parts.join(',')}`;
  // Tokens live in the deduplication log of every part: keep long ones short.
  return token.length <= 200 ? token : `${table}:sha256:${createHash('sha256').update(token).digest('hex')}`;
}

const DEDUP_SETTINGS = {
  insert_deduplicate: 1,
  // Without this, a deduplicated insert into exchanges would still feed usage_hourly_mv.
  deduplicate_blocks_in_dependent_materialized_views: 1,
} as const;

async function insertRows(client: ClickHouseClient, table: string, values: object[], token: string): Promise<InsertResult> {
  if (!token) throw new Error(`insert into ${table}: a dedup token is required`);
  if (values.length > 0) {
    await client.insert({ table, values, format: 'JSONEachRow', clickhouse_settings: { ...DEDUP_SETTINGS, insert_deduplication_token: token } });
  }
  return { table, rows: values.length, dedupToken: token };
}

function validated<S extends z.ZodType>(schema: S, what: string, value: unknown, index: number): z.output<S> {
  const r = schema.safeParse(value);
  if (!r.success) throw new Error(`${what} #${index} is invalid: ${describeZodError(r.error)}`);
  return r.data;
}

export async function insertExchanges(
  client: ClickHouseClient,
  rows: readonly { record: ExchangeRecord; provenance?: Provenance }[],
  token: string,
): Promise<InsertResult> {
  const values = rows.map((r, i) => exchangeRow(validated(ExchangeRecord, 'exchange record', r.record, i), r.provenance));
  return insertRows(client, 'exchanges', values, token);
}

export async function insertSecurityEvents(
  client: ClickHouseClient,
  rows: readonly { event: SecurityEvent; provenance?: Provenance }[],
  token: string,
): Promise<InsertResult> {
  const values = rows.map((r, i) => securityEventRow(validated(SecurityEvent, 'security event', r.event, i), r.provenance));
  return insertRows(client, 'security_events', values, token);
}

export async function insertFindings(
  client: ClickHouseClient,
  rows: readonly { finding: Finding; provenance?: Provenance }[],
  token: string,
): Promise<InsertResult> {
  const values = rows.map((r, i) => findingRow(validated(Finding, 'finding', r.finding, i), r.provenance));
  return insertRows(client, 'findings', values, token);
}

export async function insertPolicyUpdates(
  client: ClickHouseClient,
  rows: readonly { update: PolicyUpdate; provenance?: Provenance }[],
  token: string,
): Promise<InsertResult> {
  const values = rows.map((r, i) => policyUpdateRow(validated(PolicyUpdate, 'policy update', r.update, i), r.provenance));
  return insertRows(client, 'policy_updates', values, token);
}

export type ProvenancedTable = 'exchanges' | 'findings' | 'security_events' | 'policy_updates';

/**
 * Per partition of `topic`, the highest Kafka offset stored in `table`. A consumer inserts
 * each partition in offset order, so everything at or below it is already stored: after a
 * restart it can skip those offsets instead of inserting them again.
 */
export async function insertedWatermarks(client: ClickHouseClient, table: ProvenancedTable, topic: string): Promise<Map<number, bigint>> {
  const rs = await client.query({
    query: `SELECT kafka_partition AS partition, toString(max(kafka_offset)) AS offset FROM ${table} WHERE kafka_topic = {topic:String} GROUP BY kafka_partition`,
    query_params: { topic },
    format: 'JSONEachRow',
  });
  const out = new Map<number, bigint>();
  for (const row of await rs.json<{ partition: number; offset: string }>()) out.set(Number(row.partition), BigInt(row.offset));
  return out;
}
