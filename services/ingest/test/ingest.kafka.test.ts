// Ingest end to end through Kafka (the harness broker: testcontainers Kafka where Docker
// answers, otherwise librdkafka's mock cluster) into the harness ClickHouse (chDB here).
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { Kafka, logLevel } from 'kafkajs';
import { createKafkaBus, partitionFor, type Bus } from '@glitch/bus';
import { startIngest, type Ingest, type IngestOptions } from '@glitch/ingest';
import { createLogger } from '@glitch/log';
import { DeadLetter, ExchangeRecord, Finding, decode, encode } from '@glitch/records';
import { clickhouse, type ClickHouseEnv } from '../../../test/harness/clickhouse.js';
import { uniqueName } from '../../../test/harness/env.js';
import { kafka, privateKafkaMock, type KafkaEnv } from '../../../test/harness/kafka.js';
import { bigBody, makeExchange, makeFinding } from '../../../test/fixtures/exchange-records.js';
import { faultyClickHouse, hangNextInsert } from '../../../test/support/faulty-clickhouse.js';
import { assertStoredExactlyOnce, scalar, waitFor } from './helpers.js';

const logger = createLogger({ name: 'ingest-test', level: 'error' });
const CHUNK_BYTES = 900 * 1024;
let ch: ClickHouseEnv;
let broker: KafkaEnv;

before(async () => {
  ch = await clickhouse();
  broker = await kafka();
  console.log(`[ingest] clickhouse: ${ch.kind} — ${ch.description}`);
  console.log(`[ingest] kafka: ${broker.kind} — ${broker.description}`);
});

interface Topics {
  exchanges: string;
  findings: string;
  deadLetter: string;
}

async function freshTopics(createTopic: (name: string, partitions: number) => Promise<void>, partitions = 3): Promise<Topics> {
  const topics = { exchanges: uniqueName('ex'), findings: uniqueName('fi'), deadLetter: uniqueName('dl') };
  await createTopic(topics.exchanges, partitions);
  await createTopic(topics.findings, 1);
  await createTopic(topics.deadLetter, 1);
  return topics;
}

function publisher(brokers: string[], patient = false): Bus {
  return createKafkaBus({
    brokers,
    maxMessageBytes: CHUNK_BYTES,
    logger,
    ...(patient ? { producerRetry: { retries: 40, initialRetryTime: 100, maxRetryTime: 1_000 }, connectionTimeoutMs: 1_000, requestTimeoutMs: 5_000 } : {}),
  });
}

async function publishAll(bus: Bus, topic: string, records: readonly ExchangeRecord[]): Promise<void> {
  const outcomes = await Promise.all(records.map((r) => bus.publishRecord(topic, r.sessionId ?? r.id, Buffer.from(encode(ExchangeRecord, r)), r.id)));
  for (const o of outcomes) assert.equal(o.kind, 'ok', JSON.stringify(o));
}

function ingestOptions(brokers: string[], topics: Topics, groupId: string, extra: Partial<IngestOptions> = {}): IngestOptions {
  return {
    // A short session: the librdkafka mock holds every rejoin for a whole session timeout.
    kafka: { brokers, consumer: { sessionTimeoutMs: 6_000, heartbeatIntervalMs: 500, maxWaitTimeMs: 100 } },
    clickhouse: { client: ch.client },
    groupId,
    batchRows: 25,
    batchMs: 150,
    topics,
    backoff: { initialMs: 100, maxMs: 800 },
    logger,
    ...extra,
  };
}

