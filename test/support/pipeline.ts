// The exchange pipeline for e2e/fault tests and the bench: forwarder (startForwarder) →
// RecordPublisher (Kafka bus + disk spool) → Kafka → ingest → ClickHouse, plus the helpers
// that drive it with real HTTP clients and read ClickHouse back.
import assert from 'node:assert/strict';
import { createKafkaBus, type Bus, type KafkaBusOptions } from '@glitch/bus';
import type { RecordingCpus, RecordingPriority, RunningForwarder, StaticKey } from '@glitch/forwarder';
import { startIngest, type Ingest, type IngestOptions } from '@glitch/ingest';
import type { Logger } from '@glitch/log';
import { RecordPublisher, type PublisherOptions } from '@glitch/recorder';
import { bodyToBytes, type Body } from '@glitch/records';
import { DiskSpool, type SpoolOptions } from '@glitch/spool';
import type { ClickHouseClient } from '@glitch/store';
import { uniqueName } from '../harness/env.js';
import { send, type HttpResult } from './http.js';
import { parseSse } from './sse.js';

export interface PipelineTopics {
  exchanges: string;
  findings: string;
  deadLetter: string;
}

/** Fresh topics (the librdkafka mock has no CreateTopics: the harness creates them). */
export async function pipelineTopics(createTopic: (name: string, partitions: number) => Promise<void>, partitions = 3): Promise<PipelineTopics> {
  const topics = { exchanges: uniqueName('pex'), findings: uniqueName('pfi'), deadLetter: uniqueName('pdl') };
  await createTopic(topics.exchanges, partitions);
  await createTopic(topics.findings, 1);
  await createTopic(topics.deadLetter, 1);
  return topics;
}

/**
 * The recorder's Kafka bus. Few producer retries: an outage should turn into `retry` outcomes
 * (and spooling) within a few seconds rather than hold records in memory.
 */
export function recorderBus(brokers: string[], logger: Logger, extra: Partial<KafkaBusOptions> = {}): Bus {
  return createKafkaBus({
    brokers,
    clientId: 'glitch-recorder',
    logger,
    connectionTimeoutMs: 1_000,
    requestTimeoutMs: 5_000,
    producerRetry: { retries: 2, initialRetryTime: 100, maxRetryTime: 500 },
    clientRetry: { retries: 2, initialRetryTime: 100, maxRetryTime: 500 },
    ...extra,
  });
}

export interface SensorOptions {
  brokers: string[];
  topic: string;
  upstreamUrl: string;
  keys: StaticKey[];
  spoolDir: string;
  threads?: number;
  port?: number;
  logger: Logger;
  spool?: Partial<Omit<SpoolOptions, 'dir'>>;
  publisher?: Partial<Omit<PublisherOptions, 'bus' | 'spool' | 'logger' | 'topic'>>;
  bus?: Partial<KafkaBusOptions>;
  /** false: the forwarder runs without a recorder (baseline for the added-latency bench). Default true. */
  recording?: boolean;
  /** startForwarder's recordingPriority (default `normal`: a test process is never lowered). */
  recordingPriority?: RecordingPriority;
  /** startForwarder's relayInMainThread (default: only without a recorder). */
  relayInMainThread?: boolean;
  /** startForwarder's recordingCpus (default `off`: a test process's threads stay where they are). */
  recordingCpus?: RecordingCpus;
  /** startForwarder's captureHandoffDelayMs (default the forwarder's). */
  captureHandoffDelayMs?: number;
}

export interface Sensor {
  forwarder: RunningForwarder;
  publisher: RecordPublisher;
  spool: DiskSpool;
  bus: Bus;
  /** Graceful: stop taking traffic, flush records to Kafka (or the spool), close. */
  stop(): Promise<void>;
}

/** Forwarder + RecordPublisher (Kafka bus, disk spool): what a production forwarder process runs. */
export async function startSensor(o: SensorOptions): Promise<Sensor> {
  const { startForwarder } = await import('@glitch/forwarder');
  const bus = recorderBus(o.brokers, o.logger, o.bus);
  const spool = new DiskSpool({ dir: o.spoolDir, maxBytes: 1024 * 1024 * 1024, whenFull: 'refuse', ...o.spool });
  const publisher = new RecordPublisher({ bus, spool, logger: o.logger, topic: o.topic, replayIntervalMs: 250, ...o.publisher });
  let forwarder: RunningForwarder;
  try {
    forwarder = await startForwarder({
      host: '127.0.0.1',
      port: o.port ?? 0,
      adminHost: '127.0.0.1',
      adminPort: 0,
      threads: o.threads ?? 1,
      upstreamUrl: o.upstreamUrl,
      keys: o.keys,
      logger: o.logger,
      ...(o.recording === false ? {} : { recorder: publisher }),
      shutdownGraceMs: 5_000,
      ...(o.recordingPriority !== undefined ? { recordingPriority: o.recordingPriority } : {}),
      ...(o.relayInMainThread !== undefined ? { relayInMainThread: o.relayInMainThread } : {}),
      ...(o.recordingCpus !== undefined ? { recordingCpus: o.recordingCpus } : {}),
      ...(o.captureHandoffDelayMs !== undefined ? { captureHandoffDelayMs: o.captureHandoffDelayMs } : {}),
    });
  } catch (e) {
    await publisher.close();
    await bus.close();
    throw e;
  }
  let stopping: Promise<void> | null = null;
  return {
    forwarder,
    publisher,
    spool,
    bus,
    stop() {
      stopping ??= (async () => {
        await forwarder.stop(5_000);
        await publisher.close();
        await bus.close();
      })();
      return stopping;
    },
  };
}

