// Through the forwarder end to end, the ingest side fails: the ingest process is SIGKILLed
// mid-batch (ClickHouse has the batch, its offsets are not committed) and restarted on the
// same data; then ClickHouse becomes unavailable and comes back. No exchange is lost or
// stored twice, and sessions stay in order. services/ingest/test proves the same for ingest
// alone with an in-process "crash"; here ingest is a real process that dies (its own chDB
// data dir, test/support/pipeline-ingest.ts), fed by the forwarder through the harness Kafka.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createLogger } from '@glitch/log';
import { uniqueName } from '../harness/env.js';
import { kafka } from '../harness/kafka.js';
import { testKey } from '../support/forwarder.js';
import { startMockUpstream } from '../support/mock-upstream.js';
import { assertExactlyOnce, assertInOrderPerSession, messageBody, pipelineTopics, postMessage, startSensor, waitFor } from '../support/pipeline.js';
import { startIngestChild, type IngestChild } from '../support/pipeline-ingest.js';

const logger = createLogger({ name: 'pipeline-ingest-crash', level: 'error' });

interface Row {
  id: string;
  session_id: string;
  tag: string;
  seq: string;
  kafka_offset: string;
}

async function stored(ingest: IngestChild): Promise<{ id: string; session: string; seq: number; offset: number }[]> {
  const rows = await ingest.query<Row>(
    `SELECT toString(id) AS id, session_id, extract(request_body, 'tag=([\\\\w.-]+) seq') AS tag, extract(request_body, 'seq=(\\\\d+)') AS seq, kafka_offset FROM exchanges`,
  );
  return rows.map((r) => ({ id: r.tag, session: r.session_id, seq: Number(r.seq), offset: Number(r.kafka_offset) }));
}

test('ingest SIGKILLed mid-batch and restarted, then ClickHouse down and back: every exchange stored once, in order', async (t) => {
  const broker = await kafka();
  const topics = await pipelineTopics(broker.createTopic);
  const up = await startMockUpstream({ keepRequests: 0 });
  const key = testKey('tenant-ingest-crash');
  const sensor = await startSensor({ brokers: broker.brokers, topic: topics.exchanges, upstreamUrl: up.url, keys: [key], spoolDir: mkdtempSync(join(tmpdir(), 'glitch-pipe-spool-')), threads: 1, logger });
  const config = { brokers: broker.brokers, topics, groupId: uniqueName('ingest-crash'), chdbPath: mkdtempSync(join(tmpdir(), 'glitch-ingest-chdb-')), batchRows: 10, batchMs: 100 };
  t.diagnostic(`kafka: ${broker.description}; ingest: child processes on chDB at ${config.chdbPath}`);

  const sessions = Array.from({ length: 3 }, () => randomUUID());
  const sent = new Map<string, number>(sessions.map((s) => [s, 0]));
  const tags: string[] = [];
  const talk = (turns: number) =>
    Promise.all(
      sessions.map(async (session, s) => {
        for (let i = 0; i < turns; i++) {
          const seq = sent.get(session)!;
          const tag = `i${s}-${seq}`;
          const r = await postMessage(sensor.forwarder.url, key, { session, body: messageBody({ tag, seq, stream: seq % 3 !== 0 }) });
          assert.equal(r.status, 200);
          sent.set(session, seq + 1);
          tags.push(tag);
        }
      }),
    );

  let first: IngestChild | undefined;
  let second: IngestChild | undefined;
  try {
    // 1. The second insert into exchanges lands in ClickHouse and never answers; then SIGKILL.
    first = await startIngestChild({ ...config, hangAfterInsert: 2 });
    await talk(10);
    const f = first;
    await waitFor(async () => (await f.stats()).fault.hungInserts === 1, 60_000, 'a batch inserted but not acknowledged', async () => (await f.stats()).stats);
    await talk(5); // more records while ingest is stuck; they wait in Kafka
    const landed = await first.count('SELECT count() FROM exchanges');
    const { stats: s1 } = await first.stats();
    t.diagnostic(`killing ingest: ${landed} rows in ClickHouse, ${s1.bus.commits} commits, ${s1.exchangesInserted} inserts acknowledged`);
    assert.ok(landed > s1.exchangesInserted, 'ClickHouse holds a batch ingest never saw acknowledged');
    await first.kill();

    second = await startIngestChild(config);
    const s = second;
    await waitFor(async () => (await s.count('SELECT count() FROM exchanges FINAL')) >= tags.length, 90_000, `${tags.length} exchanges after the restart`, async () => (await s.stats()).stats);
    await waitFor(async () => (await s.stats()).stats.received >= tags.length - landed, 30_000, 'the restarted ingest to read everything uncommitted');
    assertExactlyOnce(await stored(second), tags, 'after the ingest crash');
    const { stats: s2 } = await second.stats();
    t.diagnostic(`restarted ingest: ${s2.skippedReplayed} redelivered records skipped (already in ClickHouse), ${s2.exchangesInserted} inserted`);
    assert.ok(s2.skippedReplayed > 0, 'the batch that landed before the kill was redelivered and skipped');

    // 2. ClickHouse unavailable: ingest holds consumption, commits nothing, then catches up.
    await second.setClickHouseDown(true);
    await talk(5);
    await waitFor(async () => {
      const x = await s.stats();
      return x.fault.failedCalls >= 3 && x.stats.paused;
    }, 60_000, 'ingest to pause on ClickHouse failures');
    const commitsWhileDown = (await second.stats()).stats.bus.commits;
    await waitFor(async () => (await s.stats()).fault.failedCalls >= 6, 30_000, 'more failed attempts (back-off)');
    assert.equal((await second.stats()).stats.bus.commits, commitsWhileDown, 'nothing committed while ClickHouse is down');
    await second.setClickHouseDown(false);
    await waitFor(async () => (await s.count('SELECT count() FROM exchanges FINAL')) >= tags.length, 60_000, `${tags.length} exchanges after ClickHouse returned`);
    await waitFor(async () => !(await s.stats()).stats.paused, 10_000, 'ingest resumed');
    const rows = await stored(second);
    assertExactlyOnce(rows, tags, 'after the ClickHouse outage');
    assertInOrderPerSession(rows, sent);
    const p = sensor.publisher.stats;
    assert.equal(p.published, tags.length, 'the forwarder side never noticed: every record published directly');
    assert.equal(p.spooled, 0);
  } finally {
    await first?.kill();
    await second?.stop();
    await sensor.stop();
    await up.close();
  }
});
