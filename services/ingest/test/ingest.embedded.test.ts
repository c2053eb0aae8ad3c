// Ingest in embedded mode (`glitch up`): the in-memory bus and the harness ClickHouse (chDB
// here). Same guarantees as through Kafka; plus what stop() promises.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { createMemoryBus } from '@glitch/bus';
import { startIngest } from '@glitch/ingest';
import { createLogger } from '@glitch/log';
import { ExchangeRecord, Finding, TOPICS, encode } from '@glitch/records';
import { clickhouse, type ClickHouseEnv } from '../../../test/harness/clickhouse.js';
import { uniqueName } from '../../../test/harness/env.js';
import { bigBody, makeExchange, makeFinding } from '../../../test/fixtures/exchange-records.js';
import { faultyClickHouse } from '../../../test/support/faulty-clickhouse.js';
import { assertStoredExactlyOnce, scalar, waitFor } from './helpers.js';

const logger = createLogger({ name: 'ingest-test', level: 'error' });
let ch: ClickHouseEnv;

before(async () => {
  ch = await clickhouse();
  console.log(`[ingest] clickhouse: ${ch.kind} — ${ch.description}`);
});

test('in-memory bus: records (one chunked), findings and a poison message, with the default topics', async () => {
  await ch.reset();
  const bus = createMemoryBus({ defaultPartitions: 2, logger });
  const ingest = await startIngest({ bus, clickhouse: { client: ch.client }, groupId: uniqueName('ingest'), batchRows: 10, batchMs: 100, logger });
  const letters: string[] = [];
  const dlq = await bus.subscribe({
    groupId: 'dlq-reader',
    topics: [TOPICS.deadLetter],
    handler: async (b) => {
      for (const m of b.messages) letters.push(m.value.toString());
      return b.messages.map(() => ({ kind: 'ok' }) as const);
    },
  });
  try {
    const records = [
      ...Array.from({ length: 12 }, () => makeExchange()),
      makeExchange({ requestBody: bigBody(2 * 1024 * 1024, 'random') }),
      makeExchange({ bodyTruncated: true, bodyWireBytes: 256 * 1024 * 1024 }),
    ];
    for (const r of records) assert.equal((await bus.publishRecord(TOPICS.exchanges, r.sessionId, Buffer.from(encode(ExchangeRecord, r)))).kind, 'ok');
    // A record from a producer that predates the truncation fields: stored as not truncated, size unknown.
    const legacy = makeExchange();
    const { bodyTruncated: _t, bodyWireBytes: _w, ...legacyResponse } = legacy.response;
    await bus.publishRecord(TOPICS.exchanges, legacy.sessionId, Buffer.from(JSON.stringify({ ...legacy, response: legacyResponse })));
    records.push({ ...legacy, response: { ...legacyResponse, bodyTruncated: false, bodyWireBytes: null } });
    await bus.publish(TOPICS.exchanges, null, Buffer.from('{"not":"a record"}'));
    const finding: Finding = makeFinding(records[0]!);
    await bus.publishRecord(TOPICS.findings, finding.sessionId, Buffer.from(encode(Finding, finding)));
    await waitFor(() => ingest.stats().exchangesInserted >= 15 && ingest.stats().findingsInserted >= 1 && letters.length >= 1, 30_000, 'records, finding and dead letter', () => ingest.stats());
    await assertStoredExactlyOnce(ch.client, records);
    assert.equal(await scalar(ch.client, 'SELECT count() FROM exchanges WHERE response_body_truncated AND response_body_wire_bytes = 268435456'), 1);
    assert.equal(await scalar(ch.client, 'SELECT count() FROM exchanges WHERE response_body_wire_bytes IS NULL'), 1);
    assert.equal(await scalar(ch.client, 'SELECT count() FROM findings'), 1);
    assert.equal(ingest.stats().bus.chunkSetsCompleted, 1);
    assert.match(letters[0]!, /"reason":"not an ExchangeRecord: schemaVersion/);
  } finally {
    await dlq.stop();
    await ingest.stop();
    await bus.close();
  }
});

test('stop() flushes what is pending before committing; a restarted ingest adds nothing', async () => {
  await ch.reset();
  const bus = createMemoryBus({ logger });
  const groupId = uniqueName('ingest');
  const records = Array.from({ length: 5 }, () => makeExchange());
  for (const r of records) await bus.publishRecord(TOPICS.exchanges, r.sessionId, Buffer.from(encode(ExchangeRecord, r)));
  // batchMs far away: only stop() can flush these rows (delivered as one batch).
  const first = await startIngest({ bus, clickhouse: { client: ch.client }, groupId, batchRows: 1_000, batchMs: 60_000, logger });
  await waitFor(() => first.stats().received >= 5, 10_000, 'records received');
  assert.equal(await scalar(ch.client, 'SELECT count() FROM exchanges'), 0, 'still batching');
  await first.stop();
  assert.equal(first.stats().exchangesInserted, 5);
  assert.equal(first.stats().bus.committed[`${TOPICS.exchanges}/0`], '5');

  const second = await startIngest({ bus, clickhouse: { client: ch.client }, groupId, batchRows: 1, batchMs: 50, logger });
  try {
    const more = makeExchange();
    await bus.publishRecord(TOPICS.exchanges, more.sessionId, Buffer.from(encode(ExchangeRecord, more)));
    await waitFor(() => second.stats().exchangesInserted >= 1, 10_000, 'the next record');
    assert.equal(second.stats().received, 1, 'nothing committed was delivered again');
    await assertStoredExactlyOnce(ch.client, [...records, more]);
  } finally {
    await second.stop();
    await bus.close();
  }
});

test('stop() while ClickHouse is down gives up after the grace period and commits nothing', async () => {
  // chDB cannot be stopped like a server: a test-only wrapper makes every call fail.
  await ch.reset();
  const bus = createMemoryBus({ logger });
  const groupId = uniqueName('ingest');
  const faulty = faultyClickHouse(ch.client);
  const first = await startIngest({ bus, clickhouse: { client: faulty.client }, groupId, batchRows: 1, batchMs: 50, stopGraceMs: 500, backoff: { initialMs: 50, maxMs: 200 }, logger });
  const records = Array.from({ length: 3 }, () => makeExchange());
  faulty.faults.down = true;
  for (const r of records) await bus.publishRecord(TOPICS.exchanges, r.sessionId, Buffer.from(encode(ExchangeRecord, r)));
  await waitFor(() => first.stats().clickhouseFailures >= 2, 10_000, 'failing inserts');
  const started = Date.now();
  await first.stop();
  assert.ok(Date.now() - started < 5_000, `stop() returned within the grace period (${Date.now() - started} ms)`);
  assert.equal(first.stats().exchangesInserted, 0);
  assert.equal(first.stats().bus.committed[`${TOPICS.exchanges}/0`] ?? '0', '0', 'nothing committed past the failed rows');

  faulty.faults.down = false;
  const second = await startIngest({ bus, clickhouse: { client: ch.client }, groupId, batchRows: 1, batchMs: 50, logger });
  try {
    await waitFor(() => second.stats().exchangesInserted >= 3, 10_000, 'the uncommitted records, redelivered');
    await assertStoredExactlyOnce(ch.client, records);
  } finally {
    await second.stop();
    await bus.close();
  }
});

test('batchMs spaces inserts from the previous one: rows after a quiet spell go in at once, rows right after an insert wait', async () => {
  await ch.reset();
  const bus = createMemoryBus({ logger });
  const BATCH_MS = 6_000;
  const ingest = await startIngest({ bus, clickhouse: { client: ch.client }, groupId: uniqueName('ingest'), batchRows: 1_000, batchMs: BATCH_MS, logger });
  const publish = async () => {
    const r = makeExchange();
    assert.equal((await bus.publishRecord(TOPICS.exchanges, r.sessionId, Buffer.from(encode(ExchangeRecord, r)))).kind, 'ok');
  };
  /** Resolves with when exchangesInserted reached n (polled every 20 ms). */
  const insertedAt = async (n: number): Promise<number> => {
    await waitFor(() => ingest.stats().exchangesInserted >= n, 30_000, `${n} exchanges inserted`, () => ingest.stats());
    return performance.now();
  };
  try {
    // Start counts as an insert: the first row waits for batchMs from start.
    const started = performance.now();
    await publish();
    const first = await insertedAt(1);
    assert.ok(first - started >= BATCH_MS - 1_000, `first insert after ${Math.round(first - started)} ms, not before batchMs`);

    // A quiet spell longer than batchMs: the next row is inserted without waiting for it.
    await new Promise((r) => setTimeout(r, BATCH_MS + 200));
    const sent = performance.now();
    await publish();
    const second = await insertedAt(2);
    assert.ok(second - sent < BATCH_MS - 1_000, `a row after a quiet spell waited ${Math.round(second - sent)} ms (batchMs ${BATCH_MS})`);

    // Right after that insert: the next one waits until batchMs after it began.
    await publish();
    const third = await insertedAt(3);
    assert.ok(third - second >= BATCH_MS - 1_500, `inserts ${Math.round(third - second)} ms apart, batchMs ${BATCH_MS}`);
    assert.equal(ingest.stats().batchesFlushed, 3);
  } finally {
    await ingest.stop();
    await bus.close();
  }
});