async function committedOffsets(brokers: string[], groupId: string, topic: string): Promise<Record<number, string>> {
  const admin = new Kafka({ clientId: uniqueName('check'), brokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    const [t] = await admin.fetchOffsets({ groupId, topics: [topic] });
    return Object.fromEntries((t?.partitions ?? []).map((p) => [p.partition, p.offset]));
  } finally {
    await admin.disconnect();
  }
}

test('records (5 MB bodies chunked at 900 KB among them) and findings land exactly once, byte-equal', async (t) => {
  t.diagnostic(`kafka: ${broker.description}; clickhouse: ${ch.description}`);
  // The big bodies are compressible (as real ones mostly are): chunking works on raw bytes,
  // but the librdkafka mock keeps only ~5 MB of compressed log per partition, so 20 MB of
  // random data published at once would be deleted before ingest could read it.

  await ch.reset();
  const topics = await freshTopics(broker.createTopic);
  const sessions = ['s-1', 's-2', 's-3', 's-4'].map((s) => `00000000-0000-4000-8000-0000000000${s.slice(2).padStart(2, '0')}`);
  const records = Array.from({ length: 36 }, (_, i) => makeExchange({ sessionId: sessions[i % 4]!, tenantId: i % 3 ? 'acme' : 'globex' }));
  records.push(
    makeExchange({ sessionId: sessions[0]!, requestBody: bigBody(5 * 1024 * 1024, 'text') }),
    makeExchange({ sessionId: sessions[1]!, requestBody: bigBody(5 * 1024 * 1024, 'text') }),
    makeExchange({ sessionId: null, responseBody: bigBody(5 * 1024 * 1024, 'binary') }),
    makeExchange({ sessionId: sessions[2]!, responseBody: bigBody(5 * 1024 * 1024, 'binary'), events: bigBody(1024 * 1024, 'text') }),
    makeExchange({ findings: [{ ruleId: 'secret.aws', severity: 'critical', action: 'block', message: 'AWS key', location: 'request.messages[0]' }] }),
    makeExchange({ findings: [{ ruleId: 'inj.unicode_tags', severity: 'high', action: 'log', message: 'tag chars', location: 'request.messages[2]' }] }),
  );
  const findings = records.slice(0, 5).map((r) => makeFinding(r));
  const pub = publisher(broker.brokers);
  const groupId = uniqueName('ingest');
  const ingest = await startIngest(ingestOptions(broker.brokers, topics, groupId));
  try {
    await publishAll(pub, topics.exchanges, records);
    for (const f of findings) assert.equal((await pub.publishRecord(topics.findings, f.sessionId, Buffer.from(encode(Finding, f)))).kind, 'ok');
    await waitFor(
      () => ingest.stats().exchangesInserted >= records.length && ingest.stats().findingsInserted >= findings.length,
      90_000,
      'every record and finding inserted',
      () => ingest.stats(),
    );
    await assertStoredExactlyOnce(ch.client, records);
    assert.equal(await scalar(ch.client, 'SELECT count() FROM findings FINAL'), findings.length);
    assert.equal(await scalar(ch.client, 'SELECT count() FROM security_events FINAL'), 2);
    assert.equal(await scalar(ch.client, "SELECT count() FROM security_events FINAL WHERE rule_id = 'secret.aws' AND action = 'block'"), 1);
    // Provenance: each row remembers the partition its key maps to.
    const rs = await ch.client.query({ query: 'SELECT toString(id) AS id, kafka_topic, kafka_partition FROM exchanges', format: 'JSONEachRow' });
    for (const row of await rs.json<{ id: string; kafka_topic: string; kafka_partition: number }>()) {
      const r = records.find((x) => x.id === row.id)!;
      assert.equal(row.kafka_topic, topics.exchanges);
      assert.equal(row.kafka_partition, partitionFor(Buffer.from(r.sessionId ?? r.id), 3, 0));
    }
    const stats = ingest.stats();
    assert.equal(stats.bus.chunkSetsCompleted, 4, 'the four 5 MB records arrived chunked');
    assert.equal(stats.deadLettered, 0);
    assert.equal(stats.bus.offsetGaps, 0, 'nothing lost to broker retention');
    await waitFor(async () => {
      const committed = await committedOffsets(broker.brokers, groupId, topics.exchanges);
      return Object.values(committed).reduce((n, o) => n + Number(o), 0) >= records.length + 4 * 6;
    }, 20_000, 'offsets committed after the inserts (at least one offset per chunk)');
  } finally {
    await ingest.stop();
    await pub.close();
  }
});

test('poison messages go to the dead-letter topic with a reason; the consumer keeps going', async (t) => {
  t.diagnostic(`kafka: ${broker.description}`);
  await ch.reset();
  const topics = await freshTopics(broker.createTopic, 1);
  const pub = publisher(broker.brokers);
  const good = [makeExchange(), makeExchange(), makeExchange()];
  const wrongVersion = { ...makeExchange(), schemaVersion: 2 };
  const { tenantId: _dropped, ...noTenant } = makeExchange();
  const ingest = await startIngest(ingestOptions(broker.brokers, topics, uniqueName('ingest')));
  const letters: string[] = [];
  const dlqReader = publisher(broker.brokers);
  const sub = await dlqReader.subscribe({
    groupId: uniqueName('dlq-reader'),
    topics: [topics.deadLetter],
    handler: async (batch) => {
      for (const m of batch.messages) letters.push(m.value.toString());
      return batch.messages.map(() => ({ kind: 'ok' }) as const);
    },
  });
  try {
    const raw = (s: string) => pub.publish(topics.exchanges, 'k', Buffer.from(s));
    await raw(encode(ExchangeRecord, good[0]!));
    await raw('{"schemaVersion":1,"kind":"exchange",'); // cut-off JSON
    await raw(JSON.stringify(wrongVersion));
    await raw(encode(ExchangeRecord, good[1]!));
    await raw(JSON.stringify(noTenant));
    await pub.publish(topics.exchanges, 'k', Buffer.from('garbage'), { 'glitch-chunk': '0/2' }); // a broken chunk
    await raw(encode(ExchangeRecord, good[2]!));
    await waitFor(() => ingest.stats().exchangesInserted >= 3 && letters.length >= 4, 60_000, 'three records stored and four dead letters');
    await assertStoredExactlyOnce(ch.client, good);

    const decoded = letters.map((l) => {
      const d = decode(DeadLetter, l);
      assert.ok(d.ok, d.ok ? '' : d.reason);
      return d.value;
    });
    assert.deepEqual(decoded.map((d) => [d.sourceTopic, d.partition, d.offset]), [1, 2, 4, 5].map((o) => [topics.exchanges, 0, String(o)]));
    assert.match(decoded[0]!.reason, /^not an ExchangeRecord: not JSON/);
    assert.match(decoded[1]!.reason, /schemaVersion: unsupported schemaVersion \(this build reads 1\)/);
    assert.match(decoded[2]!.reason, /tenantId/);
    assert.match(decoded[3]!.reason, /^not an ExchangeRecord: not JSON/);
    assert.equal(Buffer.from(decoded[0]!.payload, 'base64').toString(), '{"schemaVersion":1,"kind":"exchange",', 'the original bytes are kept');
    assert.equal(ingest.stats().deadLettered, 4);
    await waitFor(() => ingest.stats().bus.committed[`${topics.exchanges}/0`] === '7', 10_000, 'commit past every message');
  } finally {
    await sub.stop();
    await dlqReader.close();
    await ingest.stop();
    await pub.close();
  }
});

test('ingest killed after ClickHouse acked but before committing, then restarted: no loss, no duplicates', async (t) => {
  t.diagnostic(`kafka: ${broker.description}`);
  await ch.reset();
  const topics = await freshTopics(broker.createTopic, 2);
  const pub = publisher(broker.brokers);
  const groupId = uniqueName('ingest');
  const faulty = faultyClickHouse(ch.client);
  const batches = [0, 1, 2].map(() => Array.from({ length: 10 }, (_, i) => makeExchange({ sessionId: `00000000-0000-4000-8000-00000000000${i % 4}` })));
  const first = await startIngest(ingestOptions(broker.brokers, topics, groupId, { clickhouse: { client: faulty.client }, batchRows: 1_000, batchMs: 300 }));
  let second: Ingest | undefined;
  try {
    await publishAll(pub, topics.exchanges, batches[0]!);
    await waitFor(() => first.stats().exchangesInserted >= 10, 60_000, 'the first batch inserted');
    await waitFor(async () => Object.values(await committedOffsets(broker.brokers, groupId, topics.exchanges)).reduce((n, o) => n + Math.max(0, Number(o)), 0) === 10, 20_000, 'the first batch committed');

    hangNextInsert(faulty.faults, 'exchanges'); // the next insert lands, then the process "dies"
    await publishAll(pub, topics.exchanges, batches[1]!);
    await waitFor(() => faulty.faults.hungInserts === 1, 60_000, 'the second batch to reach ClickHouse');
    await waitFor(async () => (await scalar(ch.client, 'SELECT count() FROM exchanges')) === 20, 10_000, 'ClickHouse holding both batches');
    await first.abort();
    const committed = await committedOffsets(broker.brokers, groupId, topics.exchanges);
    assert.equal(Object.values(committed).reduce((n, o) => n + Math.max(0, Number(o)), 0), 10, `only the first batch committed: ${JSON.stringify(committed)}`);

    second = await startIngest(ingestOptions(broker.brokers, topics, groupId));
    await publishAll(pub, topics.exchanges, batches[2]!);
    await waitFor(() => second!.stats().exchangesInserted >= 10 && second!.stats().skippedReplayed >= 10, 60_000, 'the replayed batch skipped and the third inserted');
    await assertStoredExactlyOnce(ch.client, batches.flat());
    assert.equal(second.stats().skippedReplayed, 10, 'exactly the uncommitted batch was redelivered and skipped');
  } finally {
    await first.abort();
    await second?.stop();
    await pub.close();
  }
});

test('ClickHouse unavailable: ingest pauses, backs off, commits nothing, then stores everything once', async (t) => {
  // chDB cannot be stopped like a server: the client is wrapped so every call fails while `down`.
  t.diagnostic(`kafka: ${broker.description}; ClickHouse outage injected by a test-only client wrapper`);
  await ch.reset();
  const topics = await freshTopics(broker.createTopic, 2);
  const pub = publisher(broker.brokers);
  const groupId = uniqueName('ingest');
  const faulty = faultyClickHouse(ch.client);
  const ingest = await startIngest(ingestOptions(broker.brokers, topics, groupId, { clickhouse: { client: faulty.client }, backoff: { initialMs: 100, maxMs: 600 } }));
  try {
    faulty.faults.down = true;
    const records = Array.from({ length: 15 }, (_, i) => makeExchange({ sessionId: `00000000-0000-4000-8000-00000000000${i % 3}` }));
    await publishAll(pub, topics.exchanges, records);
    await waitFor(() => ingest.stats().clickhouseFailures >= 5, 60_000, 'repeated ClickHouse failures');
    const during = ingest.stats();
    assert.equal(during.paused, true);
    assert.ok(during.pausedSince !== null);
    assert.match(during.lastError ?? '', /ClickHouse unavailable \(injected by the test\)/);
    assert.equal(during.exchangesInserted, 0);
    assert.equal(during.bus.commits, 0, 'nothing committed while ClickHouse is down');
    assert.deepEqual(await committedOffsets(broker.brokers, groupId, topics.exchanges), { 0: '-1', 1: '-1' });
    const waits = during.recentBackoffsMs;
    assert.ok(waits.length >= 4 && Math.max(...waits) > 2 * Math.min(...waits), `back-off grows: ${waits.join(', ')}`);
    assert.ok(Math.max(...waits) <= 600 * 1.2, `back-off capped: ${waits.join(', ')}`);

    faulty.faults.down = false;
    await waitFor(() => ingest.stats().exchangesInserted >= records.length, 30_000, 'everything stored after ClickHouse returns');
    assert.equal(ingest.stats().paused, false);
    await assertStoredExactlyOnce(ch.client, records);
    await waitFor(async () => Object.values(await committedOffsets(broker.brokers, groupId, topics.exchanges)).reduce((n, o) => n + Math.max(0, Number(o)), 0) === 15, 20_000, 'offsets committed after the insert');
  } finally {
    faulty.faults.down = false;
    await ingest.stop();
    await pub.close();
  }
});

test('Kafka broker down and up mid-stream (private mock): everything lands once', async (t) => {
  // A private mock: taking the shared broker down would break other test files.
  const mock = await privateKafkaMock();
  t.diagnostic(`broker: private librdkafka mock ${mock.version} at ${mock.bootstrap}`);
  await ch.reset();
  const topics = await freshTopics((n, p) => mock.createTopic(n, p), 2);
  const pub = publisher(mock.brokers, true);
  const ingest = await startIngest(ingestOptions(mock.brokers, topics, uniqueName('ingest')));
  try {
    const before = Array.from({ length: 10 }, () => makeExchange({ sessionId: null }));
    const during = Array.from({ length: 10 }, () => makeExchange({ sessionId: null }));
    during.push(makeExchange({ sessionId: null, requestBody: bigBody(3 * 1024 * 1024, 'text') })); // chunked, published while down
    await publishAll(pub, topics.exchanges, before);
    await waitFor(() => ingest.stats().exchangesInserted >= 10, 60_000, 'records from before the outage');

    await mock.setBrokerDown();
    // Published while the broker is down: the patient producer waits it out.
    const sending = publishAll(pub, topics.exchanges, during);
    await new Promise((r) => setTimeout(r, 3_000));
    assert.equal(ingest.stats().exchangesInserted, 10, 'nothing new while the broker is down');
    await mock.setBrokerUp();
    await sending;

    await waitFor(() => ingest.stats().exchangesInserted >= 21, 90_000, 'records published during the outage');
    await assertStoredExactlyOnce(ch.client, [...before, ...during]);
  } finally {
    await ingest.stop();
    await pub.close();
    await mock.stop();
  }
});
