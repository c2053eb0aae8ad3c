// Kafka stops mid-load and comes back, through the whole pipeline: sessions keep talking to
// the forwarder (which never waits for Kafka), the recorder spools while the broker is down
// and replays in order when it returns; every record lands in ClickHouse exactly once and
// each session's records are in Kafka (and so ClickHouse) in the order the session sent them.
// Broker: a private librdkafka mock (taking the run's shared broker down would break other
// files); it keeps its data across down/up.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createLogger } from '@glitch/log';
import { clickhouse } from '../harness/clickhouse.js';
import { privateKafkaMock } from '../harness/kafka.js';
import { testKey } from '../support/forwarder.js';
import { reply, startMockUpstream } from '../support/mock-upstream.js';
import {
  assertExactlyOnce,
  assertInOrderPerSession,
  messageBody,
  pipelineIngestOptions,
  pipelineTopics,
  postMessage,
  scalar,
  startPipelineIngest,
  startSensor,
  storedExchanges,
  tagOf,
  waitFor,
} from '../support/pipeline.js';

const logger = createLogger({ name: 'pipeline-kafka-restart', level: 'error' });

test('Kafka down mid-load and back: every record lands once, in order per session; some went through the spool', async (t) => {
  const ch = await clickhouse();
  await ch.reset();
  const mock = await privateKafkaMock();
  t.diagnostic(`broker: private librdkafka mock ${mock.version} at ${mock.bootstrap}; clickhouse: ${ch.description}`);
  const topics = await pipelineTopics((n, p) => mock.createTopic(n, p));
  const up = await startMockUpstream({ keepRequests: 0 });
  // A little upstream latency, so the load is a steady stream of turns rather than a flood.
  up.respond = (req) => {
    const stream = /"stream":true/.test(req.body.toString('utf8', Math.max(0, req.body.length - 64)));
    const spec = { content: [{ type: 'text' as const, text: 'ok' }] };
    return stream ? reply.stream(spec, { firstByteDelayMs: 15 }) : reply.message(spec, { firstByteDelayMs: 15 });
  };
  const key = testKey('tenant-outage');
  // One relay thread: a session's turns are captured in the order they completed (with several
  // threads a keep-alive session stays on one thread, but this test's clients do not keep alive).
  const sensor = await startSensor({ brokers: mock.brokers, topic: topics.exchanges, upstreamUrl: up.url, keys: [key], spoolDir: mkdtempSync(join(tmpdir(), 'glitch-pipe-spool-')), threads: 1, logger });
  const ingest = await startPipelineIngest(pipelineIngestOptions(mock.brokers, topics, ch.client, logger));

  const sessions = Array.from({ length: 6 }, () => randomUUID());
  const sent = new Map<string, number>(sessions.map((s) => [s, 0]));
  const tags: string[] = [];
  let stop = false;
  let failures = 0;
  const total = () => tags.length;
  const senders = sessions.map(async (session, s) => {
    while (!stop) {
      const seq = sent.get(session)!;
      const tag = `k${s}-${seq}`;
      const r = await postMessage(sensor.forwarder.url, key, { session, body: messageBody({ tag, seq, stream: seq % 4 !== 3 }) });
      if (r.status !== 200) failures++;
      sent.set(session, seq + 1);
      tags.push(tag);
    }
  });
  try {
    await waitFor(() => total() >= 60, 30_000, '60 exchanges before the outage');
    await waitFor(() => sensor.publisher.stats.published >= 30, 30_000, 'records reaching Kafka before the outage', () => sensor.publisher.stats);

    await mock.setBrokerDown();
    const downAt = Date.now();
    const atDown = total();
    t.diagnostic(`broker down after ${atDown} exchanges`);
    // The forwarder keeps answering; the recorder notices the outage and spools.
    // Down long enough that the replay is refused a few times too (it retries every 250 ms).
    await waitFor(() => sensor.publisher.stats.spooled >= 150 && sensor.publisher.stats.busRefusals >= 4, 60_000, 'records spooled while Kafka is down', () => sensor.publisher.stats);
    const duringOutage = total() - atDown;

    await mock.setBrokerUp();
    const atUp = total();
    t.diagnostic(`broker up after ${atUp} exchanges (${duringOutage} sent during the ${Date.now() - downAt} ms it was down)`);
    // Keep the load on while the spool replays: new records must queue behind it.
    await waitFor(() => sensor.publisher.stats.replayed > 0, 60_000, 'the spool replaying', () => sensor.publisher.stats);
    await waitFor(() => total() >= atUp + 60, 30_000, '60 more exchanges after the broker returned');
    stop = true;
    await Promise.all(senders);
    assert.equal(failures, 0, 'the forwarder answered every request while Kafka was down');

    const N = total();
    await waitFor(() => sensor.publisher.stats.mode === 'direct' && sensor.publisher.stats.queued === 0, 60_000, 'the spool drained', () => sensor.publisher.stats);
    await waitFor(async () => (await scalar(ch.client, 'SELECT count() FROM exchanges FINAL')) >= N, 90_000, `${N} exchanges in ClickHouse`, async () => ({
      stored: await scalar(ch.client, 'SELECT count() FROM exchanges'),
      publisher: sensor.publisher.stats,
      ingest: ingest.stats(),
    }));
    await waitFor(() => ingest.stats().received >= N, 30_000, 'ingest received every record');

    const rows = await storedExchanges(ch.client);
    assertExactlyOnce(rows.map((r) => ({ id: tagOf(r.request)!.tag })), tags, 'exchanges');
    assertInOrderPerSession(
      rows.map((r) => ({ session: r.session_id!, seq: tagOf(r.request)!.seq, offset: r.kafka_offset })),
      sent,
    );
    for (const s of sessions) assert.equal(new Set(rows.filter((r) => r.session_id === s).map((r) => r.kafka_partition)).size, 1, 'a session stays on one partition');

    const p = sensor.publisher.stats;
    t.diagnostic(`${N} exchanges: ${p.published} published from memory, ${p.spooled} went through the spool (${p.replayed} replayed); spooling episodes ${JSON.stringify(p.spoolingEpisodes)}; ingest retried ${ingest.stats().bus.retried} batches`);
    console.log(`[pipeline-kafka-restart] ${p.spooled} of ${N} records went through the spool`);
    assert.ok(p.spooled >= 150);
    assert.equal(p.replayed, p.spooled, `every spooled record was replayed: ${JSON.stringify(p)}`);
    assert.equal(p.published + p.replayed, N);
    assert.deepEqual(p.dropped, {});
    assert.equal(sensor.spool.stats.entries, 0);
    assert.equal(ingest.stats().bus.offsetGaps, 0);
  } finally {
    stop = true;
    await Promise.allSettled(senders);
    await sensor.stop();
    await ingest.stop();
    await up.close();
    await mock.stop();
  }
});
