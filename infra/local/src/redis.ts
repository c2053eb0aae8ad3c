// Starts a throwaway Debian `redis-server` on a free loopback port, for tests and for
// `npm run infra:up`. Persistence is optional so restart tests can keep their data.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const REDIS_INSTALL_HINT = 'install it with: apt-get update && apt-get install -y redis-server';

export interface RedisOptions {
  port?: number; // 0 or absent = a free port
  /** Keep data across restarts (appendonly) in this directory; default: a temp dir, no persistence. */
  dataDir?: string;
  persist?: boolean;
}

export interface RedisHandle {
  kind: 'redis-server';
  version: string;
  url: string;
  port: number;
  dataDir: string;
  stop(): Promise<void>;
}

export function findRedisServer(): string {
  for (const candidate of [process.env.GLITCH_REDIS_SERVER_BIN, 'redis-server', '/usr/bin/redis-server', '/usr/local/bin/redis-server']) {
    if (!candidate) continue;
    const r = spawnSync(candidate, ['--version'], { encoding: 'utf8' });
    if (r.status === 0) return candidate;
  }
  throw new Error(`redis-server not found on PATH; ${REDIS_INSTALL_HINT}`);
}

export async function freePort(host = '127.0.0.1'): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export async function startRedis(opts: RedisOptions = {}): Promise<RedisHandle> {
  const bin = findRedisServer();
  const version = /v=(\S+)/.exec(spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout)?.[1] ?? 'unknown';
  const ownDir = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'glitch-redis-'));
  mkdirSync(dataDir, { recursive: true });
  const port = opts.port && opts.port > 0 ? opts.port : await freePort();
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dataDir, '--save', '', '--protected-mode', 'no'];
  args.push('--appendonly', opts.persist ? 'yes' : 'no');
  const child: ChildProcess = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server did not become ready in 10 s:\n${output}`)), 10_000);
    const onData = (b: Buffer) => {
      output += b.toString();
      if (output.includes('Ready to accept connections')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`redis-server exited with ${code} before ready:\n${output}`));
    });
  });
  child.stdout?.removeAllListeners('data');
  child.stderr?.removeAllListeners('data');
  child.stdout?.resume();
  child.stderr?.resume();
  // Never outlive the process that started us.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  return {
    kind: 'redis-server',
    version,
    url: `redis://127.0.0.1:${port}`,
    port,
    dataDir,
    async stop() {
      process.removeListener('exit', killOnExit);
      if (child.exitCode === null && child.signalCode === null) {
        await new Promise<void>((resolve) => {
          child.once('exit', () => resolve());
          child.kill('SIGTERM');
        });
      }
      if (ownDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
