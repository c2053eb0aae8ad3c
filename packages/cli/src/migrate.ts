// `glitch migrate`: creates the Glitch database if needed, applies pending numbered
// migrations and the retention TTL (GLITCH_RETENTION_DAYS), and says what it did.
import { loadConfig, storeEnv } from '@glitch/config';
import { loadMigrations, migrate as migrateStore, openDatabase, type MigrateResult } from '@glitch/store';
import { describeTarget, storeTarget } from './store-target.js';

type Env = Readonly<Record<string, string | undefined>>;

export async function migrate(env: Env, out: (line: string) => void): Promise<MigrateResult> {
  const config = loadConfig(storeEnv, env);
  const target = storeTarget(config);
  const migrations = loadMigrations();
  const client = await openDatabase(target, config.GLITCH_CLICKHOUSE_DATABASE, { create: true });
  try {
    const r = await migrateStore(client, { ttlDays: config.GLITCH_RETENTION_DAYS, migrations });
    const name = (v: number) => `${String(v).padStart(4, '0')}_${migrations.find((m) => m.version === v)?.name ?? '?'}`;
    out(`ClickHouse: ${describeTarget(target, r.database)}`);
    if (r.applied.length) for (const v of r.applied) out(`applied ${name(v)}`);
    else out(`schema up to date (${r.alreadyApplied.length} migrations applied earlier)`);
    out(`retention: ${r.ttlDays} days${r.ttlChanged.length ? ` (TTL changed on ${r.ttlChanged.join(', ')})` : ''}`);
    if (r.unknown.length) out(`warning: the database has migrations this build does not know: ${r.unknown.join(', ')} (a newer Glitch ran against it)`);
    return r;
  } finally {
    await client.close();
  }
}
