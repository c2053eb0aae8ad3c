// Numbered SQL migrations (packages/store/migrations/NNNN_name.sql, shipped as files) and
// the retention TTL. `migrate` is idempotent: it records applied versions in
// schema_migrations, every statement is IF NOT EXISTS (so a migration interrupted halfway
// re-runs cleanly), and the TTL is only altered when it differs from the requested one.
import type { ClickHouseClient } from '@clickhouse/client';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { splitStatements } from './statements.js';

/** packages/store/migrations: one level up from both src/ and dist/. */
export const MIGRATIONS_DIR = fileURLToPath(new URL('../migrations/', import.meta.url));

export const DEFAULT_TTL_DAYS = 90;

/** Tables whose rows expire after the retention period, and the column it counts from. */
export const RETENTION_TABLES: readonly { table: string; column: string }[] = [
  { table: 'exchanges', column: 'received_at' },
  { table: 'security_events', column: 'at' },
  { table: 'findings', column: 'created_at' },
];

export interface Migration {
  version: number;
  name: string;
  sql: string;
  checksum: string;
}

const FILE_NAME = /^(\d{4})_([a-z0-9_]+)\.sql$/;
const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Reads and orders the migration files; a malformed or duplicate name is an error. */
export function loadMigrations(dir: string = MIGRATIONS_DIR): Migration[] {
  const migrations: Migration[] = [];
  for (const file of readdirSync(dir).sort()) {
    if (!file.endsWith('.sql')) continue;
    const m = FILE_NAME.exec(file);
    if (!m) throw new Error(`migration file ${file} in ${dir}: name must be NNNN_snake_case.sql`);
    const version = Number(m[1]);
    if (migrations.some((x) => x.version === version)) throw new Error(`migration version ${m[1]} appears twice in ${dir}`);
    const sql = readFileSync(join(dir, file), 'utf8');
    migrations.push({ version, name: m[2]!, sql, checksum: createHash('sha256').update(sql).digest('hex') });
  }
  return migrations;
}

export interface MigrateOptions {
  /** Database to create (if missing) and migrate; default: the client's current database. */
  database?: string;
  /** Retention of raw rows (exchanges, security_events, findings) in days. Default 90. */
  ttlDays?: number;
  /** Defaults to the shipped files. */
  migrations?: Migration[];
}

export interface MigrateResult {
  database: string;
  /** Versions applied by this call, in order. */
  applied: number[];
  /** Versions that were already applied before this call. */
  alreadyApplied: number[];
  /** Versions recorded in the database that this build does not ship (a newer build ran). */
  unknown: number[];
  ttlDays: number;
  /** Tables whose TTL this call changed. */
  ttlChanged: string[];
}

export async function migrate(client: ClickHouseClient, opts: MigrateOptions = {}): Promise<MigrateResult> {
  const ttlDays = opts.ttlDays ?? DEFAULT_TTL_DAYS;
  if (!Number.isInteger(ttlDays) || ttlDays <= 0) throw new Error(`ttlDays must be a positive integer, got ${ttlDays}`);
  const migrations = opts.migrations ?? loadMigrations();
  const database = await selectDatabase(client, opts.database);

  await client.command({
    query: `CREATE TABLE IF NOT EXISTS schema_migrations
      (version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3))
      ENGINE = ReplacingMergeTree ORDER BY version`,
  });
  const done = await rows<{ version: number; name: string; checksum: string }>(
    client,
    'SELECT version, name, checksum FROM schema_migrations FINAL ORDER BY version',
  );
  const doneByVersion = new Map(done.map((d) => [Number(d.version), d]));
  for (const m of migrations) {
    const d = doneByVersion.get(m.version);
    if (d && d.checksum !== m.checksum) {
      throw new Error(
        `migration ${pad(m.version)}_${m.name} was applied with different contents (checksum ${d.checksum.slice(0, 12)}…, file ${m.checksum.slice(0, 12)}…): ` +
          'applied migrations are immutable; add a new numbered migration instead',
      );
    }
  }

  const applied: number[] = [];
  for (const m of migrations) {
    if (doneByVersion.has(m.version)) continue;
    for (const statement of splitStatements(m.sql)) {
      try {
        await client.command({ query: statement });
      } catch (e) {
        throw new Error(`migration ${pad(m.version)}_${m.name} failed: ${(e as Error).message}\nstatement:\n${statement}`, { cause: e });
      }
    }
    await client.insert({
      table: 'schema_migrations',
      values: [{ version: m.version, name: m.name, checksum: m.checksum }],
      format: 'JSONEachRow',
    });
    applied.push(m.version);
  }

  const ttlChanged = await applyRetention(client, database, ttlDays);
  const shipped = new Set(migrations.map((m) => m.version));
  return {
    database,
    applied,
    alreadyApplied: [...doneByVersion.keys()].filter((v) => shipped.has(v)),
    unknown: [...doneByVersion.keys()].filter((v) => !shipped.has(v)),
    ttlDays,
    ttlChanged,
  };
}

/** The TTL in days currently set on `table` (from its engine definition), or null. */
export async function currentTtlDays(client: ClickHouseClient, database: string, table: string): Promise<number | null> {
  const [t] = await rows<{ engine_full: string }>(
    client,
    'SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {table:String}',
    { db: database, table },
  );
  const m = t ? /\bTTL\b.*?toIntervalDay\((\d+)\)/.exec(t.engine_full) : null;
  return m ? Number(m[1]) : null;
}

async function applyRetention(client: ClickHouseClient, database: string, ttlDays: number): Promise<string[]> {
  const changed: string[] = [];
  for (const { table, column } of RETENTION_TABLES) {
    const current = await currentTtlDays(client, database, table);
    if (current === ttlDays) continue;
    await client.command({ query: `ALTER TABLE ${table} MODIFY TTL toDateTime(${column}) + INTERVAL ${ttlDays} DAY` });
    changed.push(table);
  }
  return changed;
}

/**
 * Makes `database` the client's current one, creating it if missing. A chDB client switches
 * with `USE` (session state of the embedded engine); a server client is bound to its
 * database at creation, so a mismatch there is the caller's error.
 */
async function selectDatabase(client: ClickHouseClient, database: string | undefined): Promise<string> {
  const current = async () => (await rows<{ db: string }>(client, 'SELECT currentDatabase() AS db'))[0]?.db ?? '';
  if (database === undefined) return current();
  if (!IDENTIFIER.test(database)) throw new Error(`database name ${JSON.stringify(database)} must be a plain identifier`);
  await client.command({ query: `CREATE DATABASE IF NOT EXISTS ${database}` });
  if ((await current()) === database) return database;
  await client.command({ query: `USE ${database}` });
  const now = await current();
  if (now !== database) {
    throw new Error(`this client is bound to database ${now}; create it with { database: '${database}' } (see openDatabase)`);
  }
  return database;
}

async function rows<T>(client: ClickHouseClient, query: string, query_params?: Record<string, unknown>): Promise<T[]> {
  const rs = await client.query({ query, format: 'JSONEachRow', ...(query_params ? { query_params } : {}) });
  return rs.json<T>();
}

function pad(v: number): string {
  return String(v).padStart(4, '0');
}
