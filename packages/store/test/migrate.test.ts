// Migrations on the harness ClickHouse (chDB here, a server under Docker): idempotent,
// checksummed, and the retention TTL follows the configured days.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { currentTtlDays, loadMigrations, migrate, splitStatements } from '@glitch/store';
import { clickhouse, type ClickHouseEnv } from '../../../test/harness/clickhouse.js';

let ch: ClickHouseEnv;

before(async () => {
  ch = await clickhouse();
  console.log(`[store] clickhouse: ${ch.kind} — ${ch.description}`);
});

async function tables(): Promise<string[]> {
  const rs = await ch.client.query({ query: 'SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name', format: 'JSONEachRow' });
  return (await rs.json<{ name: string }>()).map((r) => r.name);
}

test('migrations apply once; a second run applies nothing and changes nothing', async () => {
  const db = await ch.reset();
  const shipped = loadMigrations().map((m) => m.version);
  assert.deepEqual(shipped, [1, 2, 3, 4, 5, 6, 7]);

  const first = await migrate(ch.client);
  assert.equal(first.database, db);
  assert.deepEqual(first.applied, shipped);
  assert.deepEqual(first.alreadyApplied, []);
  assert.deepEqual(first.ttlChanged, [], 'the shipped default TTL is already 90 days');
  assert.deepEqual(await tables(), ['exchanges', 'findings', 'policy_updates', 'schema_migrations', 'security_events', 'usage_hourly', 'usage_hourly_mv']);

  const second = await migrate(ch.client);
  assert.deepEqual(second.applied, []);
  assert.deepEqual(second.alreadyApplied, shipped);
  assert.deepEqual(second.ttlChanged, []);
  const rs = await ch.client.query({ query: 'SELECT version, name FROM schema_migrations FINAL ORDER BY version', format: 'JSONEachRow' });
  assert.deepEqual(
    (await rs.json<{ version: number; name: string }>()).map((r) => `${r.version}:${r.name}`),
    ['1:exchanges', '2:security_events', '3:findings', '4:policy_updates', '5:usage_hourly', '6:exchanges_response_truncation', '7:usage_response_wire_bytes'],
  );
});

test('retention: ttlDays rewrites the TTL of raw tables only when it changes', async () => {
  const db = await ch.reset();
  await migrate(ch.client);
  for (const t of ['exchanges', 'security_events', 'findings']) assert.equal(await currentTtlDays(ch.client, db, t), 90, t);

  const changed = await migrate(ch.client, { ttlDays: 30 });
  assert.deepEqual(changed.ttlChanged, ['exchanges', 'security_events', 'findings']);
  for (const t of ['exchanges', 'security_events', 'findings']) assert.equal(await currentTtlDays(ch.client, db, t), 30, t);
  assert.equal(await currentTtlDays(ch.client, db, 'usage_hourly'), null, 'the rollup has no TTL');
  assert.equal(await currentTtlDays(ch.client, db, 'policy_updates'), null, 'the policy audit trail has no TTL');

  const again = await migrate(ch.client, { ttlDays: 30 });
  assert.deepEqual(again.ttlChanged, []);
  await assert.rejects(migrate(ch.client, { ttlDays: 0 }), /ttlDays must be a positive integer/);
});

test('an applied migration whose file changed is refused', async () => {
  await ch.reset();
  const migrations = loadMigrations();
  await migrate(ch.client, { migrations });
  const edited = migrations.map((m) => (m.version === 2 ? { ...m, checksum: 'f'.repeat(64) } : m));
  await assert.rejects(migrate(ch.client, { migrations: edited }), /0002_security_events was applied with different contents/);
});

test('migrate({ database }) creates the database and migrates it', async () => {
  const db = await ch.reset();
  const other = `${db}_named`;
  try {
    if (ch.kind === 'chdb') {
      const r = await migrate(ch.client, { database: other });
      assert.equal(r.database, other);
      assert.deepEqual(r.applied, [1, 2, 3, 4, 5, 6, 7]);
      const rs = await ch.client.query({ query: `SELECT count() AS n FROM system.tables WHERE database = '${other}'`, format: 'JSONEachRow' });
      assert.deepEqual(await rs.json(), [{ n: '7' }]);
    } else {
      // A server client is bound to its database: asking for another one is an error.
      await assert.rejects(migrate(ch.client, { database: other }), /bound to database/);
    }
  } finally {
    await ch.client.command({ query: `DROP DATABASE IF EXISTS ${other} SYNC` });
    if (ch.kind === 'chdb') await ch.client.command({ query: `USE ${db}` });
  }
});

test('splitStatements respects strings, quoted identifiers and comments', () => {
  const script = `
    -- a comment; with a semicolon
    CREATE TABLE a (x String DEFAULT 'a;b') ENGINE = Memory;
    /* block; comment */
    INSERT INTO "we;ird" VALUES ('it''s; fine', 'back\\\\slash\\'; still');
    SELECT \`col;umn\` FROM t;
    -- trailing comment only
  `;
  assert.deepEqual(splitStatements(script), [
    "-- a comment; with a semicolon\n    CREATE TABLE a (x String DEFAULT 'a;b') ENGINE = Memory",
    `/* block; comment */\n    INSERT INTO "we;ird" VALUES ('it''s; fine', 'back\\\\slash\\'; still')`,
    'SELECT `col;umn` FROM t',
  ]);
  assert.deepEqual(splitStatements('  ;; -- nothing\n'), []);
});
