// chDB through @clickhouse/client must behave like a stateless ClickHouse server.
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createClickHouseClient } from '@glitch/store';

const path = mkdtempSync(join(tmpdir(), 'glitch-store-chdb-'));

test('per-call settings do not leak into later calls (a dedup token must not drop the next batch)', async () => {
  const ch = createClickHouseClient({ kind: 'chdb', path });
  try {
    await ch.command({ query: 'CREATE TABLE leak (a UInt8) ENGINE = MergeTree ORDER BY a SETTINGS non_replicated_deduplication_window = 100' });
    await ch.insert({ table: 'leak', values: [{ a: 1 }], format: 'JSONEachRow', clickhouse_settings: { insert_deduplication_token: 'batch-1' } });
    await ch.insert({ table: 'leak', values: [{ a: 1 }], format: 'JSONEachRow' });
    await ch.insert({ table: 'leak', values: [{ a: 1 }], format: 'JSONEachRow', clickhouse_settings: { insert_deduplication_token: 'batch-1' } });
    const r = await ch.query({ query: "SELECT count() AS n, getSetting('insert_deduplication_token') AS token FROM leak", format: 'JSONEachRow' });
    // Server parity: 64-bit integers come back as JSON strings, as over HTTP.
    assert.deepEqual(await r.json(), [{ n: '2', token: '' }]);
  } finally {
    await ch.close();
  }
});

test('concurrent calls are serialized and each sees only its own settings', async () => {
  const ch = createClickHouseClient({ kind: 'chdb', path });
  try {
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        ch.query({ query: "SELECT getSetting('max_threads') AS t", format: 'JSONEachRow', clickhouse_settings: { max_threads: i + 1 } }).then((r) => r.json<{ t: string }>()),
      ),
    );
    assert.deepEqual(results.map((r) => Number(r[0]?.t)), [1, 2, 3, 4, 5, 6, 7, 8]);
  } finally {
    await ch.close();
  }
});

test('a second data dir in the same process is refused with a clear error', () => {
  assert.throws(() => createClickHouseClient({ kind: 'chdb', path: join(path, 'other') }), /one data dir per process/);
});
