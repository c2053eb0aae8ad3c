// Harness ClickHouse: a ClickHouse server via testcontainers when a Docker engine answers,
// otherwise chDB embedded in each test process (one data dir per process). Each test gets a
// fresh database, so tests never see each other's rows.
import { createClickHouseClient, type ClickHouseClient, type ClickHouseTarget } from '@glitch/store';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dockerAvailable } from './docker.js';
import { componentUnavailable, onProcessExit, uniqueName } from './env.js';

export interface ClickHouseEnv {
  kind: 'chdb' | 'testcontainers';
  description: string;
  target: ClickHouseTarget;
  /** Client bound to `database`; created fresh by `reset()`. */
  client: ClickHouseClient;
  database: string;
  /** Drops this test's database and creates a new empty one; returns its name. */
  reset(): Promise<string>;
}

export async function startSharedClickHouse(): Promise<{ env: Record<string, string>; description: string; stop(): Promise<void> }> {
  if (await dockerAvailable()) {
    const { ClickHouseContainer } = await import('@testcontainers/clickhouse');
    const container = await new ClickHouseContainer('clickhouse/clickhouse-server:25.8').start();
    const url = container.getConnectionUrl();
    return {
      env: { GLITCH_TEST_CLICKHOUSE_URL: url, GLITCH_TEST_CLICKHOUSE_KIND: 'testcontainers' },
      description: `testcontainers ClickHouse at ${url.replace(/\/\/[^@]*@/, '//')}`,
      stop: async () => {
        await container.stop();
      },
    };
  }
  // chDB lives inside each test process; nothing to start once per run.
  const { createRequire } = await import('node:module');
  const version = (createRequire(import.meta.url)('chdb/package.json') as { version: string }).version;
  return {
    env: { GLITCH_TEST_CLICKHOUSE_KIND: 'chdb' },
    description: `chDB ${version} (embedded, one data dir per test process; no Docker engine answered)`,
    stop: async () => {},
  };
}

let cached: Promise<ClickHouseEnv> | undefined;

export function clickhouse(): Promise<ClickHouseEnv> {
  cached ??= resolveClickHouse();
  return cached;
}

async function resolveClickHouse(): Promise<ClickHouseEnv> {
  componentUnavailable('CLICKHOUSE');
  const url = process.env.GLITCH_TEST_CLICKHOUSE_URL;
  const target: ClickHouseTarget = url ? { kind: 'server', url } : { kind: 'chdb', path: mkdtempSync(join(tmpdir(), 'glitch-chdb-')) };
  const admin = createClickHouseClient(target);
  const env: ClickHouseEnv = {
    kind: url ? 'testcontainers' : 'chdb',
    description: target.kind === 'server' ? `ClickHouse server ${target.url}` : `chDB at ${target.path}`,
    target,
    client: admin,
    database: 'default',
    async reset() {
      const previous = env.database;
      const db = uniqueName('t');
      await admin.command({ query: `CREATE DATABASE ${db}` });
      if (target.kind === 'chdb') {
        // One engine per process: the current database is session state of that engine.
        await admin.command({ query: `USE ${db}` });
      } else {
        if (env.client !== admin) await env.client.close();
        env.client = createClickHouseClient({ ...target, database: db });
      }
      if (previous !== 'default') await admin.command({ query: `DROP DATABASE IF EXISTS ${previous} SYNC` });
      env.database = db;
      return db;
    },
  };
  onProcessExit(async () => {
    if (env.client !== admin) await env.client.close();
    await admin.close();
  });
  return env;
}
