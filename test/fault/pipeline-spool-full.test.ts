// The record spool fills up while Kafka is down, under the `refuse` policy: the forwarder
// turns new requests away with 503 overloaded_error (nothing reaches upstream, so nothing
// goes unrecorded), says so on its admin /metrics, and admits traffic again once Kafka is
// back and the spool has replayed. Every request the forwarder answered with 200 is in
// ClickHouse exactly once; no record was dropped.
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

const logger = createLogger({ name: 'pipeline-spool-full', level: 'error' });

/** One sample of a Prometheus text exposition, by its full name with labels. */
function sample(metrics: string, name: string): number | undefined {
  const line = metrics.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

const SPOOL_BYTES = 1_000_000;

test('spool full under the refuse policy: 503 overloaded_error, visible in metrics; admitted again after Kafka returns; nothing lost', async (t) => {
  const ch = await clickhouse();
  await ch.reset();
  const mock = await privateKafkaMock();
  const topics = await pipelineTopics((n, p) => mock.createTopic(n, p));
  const up = await startMockUpstream({ keepRequests: 0 });
  up.respond = () => reply.message({ content: [{ type: 'text', text: 'ok' }] });
  const key = testKey('tenant-spool-full');
  const sensor = await startSensor({
    brokers: mock.brokers,
    topic: topics.exchanges,
    upstreamUrl: up.url,
    keys: [key],
    spoolDir: mkdtempSync(join(tmpdir(), 'glitch-spool-full-')),
    threads: 2,
    logger,
    // ~80 records of ~12 KB fit. From half full every capture goes to the recorder at once;
    // the other half must hold what is still on its way then (the capture ring between two
    // polls, the publisher's queue: a dozen records here; with ~25 it was close).
    spool: { maxBytes: SPOOL_BYTES, whenFull: 'refuse', segmentBytes: 64 * 1024 },
    // Records go to the spool once ~4 wait in memory, not only after Kafka's timeouts ran out.
    publisher: { maxQueuedBytes: 50_000 },
  });
  const ingest = await startPipelineIngest(pipelineIngestOptions(mock.brokers, topics, ch.client, logger));
  const metrics = async () => (await fetch(`${sensor.forwarder.adminUrl}/metrics`)).text();
  const session = randomUUID();
  const answered: string[] = [];
  let seq = 0;
  const turn = async () => {
    const tag = `full-${seq}`;
    const r = await postMessage(sensor.forwarder.url, key, { session, body: messageBody({ tag, seq: seq++, stream: false, padBytes: 10_000 }) });
    if (r.status === 200) answered.push(tag);
    return r;
  };
  try {
    for (let i = 0; i < 5; i++) assert.equal((await turn()).status, 200);
    await waitFor(() => sensor.publisher.stats.published + sensor.publisher.stats.replayed >= 5, 30_000, 'records reaching Kafka before the outage', () => sensor.publisher.stats);

    await mock.setBrokerDown();
    // Keep talking until the spool is nearly full and the forwarder refuses.
    let refused: Awaited<ReturnType<typeof turn>> | undefined;
    for (let i = 0; i < 200 && !refused; i++) {
      const r = await turn();
      if (r.status === 503) refused = r;
      else assert.equal(r.status, 200, `turn ${i} while Kafka is down: ${r.status} ${r.body.toString()}`);
    }
    assert.ok(refused, `the forwarder started refusing before 200 turns: ${JSON.stringify(sensor.publisher.stats)}`);
    const error = JSON.parse(refused.body.toString('utf8')) as { type: string; error: { type: string; message: string } };
    assert.equal(error.type, 'error');
    assert.equal(error.error.type, 'overloaded_error');
    assert.ok(refused.headers['retry-after'], 'a 503 tells the client when to retry');
    const upstreamBefore = up.requests.length;
    assert.equal((await turn()).status, 503, 'still refusing');
    assert.equal(up.requests.length, upstreamBefore, 'a refused request never reaches upstream');
    const spooledWhileRefusing = sensor.publisher.stats.spooled;
    t.diagnostic(`refusing after ${answered.length} answered turns; ${spooledWhileRefusing} records in the spool (${sensor.spool.stats.bytes} bytes)`);

    const during = await metrics();
    assert.equal(sample(during, 'glitch_forwarder_admission_refusing'), 1);
    assert.equal(sample(during, 'glitch_recorder_spooling'), 1);
    assert.equal(sample(during, 'glitch_recorder_spool_pressed'), 1, 'captures are handed over without delay while the spool is short of room');
    assert.ok((sample(during, 'glitch_recorder_records_spooled_total') ?? 0) >= spooledWhileRefusing, 'spooled records counted');
    assert.ok((sample(during, 'glitch_recorder_spool_bytes') ?? 0) >= 0.9 * SPOOL_BYTES, 'spool bytes reported');
    assert.equal(sample(during, 'glitch_recorder_records_dropped_total{reason="none"}'), 0);
    assert.ok((sample(during, 'glitch_forwarder_errors_total{code="record_spool_full"}') ?? 0) >= 2, during.split('\n').filter((l) => l.includes('errors_total')).join('\n'));

    await mock.setBrokerUp();
    await waitFor(async () => (await turn()).status === 200, 60_000, 'the forwarder admitting requests again after Kafka returned', () => sensor.publisher.stats);
    // Admission resumes under 75 % of the spool, while replay still runs and new records still
    // queue behind it (order per session), so a quick run of turns may fill it to 90 % again
    // and be refused: correct, not a failure. Once the spool has drained, nothing refuses.
    await waitFor(() => sensor.publisher.stats.mode === 'direct', 60_000, 'the spool drained after admission resumed', () => sensor.publisher.stats);
    for (let i = 0; i < 5; i++) assert.equal((await turn()).status, 200, `turn ${i} after the spool drained`);
    const after = await metrics();
    assert.equal(sample(after, 'glitch_forwarder_admission_refusing'), 0);

    const N = answered.length;
    await waitFor(() => sensor.publisher.stats.mode === 'direct' && sensor.publisher.stats.queued === 0, 60_000, 'every record published', () => sensor.publisher.stats);
    await waitFor(async () => (await scalar(ch.client, 'SELECT count() FROM exchanges FINAL')) >= N, 90_000, `${N} exchanges in ClickHouse`, () => ingest.stats());
    const rows = await storedExchanges(ch.client);
    assertExactlyOnce(rows.map((r) => ({ id: tagOf(r.request)!.tag })), answered, 'answered exchanges');
    const p = sensor.publisher.stats;
    assert.deepEqual(p.dropped, {}, 'no record was dropped');
    assert.equal(p.replayed, p.spooled, `every spooled record was replayed: ${JSON.stringify(p)}`);
    assert.equal(p.published + p.replayed, p.captured, 'every captured record published exactly once');
    t.diagnostic(`${N} answered exchanges stored once; ${p.spooled} went through the spool`);
  } finally {
    await sensor.stop();
    await ingest.stop();
    await up.close();
    await mock.stop();
  }
});
