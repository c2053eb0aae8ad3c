// A client whose current database is the Glitch one, for either backend.
import type { ClickHouseClient } from '@clickhouse/client';
import { createClickHouseClient, type ClickHouseTarget } from './client.js';

export const DEFAULT_DATABASE = 'glitch';

export interface OpenDatabaseOptions {
  /** Create the database when missing (migrate does); otherwise a missing one is an error. */
  create?: boolean;
}

export class DatabaseMissingError extends Error {
  constructor(readonly database: string) {
    super(`ClickHouse database ${database} does not exist yet; run \`glitch migrate\` (ingest also migrates at start)`);
    this.name = 'DatabaseMissingError';
  }
}

/**
 * Opens `target` with `database` as the current database. chDB switches with `USE` (one
 * engine per process, so this affects every chDB client of the process); a server client is
 * created bound to the database.
 */
export async function openDatabase(target: ClickHouseTarget, database: string = DEFAULT_DATABASE, opts: OpenDatabaseOptions = {}): Promise<ClickHouseClient> {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(database)) throw new Error(`database name ${JSON.stringify(database)} must be a plain identifier`);
  if (target.kind === 'chdb') {
    const client = createClickHouseClient(target);
    try {
      if (opts.create) await client.command({ query: `CREATE DATABASE IF NOT EXISTS ${database}` });
      else await assertExists(client, database);
      await client.command({ query: `USE ${database}` });
      return client;
    } catch (e) {
      await client.close();
      throw e;
    }
  }
  // The server rejects every request naming a missing database, so check/create through a
  // client without one first.
  const admin = createClickHouseClient({ ...target, database: undefined });
  try {
    if (opts.create) await admin.command({ query: `CREATE DATABASE IF NOT EXISTS ${database}` });
    else await assertExists(admin, database);
  } finally {
    await admin.close();
  }
  return createClickHouseClient({ ...target, database });
}

async function assertExists(client: ClickHouseClient, database: string): Promise<void> {
  const rs = await client.query({ query: 'SELECT count() AS n FROM system.databases WHERE name = {db:String}', query_params: { db: database }, format: 'JSONEachRow' });
  const [row] = await rs.json<{ n: string }>();
  if (Number(row?.n ?? 0) === 0) throw new DatabaseMissingError(database);
}
