// `glitch migrate` and `glitch sql` against the embedded target: chDB under
// ${GLITCH_DATA_DIR}/clickhouse (always chDB: these commands' own default; one data dir for
// this whole file, as chDB binds one per process).
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { migrate, sql } from '@glitch/cli';

const env = { GLITCH_DATA_DIR: mkdtempSync(join(tmpdir(), 'glitch-cli-')), GLITCH_LOG_LEVEL: 'error' };

test('glitch migrate creates the database, is idempotent, and applies the retention setting', async () => {
  const first: string[] = [];
  const r = await migrate(env, (l) => first.push(l));
  assert.deepEqual(r.applied, [1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual(first, [
    `ClickHouse: chDB at ${join(env.GLITCH_DATA_DIR, 'clickhouse')}, database glitch`,
    'applied 0001_exchanges',
    'applied 0002_security_events',
    'applied 0003_findings',
    'applied 0004_policy_updates',
    'applied 0005_usage_hourly',
    'applied 0006_exchanges_response_truncation',
    'applied 0007_usage_response_wire_bytes',
    'retention: 90 days',
  ]);
  const second: string[] = [];
  await migrate(env, (l) => second.push(l));
  assert.deepEqual(second.slice(1), ['schema up to date (7 migrations applied earlier)', 'retention: 90 days']);
  const third: string[] = [];
  await migrate({ ...env, GLITCH_RETENTION_DAYS: '30' }, (l) => third.push(l));
  assert.deepEqual(third.slice(1), ['schema up to date (7 migrations applied earlier)', 'retention: 30 days (TTL changed on exchanges, security_events, findings)']);
});

test('glitch sql prints a table per statement', async () => {
  await migrate(env, () => {});
  const lines: string[] = [];
  await sql(env, "SELECT count() AS exchanges FROM exchanges; SELECT name FROM system.tables WHERE database = 'glitch' AND name LIKE 'usage%' ORDER BY name", (l) => lines.push(l));
  assert.deepEqual(lines, ['exchanges\n---------\n        0\n(1 row)', '', 'name\n---------------\nusage_hourly\nusage_hourly_mv\n(2 rows)']);
});

test('glitch sql names what is wrong: a missing database, bad SQL, bad config', async () => {
  await assert.rejects(sql({ ...env, GLITCH_CLICKHOUSE_DATABASE: 'not_there' }, 'SELECT 1', () => {}), /database not_there does not exist yet; run `glitch migrate`/);
  await assert.rejects(sql(env, 'SELEC 1', () => {}), /Syntax error/);
  await assert.rejects(sql(env, '  ', () => {}), /no SQL statement given/);
  await assert.rejects(sql({ ...env, GLITCH_CLICKHOUSE_URL: 'ftp://nope' }, 'SELECT 1', () => {}), /GLITCH_CLICKHOUSE_URL: must be an http\(s\) URL/);
});
