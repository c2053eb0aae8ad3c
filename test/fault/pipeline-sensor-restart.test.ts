// A forwarder killed (SIGKILL) with records in its disk spool replays them when it starts
// again on the same spool: nothing lost, nothing twice, sessions in order. The forwarder +
// recorder run in a child process (test/support/pipeline-sensor.ts); Kafka is a private
// librdkafka mock taken down so records pile up in the spool; ingest and ClickHouse (the
// harness's) run in this process.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createLogger } from '@glitch/log';
import { scanFrames } from '@glitch/spool';
import { clickhouse } from '../harness/clickhouse.js';
import { privateKafkaMock } from '../harness/kafka.js';
import { testKey } from '../support/forwarder.js';
import { startMockUpstream } from '../support/mock-upstream.js';
import {
  assertExactlyOnce,
  assertInOrderPerSession,
  messageBody,
  pipelineIngestOptions,
  pipelineTopics,
  postMessage,
  scalar,
  startPipelineIngest,
  storedExchanges,
  tagOf,
  waitFor,
} from '../support/pipeline.js';
import { startSensorChild, type SensorChild } from '../support/pipeline-sensor.js';

const logger = createLogger({ name: 'pipeline-sensor-restart', level: 'error' });

/** Entries fsynced into the spool's segment files (what survives a SIGKILL). */
function entriesOnDisk(dir: string): number {
  let n = 0;
  for (const f of readdirSync(dir)) if (f.endsWith('.seg')) n += scanFrames(readFileSync(join(dir, f))).payloads.length;
  return n;
}

test('forwarder killed with records in its spool replays them on restart: all land once, in order', async (t) => {
  const ch = await clickhouse();
  await ch.reset();
  const mock = await privateKafkaMock();
  t.diagnostic(`broker: private librdkafka mock ${mock.version} at ${mock.bootstrap}; clickhouse: ${ch.description}`);
  const topics = await pipelineTopics((n, p) => mock.createTopic(n, p));
  const up = await startMockUpstream({ keepRequests: 0 });
  const key = testKey('tenant-crash');
  const spoolDir = mkdtempSync(join(tmpdir(), 'glitch-pipe-spool-'));
  const config = { brokers: mock.brokers, topic: topics.exchanges, upstreamUrl: up.url, keys: [key], spoolDir };
  const ingest = await startPipelineIngest(pipelineIngestOptions(mock.brokers, topics, ch.client, logger));
  const sessions = Array.from({ length: 4 }, () => randomUUID());
  const sent = new Map<string, number>(sessions.map((s) => [s, 0]));
  const tags: string[] = [];
  /** `turns` sequential turns per session, sessions in parallel. */
  const talk = (sensor: SensorChild, turns: number) =>
    Promise.all(
      sessions.map(async (session, s) => {
        for (let i = 0; i < turns; i++) {
          const seq = sent.get(session)!;
          const tag = `c${s}-${seq}`;
          const r = await postMessage(sensor.url, key, { session, body: messageBody({ tag, seq, stream: seq % 2 === 0 }) });
          assert.equal(r.status, 200, `${tag}: ${r.body.toString().slice(0, 200)}`);
          sent.set(session, seq + 1);
          tags.push(tag);
        }
      }),
    );

  let first: SensorChild | undefined;
  let second: SensorChild | undefined;
  try {
    first = await startSensorChild(config);
    await talk(first, 2);
    await waitFor(async () => (await scalar(ch.client, 'SELECT count() FROM exchanges')) >= 8, 60_000, 'the first records in ClickHouse');

    await mock.setBrokerDown();
    await talk(first, 10); // answered while Kafka is down: the records go to the spool
    const f = first;
    await waitFor(async () => (await f.stats()).spooled >= 40, 30_000, 'every record of the outage spooled', () => f.output().slice(-2000));
    await waitFor(() => entriesOnDisk(spoolDir) >= 40, 10_000, 'the spooled records fsynced');
    const before = await first.stats();
    t.diagnostic(`before the kill: ${before.published} published, ${before.spooled} spooled (${entriesOnDisk(spoolDir)} entries on disk)`);
    await first.kill();

    await mock.setBrokerUp();
    second = await startSensorChild(config);
    await talk(second, 2); // new records must come after the replayed ones
    const s2 = second;
    // Its own records reach the recorder some milliseconds after their answers (the capture
    // ring is read every 20 ms), so wait for them as well as for the spool.
    await waitFor(async () => {
      const s = await s2.stats();
      return s.mode === 'direct' && s.queued === 0 && s.replayed + s.published >= before.spooled + 8;
    }, 60_000, 'the restarted forwarder to drain its spool and publish its own records', () => s2.output().slice(-2000));
    const after = await second.stats();
    t.diagnostic(`after the restart: ${after.replayed} replayed from the spool, ${after.published} published directly`);
    // Its own 8 records arrived while it was still replaying, so they queued behind the spool.
    assert.ok(after.replayed >= before.spooled, 'the restarted forwarder replayed everything the first one spooled');
    assert.equal(after.replayed + after.published, before.spooled + 8, 'and published its own records once');
    assert.equal(entriesOnDisk(spoolDir), 0, 'the spool is empty');

    const N = tags.length;
    await waitFor(async () => (await scalar(ch.client, 'SELECT count() FROM exchanges FINAL')) >= N, 90_000, `${N} exchanges in ClickHouse`, async () => ({
      stored: await scalar(ch.client, 'SELECT count() FROM exchanges'),
      ingest: ingest.stats(),
    }));
    await waitFor(() => ingest.stats().received >= N, 30_000, 'ingest received every record');
    const rows = await storedExchanges(ch.client);
    assertExactlyOnce(rows.map((r) => ({ id: tagOf(r.request)!.tag })), tags, 'exchanges');
    assertInOrderPerSession(rows.map((r) => ({ session: r.session_id!, seq: tagOf(r.request)!.seq, offset: r.kafka_offset })), sent);
    console.log(`[pipeline-sensor-restart] ${before.spooled} records were in the spool of the killed forwarder; all replayed by its successor`);
  } finally {
    await first?.kill();
    await second?.stop();
    await ingest.stop();
    await up.close();
    await mock.stop();
  }
});
