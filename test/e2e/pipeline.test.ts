// The exchange pipeline end to end with real components: HTTP clients (node:http and the real
// @anthropic-ai/sdk) → forwarder (2 relay threads) → RecordPublisher → Kafka (the harness
// broker) → ingest → ClickHouse (the harness ClickHouse). Only the Anthropic API is a mock.
// Every exchange must be in `exchanges` exactly once with the bytes that crossed the wire.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import type { Ingest } from '@glitch/ingest';
import { createLogger } from '@glitch/log';
import { clickhouse, type ClickHouseEnv } from '../harness/clickhouse.js';
import { kafka, type KafkaEnv } from '../harness/kafka.js';
import { testKey } from '../support/forwarder.js';
import { reply, startMockUpstream, type MockUpstream, type ReceivedRequest } from '../support/mock-upstream.js';
import {
  assertExactlyOnce,
  messageBody,
  pipelineIngestOptions,
  pipelineTopics,
  postMessage,
  scalar,
  startPipelineIngest,
  startSensor,
  storedExchanges,
  tagOf,
  usageOfResponse,
  waitFor,
  type PipelineTopics,
  type Sensor,
} from '../support/pipeline.js';

const logger = createLogger({ name: 'pipeline-e2e', level: 'error' });
const key = testKey('tenant-pipeline');
const FIVE_MB = 5 * 1024 * 1024;

let ch: ClickHouseEnv;
let broker: KafkaEnv;
let up: MockUpstream;
let sensor: Sensor;
let ingest: Ingest;
let topics: PipelineTopics;

before(async () => {
  ch = await clickhouse();
  broker = await kafka();
  await ch.reset();
  topics = await pipelineTopics(broker.createTopic);
  up = await startMockUpstream();
  // Requests tagged abort-* get a slow stream the client walks away from.
  up.respond = (req) => {
    const t = tagOf(req.body);
    if (!t?.tag.startsWith('abort')) return undefined;
    return reply.stream({ content: [{ type: 'text', text: 'streaming slowly '.repeat(60) }] }, { eventDelayMs: 15 });
  };
  sensor = await startSensor({ brokers: broker.brokers, topic: topics.exchanges, upstreamUrl: up.url, keys: [key], spoolDir: mkdtempSync(join(tmpdir(), 'glitch-pipe-spool-')), threads: 2, logger });
  ingest = await startPipelineIngest(pipelineIngestOptions(broker.brokers, topics, ch.client, logger));
});

after(async () => {
  await sensor?.stop();
  await ingest?.stop();
  await up?.close();
});

interface Sent {
  tag: string;
  session: string;
  stream: boolean;
  aborted: boolean;
  /** Bytes the client sent (raw clients); the SDK's are checked against what upstream got. */
  body: Buffer | null;
}

