// One way to get a ClickHouse client, whatever is behind it: a ClickHouse server over
// HTTP, or chDB embedded in this process through @clickhouse/client's `connection` hook.
// Callers write the same SQL either way.
import { createClient, type ClickHouseClient } from '@clickhouse/client';
import { mkdirSync } from 'node:fs';
import { createSerializedChdbConnection } from './chdb.js';

export type { ClickHouseClient };
export { CHDB_INSTALL_HINT } from './chdb.js';

export type ClickHouseTarget =
  | { kind: 'server'; url: string; database?: string; username?: string; password?: string }
  | { kind: 'chdb'; path: string };

// chDB binds one data directory per process: remember which one we opened.
let chdbPathInUse: string | undefined;

/**
 * A client for `target`. For chDB the current database is session state: select one with
 * `USE db` (it persists for this process's engine); a server client takes `database`.
 */
export function createClickHouseClient(target: ClickHouseTarget): ClickHouseClient {
  if (target.kind === 'server') {
    return createClient({
      url: target.url,
      ...(target.database ? { database: target.database } : {}),
      ...(target.username ? { username: target.username } : {}),
      ...(target.password ? { password: target.password } : {}),
      request_timeout: 60_000,
    });
  }
  if (chdbPathInUse !== undefined && chdbPathInUse !== target.path) {
    throw new Error(`chDB is already bound to ${chdbPathInUse} in this process (one data dir per process); asked for ${target.path}`);
  }
  mkdirSync(target.path, { recursive: true });
  chdbPathInUse = target.path;
  return createClient({ connection: createSerializedChdbConnection(target.path) });
}

/** GLITCH_CLICKHOUSE_URL set → that server; otherwise embedded chDB under `chdbPath`. */
export function clickHouseTarget(url: string | undefined, chdbPath: string): ClickHouseTarget {
  return url ? { kind: 'server', url } : { kind: 'chdb', path: chdbPath };
}