/** Ingest options for tests: a short session (the librdkafka mock holds every rejoin for one). */
export function pipelineIngestOptions(brokers: string[], topics: PipelineTopics, client: ClickHouseClient, logger: Logger, extra: Partial<IngestOptions> = {}): IngestOptions {
  return {
    kafka: { brokers, consumer: { sessionTimeoutMs: 6_000, heartbeatIntervalMs: 500, maxWaitTimeMs: 100 } },
    clickhouse: { client },
    groupId: uniqueName('pingest'),
    batchRows: 50,
    batchMs: 150,
    topics,
    backoff: { initialMs: 100, maxMs: 1_000 },
    logger,
    ...extra,
  };
}

export async function startPipelineIngest(opts: IngestOptions): Promise<Ingest> {
  return startIngest(opts);
}

// ---- driving the forwarder -----------------------------------------------------------------

export interface MessageRequest {
  session: string;
  /** The exact request body bytes. */
  body: Buffer;
  /** Abort (destroy the socket) after this many response body bytes. */
  abortAfterBytes?: number;
  timeoutMs?: number;
}

/** `POST /v1/messages?beta=true` the way Claude Code sends it (x-api-key, session header, X-Glitch-Key). */
export function postMessage(forwarderUrl: string, key: { secret: string }, r: MessageRequest): Promise<HttpResult> {
  return send({
    url: `${forwarderUrl}/v1/messages?beta=true`,
    method: 'POST',
    headers: [
      ['content-type', 'application/json'],
      ['x-api-key', 'sk-ant-api03-upstream-credential-not-for-records'],
      ['anthropic-version', '2023-06-01'],
      ['X-Claude-Code-Session-Id', r.session],
      ['X-Glitch-Key', key.secret],
      ['x-app', 'cli'],
      ['content-length', String(r.body.length)],
    ],
    body: r.body,
    ...(r.abortAfterBytes !== undefined ? { abortAfterBytes: r.abortAfterBytes } : {}),
    timeoutMs: r.timeoutMs ?? 60_000,
  });
}

/** A Claude Code-like request body carrying `tag` (to find it again) and `seq` (its turn in the session). */
export function messageBody(o: { tag: string; seq?: number; stream: boolean; padBytes?: number; model?: string }): Buffer {
  const pad = o.padBytes ? [{ role: 'user', content: [{ type: 'text', text: padding(o.padBytes) }] }] : [];
  return Buffer.from(
    JSON.stringify({
      model: o.model ?? 'claude-sonnet-4-6',
      messages: [...pad, { role: 'user', content: `tag=${o.tag} seq=${o.seq ?? 0}` }],
      system: [{ type: 'text', text: 'You are Claude Code.' }],
      metadata: { user_id: JSON.stringify({ device_id: 'ab'.repeat(32), account_uuid: 'acc', session_id: 'meta-session' }) },
      max_tokens: 1024,
      stream: o.stream,
    }),
  );
}

/** Text that compresses like real transcripts (the librdkafka mock keeps ~5 MiB per partition). */
export function padding(bytes: number): string {
  const line = 'const result = await tool.run({ path: "src/index.ts", mode: "read" }); // Ünïcödé ✓\n';
  return line.repeat(Math.ceil(bytes / Buffer.byteLength(line))).slice(0, bytes);
}

/** The `tag=… seq=…` marker of a request body (raw clients and the SDK both carry it in a message). */
export function tagOf(body: Buffer): { tag: string; seq: number } | null {
  const m = /tag=([\w.-]+) seq=(\d+)/.exec(body.subarray(Math.max(0, body.length - 4096)).toString('utf8')) ?? /tag=([\w.-]+) seq=(\d+)/.exec(body.toString('utf8'));
  return m ? { tag: m[1]!, seq: Number(m[2]) } : null;
}

/** Usage as the API reported it in a response (JSON body or SSE events), independent of the recorder's code. */
export function usageOfResponse(bytes: Buffer, stream: boolean): { input: number; output: number; cacheRead: number; cacheWrite: number } | null {
  type U = { input_tokens?: number; output_tokens?: number; cache_read_input_tokens?: number; cache_creation_input_tokens?: number };
  let u: U | undefined;
  if (!stream) {
    u = (JSON.parse(bytes.toString('utf8')) as { usage?: U }).usage;
  } else {
    for (const e of parseSse(bytes)) {
      const d = JSON.parse(e.data) as { type: string; message?: { usage?: U }; usage?: U };
      if (d.type === 'message_start') u = { ...d.message?.usage };
      if (d.type === 'message_delta' && u) u = { ...u, ...d.usage };
    }
  }
  if (!u) return null;
  return { input: u.input_tokens ?? 0, output: u.output_tokens ?? 0, cacheRead: u.cache_read_input_tokens ?? 0, cacheWrite: u.cache_creation_input_tokens ?? 0 };
}