async function pool<T>(items: readonly T[], concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

test('N exchanges (streaming, non-streaming, aborted, 5 MB bodies, SDK) land in ClickHouse exactly once, byte-equal, usage correct', async (t) => {
  t.diagnostic(`kafka: ${broker.description}; clickhouse: ${ch.description}; forwarder: 2 relay threads`);
  const sessions = Array.from({ length: 4 }, () => randomUUID());
  type Job = { kind: 'raw'; stream: boolean; tag: string; session: string; seq: number; pad?: number; abort?: boolean } | { kind: 'sdk'; stream: boolean; tag: string; session: string };
  const jobs: Job[][] = []; // one list per worker lane; a session's turns run in sequence
  sessions.forEach((session, s) => {
    const lane: Job[] = [];
    for (let seq = 0; seq < 6; seq++) lane.push({ kind: 'raw', stream: seq % 3 !== 2, tag: `s${s}-t${seq}`, session, seq });
    jobs.push(lane);
  });
  jobs.push([
    { kind: 'raw', stream: true, tag: 'big-sse-1', session: randomUUID(), seq: 0, pad: FIVE_MB },
    { kind: 'raw', stream: false, tag: 'big-json-1', session: randomUUID(), seq: 0, pad: FIVE_MB },
  ]);
  jobs.push([
    { kind: 'raw', stream: true, tag: 'big-sse-2', session: randomUUID(), seq: 0, pad: FIVE_MB },
    ...[0, 1, 2].map((i) => ({ kind: 'raw' as const, stream: true, tag: `abort-${i}`, session: randomUUID(), seq: 0, abort: true })),
  ]);
  jobs.push([0, 1, 2, 3, 4, 5].map((i) => ({ kind: 'sdk' as const, stream: i % 2 === 0, tag: `sdk-${i}`, session: randomUUID() })));

  const sent: Sent[] = [];
  await pool(jobs, jobs.length, async (lane) => {
    for (const job of lane) {
      if (job.kind === 'sdk') {
        const sdk = new Anthropic({
          apiKey: 'sk-ant-api03-sdk-credential-not-for-records',
          baseURL: sensor.forwarder.url,
          maxRetries: 0,
          timeout: 30_000,
          defaultHeaders: { 'X-Glitch-Key': key.secret, 'X-Claude-Code-Session-Id': job.session },
        });
        const params = { model: 'claude-sonnet-4-6', max_tokens: 256, messages: [{ role: 'user' as const, content: `tag=${job.tag} seq=0` }] };
        if (job.stream) {
          let text = '';
          for await (const ev of await sdk.messages.create({ ...params, stream: true })) if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta') text += ev.delta.text;
          assert.equal(text, up.defaultText);
        } else {
          const m = await sdk.messages.create(params);
          assert.equal(m.content[0]?.type, 'text');
        }
        sent.push({ tag: job.tag, session: job.session, stream: job.stream, aborted: false, body: null });
        continue;
      }
      const body = messageBody({ tag: job.tag, seq: job.seq, stream: job.stream, ...(job.pad ? { padBytes: job.pad } : {}) });
      const r = await postMessage(sensor.forwarder.url, key, { session: job.session, body, ...(job.abort ? { abortAfterBytes: 900 } : {}) });
      if (job.abort) assert.ok(!r.complete, `${job.tag}: the client left mid-stream`);
      else assert.equal(r.status, 200, `${job.tag}: ${r.body.subarray(0, 300).toString()}`);
      sent.push({ tag: job.tag, session: job.session, stream: job.stream, aborted: job.abort === true, body });
    }
  });
  const N = sent.length;
  t.diagnostic(`${N} exchanges sent through the forwarder`);

  await waitFor(
    async () => (await scalar(ch.client, 'SELECT count() FROM exchanges FINAL')) >= N,
    90_000,
    `${N} exchanges in ClickHouse`,
    async () => ({ stored: await scalar(ch.client, 'SELECT count() FROM exchanges'), publisher: sensor.publisher.stats, ingest: { ...ingest.stats(), bus: undefined } }),
  );
  // Ingest is caught up with everything published; a duplicate would have arrived by now too.
  await waitFor(() => ingest.stats().received >= sensor.publisher.stats.published, 30_000, 'ingest to receive every published record');

  const rows = await storedExchanges(ch.client);
  const byTag = new Map<string, (typeof rows)[number]>();
  for (const r of rows) {
    const tag = tagOf(r.request)?.tag;
    assert.ok(tag, `row ${r.id} carries a tag`);
    byTag.set(tag, r);
  }
  assertExactlyOnce(rows.map((r) => ({ id: tagOf(r.request)!.tag })), sent.map((s) => s.tag), 'exchanges');
  assert.equal(new Set(rows.map((r) => r.id)).size, N, 'distinct record ids');

  const upstreamByTag = new Map<string, ReceivedRequest>();
  for (const q of up.requests) {
    const tag = tagOf(q.body)?.tag;
    if (tag) upstreamByTag.set(tag, q);
  }
  for (const s of sent) {
    const row = byTag.get(s.tag)!;
    const q = upstreamByTag.get(s.tag);
    assert.ok(q, `${s.tag} reached upstream`);
    if (s.body) assert.ok(row.request.equals(s.body), `${s.tag}: stored request body (${row.request.length} B) is what the client sent (${s.body.length} B)`);
    assert.ok(row.request.equals(q.body), `${s.tag}: stored request body is what upstream received`);
    assert.equal(row.session_id, s.session, `${s.tag}: session id from X-Claude-Code-Session-Id`);
    assert.equal(row.request_headers['x-glitch-key'], '[REDACTED]', `${s.tag}: ${JSON.stringify(row.request_headers)}`);
    const headerText = JSON.stringify(row.request_headers);
    assert.ok(!headerText.includes('credential-not-for-records') && !headerText.includes(key.secret), `${s.tag}: no credential in stored headers: ${headerText}`);
    assert.equal(row.request_headers[s.body ? 'x-api-key' : 'authorization'], '[REDACTED]', `${s.tag}: the upstream credential header is redacted`);
    assert.equal(row.stream, s.stream, `${s.tag}: stream flag`);
    assert.equal(row.status, 200);
    const served = q.response.body;
    if (s.aborted) {
      assert.equal(row.client_aborted, true, `${s.tag}: client_aborted`);
      assert.ok(row.events && row.events.length > 0 && row.events.length < served.length + 1, `${s.tag}: partial events kept`);
      assert.ok(served.subarray(0, row.events.length).equals(row.events), `${s.tag}: stored events are a prefix of what upstream sent`);
      assert.equal(q.outcome, 'aborted', `${s.tag}: the forwarder abandoned the upstream request`);
      continue;
    }
    assert.equal(row.client_aborted, false, `${s.tag}: not aborted`);
    assert.equal(q.outcome, 'completed');
    if (s.stream) {
      assert.ok(row.events?.equals(served), `${s.tag}: stored event stream is byte-equal to what upstream served`);
      const message = JSON.parse(row.response.toString()) as { type: string; content: { text: string }[] };
      assert.equal(message.type, 'message', `${s.tag}: the reassembled message`);
      assert.equal(message.content[0]?.text, up.defaultText);
    } else {
      assert.ok(row.response.equals(served), `${s.tag}: stored response body is byte-equal to what upstream served`);
      assert.equal(row.events, null);
    }
    assert.deepEqual(row.usage, usageOfResponse(served, s.stream), `${s.tag}: usage as upstream reported it`);
    assert.ok(row.usage!.input > 0 && row.usage!.output > 0);
  }
  const big = rows.filter((r) => r.request.length >= FIVE_MB);
  assert.equal(big.length, 3, 'three 5 MB request bodies stored whole');

  const p = sensor.publisher.stats;
  const i = ingest.stats();
  t.diagnostic(`publisher: ${p.published} published, ${p.spooled} spooled, dropped ${JSON.stringify(p.dropped)}; ingest: ${i.exchangesInserted} inserted in ${i.batchesFlushed} batches, ${i.bus.chunkSetsCompleted} chunked records reassembled`);
  assert.deepEqual(p.dropped, {});
  assert.equal(p.published, N);
  assert.equal(i.deadLettered, 0);
  assert.ok(i.bus.chunkSetsCompleted >= 3, 'the 5 MB records crossed Kafka in chunks');
  assert.equal(i.bus.offsetGaps, 0, 'nothing lost to broker retention');
});
