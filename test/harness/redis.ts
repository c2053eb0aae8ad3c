// Harness Redis: one real redis-server per test run (started by test/run.ts), flushed per test.
import { startRedis, type RedisHandle, REDIS_INSTALL_HINT } from '@glitch/infra-local';
import { Redis } from 'ioredis';
import { componentUnavailable, onProcessExit } from './env.js';

export interface RedisEnv {
  kind: 'redis-server';
  url: string;
  /** A connected client for the test; closed automatically at process exit. */
  client(): Redis;
  /** FLUSHALL: call at the start of each test that needs a clean slate. */
  reset(): Promise<void>;
}

export async function startSharedRedis(): Promise<{ env: Record<string, string>; description: string; stop(): Promise<void> }> {
  const h = await startRedis();
  return {
    env: { GLITCH_TEST_REDIS_URL: h.url },
    description: `redis-server ${h.version} at ${h.url}`,
    stop: () => h.stop(),
  };
}

let cached: Promise<RedisEnv> | undefined;

export function redis(): Promise<RedisEnv> {
  cached ??= resolveRedis();
  return cached;
}

/** A private redis-server for tests that stop and restart it. */
export async function privateRedis(opts: { persist?: boolean; port?: number; dataDir?: string } = {}): Promise<RedisHandle> {
  try {
    const h = await startRedis(opts);
    onProcessExit(() => h.stop());
    return h;
  } catch (e) {
    throw new Error(`cannot start redis-server: ${(e as Error).message}. ${REDIS_INSTALL_HINT}`);
  }
}

async function resolveRedis(): Promise<RedisEnv> {
  componentUnavailable('REDIS');
  let url = process.env.GLITCH_TEST_REDIS_URL;
  if (!url) url = (await privateRedis()).url; // file run directly, without test/run.ts
  const clients: Redis[] = [];
  onProcessExit(async () => {
    await Promise.all(clients.map((c) => c.quit().catch(() => c.disconnect())));
  });
  return {
    kind: 'redis-server',
    url,
    client() {
      const c = new Redis(url, { maxRetriesPerRequest: null });
      clients.push(c);
      return c;
    },
    async reset() {
      // A connection per reset: one kept open would hold the test process past its tests.
      const admin = new Redis(url, { maxRetriesPerRequest: 2 });
      try {
        await admin.flushall();
      } finally {
        await admin.quit().catch(() => admin.disconnect());
      }
    },
  };
}