// ---- reading ClickHouse back -----------------------------------------------------------------

export interface StoredExchange {
  id: string;
  session_id: string | null;
  stream: boolean;
  status: number;
  client_aborted: boolean;
  request: Buffer;
  response: Buffer;
  events: Buffer | null;
  request_headers: Record<string, string | string[]>;
  usage: { input: number; output: number; cacheRead: number; cacheWrite: number } | null;
  kafka_partition: number;
  kafka_offset: number;
  error_code: string | null;
}

function bytesOf(data: string, encoding: string, bytes: number | string): Buffer {
  const b = bodyToBytes({ data, encoding, bytes: Number(bytes) } as Body);
  assert.equal(b.length, Number(bytes), 'stored byte count matches the stored body');
  return b;
}

/** Every row of `exchanges` (not FINAL: duplicates must show). */
export async function storedExchanges(client: ClickHouseClient): Promise<StoredExchange[]> {
  const rs = await client.query({
    query: `SELECT toString(id) AS id, session_id, stream, status, client_aborted, request_headers,
              request_body, request_body_encoding, request_body_bytes,
              response_body, response_body_encoding, response_body_bytes,
              response_events, response_events_encoding, response_events_bytes,
              input_tokens, output_tokens, cache_read_input_tokens, cache_creation_input_tokens,
              kafka_partition, kafka_offset, error_code
            FROM exchanges ORDER BY kafka_partition, kafka_offset`,
    format: 'JSONEachRow',
  });
  type Row = Record<string, unknown>;
  return (await rs.json<Row>()).map((r) => ({
    id: r.id as string,
    session_id: r.session_id as string | null,
    stream: Boolean(r.stream),
    status: Number(r.status),
    client_aborted: Boolean(r.client_aborted),
    request: bytesOf(r.request_body as string, r.request_body_encoding as string, r.request_body_bytes as string),
    response: bytesOf(r.response_body as string, r.response_body_encoding as string, r.response_body_bytes as string),
    events: r.response_events === null ? null : bytesOf(r.response_events as string, r.response_events_encoding as string, r.response_events_bytes as string),
    request_headers: JSON.parse(r.request_headers as string) as Record<string, string | string[]>,
    usage:
      r.input_tokens === null
        ? null
        : { input: Number(r.input_tokens), output: Number(r.output_tokens), cacheRead: Number(r.cache_read_input_tokens), cacheWrite: Number(r.cache_creation_input_tokens) },
    kafka_partition: Number(r.kafka_partition),
    kafka_offset: Number(r.kafka_offset),
    error_code: r.error_code as string | null,
  }));
}

export async function scalar(client: ClickHouseClient, query: string): Promise<number> {
  const rs = await client.query({ query, format: 'JSONEachRow' });
  const [row] = await rs.json<Record<string, unknown>>();
  return Number(Object.values(row ?? {})[0]);
}

/** Polls until `cond()` holds; rejects after `ms` naming `what` and showing `detail()`. */
export async function waitFor(cond: () => boolean | Promise<boolean>, ms: number, what: string, detail?: () => unknown | Promise<unknown>): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}${detail ? `; state: ${JSON.stringify(await detail())}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Asserts the rows hold each of `ids` exactly once (plain count: duplicates show) and nothing else. */
export function assertExactlyOnce(rows: readonly { id: string }[], ids: readonly string[], what: string): void {
  const counts = new Map<string, number>();
  for (const r of rows) counts.set(r.id, (counts.get(r.id) ?? 0) + 1);
  const dup = [...counts].filter(([, n]) => n > 1);
  assert.deepEqual(dup, [], `${what}: records stored more than once`);
  const missing = ids.filter((id) => !counts.has(id));
  assert.deepEqual(missing, [], `${what}: records missing`);
  assert.equal(rows.length, ids.length, `${what}: ${rows.length} rows for ${ids.length} records`);
}

/** Per session, rows in Kafka order (same key → same partition → offset order) must carry seq 0, 1, 2, … */
export function assertInOrderPerSession(rows: readonly { session: string; seq: number; offset: number }[], expectedPerSession: ReadonlyMap<string, number>): void {
  const bySession = new Map<string, { seq: number; offset: number }[]>();
  for (const r of rows) bySession.set(r.session, [...(bySession.get(r.session) ?? []), r]);
  for (const [session, n] of expectedPerSession) {
    const got = (bySession.get(session) ?? []).sort((a, b) => a.offset - b.offset).map((r) => r.seq);
    assert.deepEqual(got, Array.from({ length: n }, (_, i) => i), `session ${session}: sequence numbers in Kafka order`);
  }
}
