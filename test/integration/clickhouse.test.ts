// @clickhouse/client against the harness's ClickHouse (chDB here, a server under Docker).
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { clickhouse, type ClickHouseEnv } from '../harness/clickhouse.js';

let ch: ClickHouseEnv;

before(async () => {
  ch = await clickhouse();
  console.log(`[test] clickhouse: ${ch.kind} — ${ch.description}`);
});

test('DateTime64 + TTL table; the same insert_deduplication_token twice stores one copy', async () => {
  await ch.reset();
  await ch.client.command({
    query: `
      CREATE TABLE events (
        id UUID,
        at DateTime64(3, 'UTC'),
        body String
      ) ENGINE = MergeTree
      ORDER BY (at, id)
      TTL toDateTime(at) + INTERVAL 30 DAY
      SETTINGS non_replicated_deduplication_window = 1000`,
  });
  const rows = [
    { id: '01936f8e-7c2a-7b3d-8e4f-0123456789ab', at: '2026-11-23 10:00:00.123', body: 'first' },
    { id: '01936f8e-7c2a-7b3d-8e4f-0123456789ac', at: '2026-11-23 10:00:00.456', body: 'second' },
  ];
  for (let i = 0; i < 2; i++) {
    await ch.client.insert({ table: 'events', values: rows, format: 'JSONEachRow', clickhouse_settings: { insert_deduplication_token: 'exchanges-0-100-199' } });
  }
  // A different token is a different batch and is stored.
  await ch.client.insert({ table: 'events', values: rows.slice(0, 1), format: 'JSONEachRow', clickhouse_settings: { insert_deduplication_token: 'exchanges-0-200-200' } });
  const res = await ch.client.query({ query: 'SELECT body, toString(at) AS at FROM events ORDER BY at, body', format: 'JSONEachRow' });
  const got = await res.json<{ body: string; at: string }>();
  assert.deepEqual(got, [
    { body: 'first', at: '2026-11-23 10:00:00.123' },
    { body: 'first', at: '2026-11-23 10:00:00.123' },
    { body: 'second', at: '2026-11-23 10:00:00.456' },
  ]);
  const ttl = await ch.client.query({ query: `SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = 'events'`, format: 'JSONEachRow' });
  const [table] = await ttl.json<{ engine_full: string }>();
  assert.match(table?.engine_full ?? '', /TTL toDateTime\(at\) \+ toIntervalDay\(30\)/);
});

test('each test gets a fresh database', async () => {
  const db = await ch.reset();
  const res = await ch.client.query({ query: 'SELECT currentDatabase() AS db, count() AS n FROM system.tables WHERE database = currentDatabase()', format: 'JSONEachRow' });
  assert.deepEqual(await res.json(), [{ db, n: '0' }]);
});
