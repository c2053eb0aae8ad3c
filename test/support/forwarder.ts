// Starts the Glitch forwarder for e2e/fault tests and benches: in-process through
// `startForwarder` (options, recorder), or as a child process through its composition root
// `services/forwarder/src/main.ts` with GLITCH_* env (so a test can measure its RSS and
// file descriptors, kill it, or see it survive).
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FORWARDER_NODE_FLAGS, type ForwarderOptions, type RunningForwarder, type StaticKey } from '@glitch/forwarder';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const forwarderMain = join(repoRoot, 'services', 'forwarder', 'src', 'main.ts');
/** The compiled entry (`node scripts/build.mjs`), what `npm start` runs in production. */
export const forwarderMainBuilt = join(repoRoot, 'services', 'forwarder', 'dist', 'main.js');
/**
 * Node flags a forwarder process runs with, as the `glitch` command starts it (its shebang;
 * services/forwarder/src/thread-priority.ts says why each).
 */
export { FORWARDER_NODE_FLAGS };

/** GLITCH_BENCH_CPU_PROF_DIR=/dir: flags for a V8 CPU profile of a child process in /dir (none without it). */
export function cpuProfileFlags(): string[] {
  const dir = process.env.GLITCH_BENCH_CPU_PROF_DIR;
  return dir ? ['--cpu-prof', `--cpu-prof-dir=${dir}`] : [];
}

const FORWARDER_HINT = `the forwarder lives in services/forwarder (package @glitch/forwarder); install the workspace with: cd ${repoRoot} && node scripts/build.mjs`;

/** A tenant key for tests: `glitch_sk_test_<random>`. */
export function testKey(tenantId = 'tenant-test', id = `key-${randomBytes(3).toString('hex')}`): StaticKey & { secret: string } {
  return { id, tenantId, secret: `glitch_sk_test_${randomBytes(16).toString('hex')}` };
}

/** A local port that was free a moment ago (for children that need a fixed port). */
export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolvePort(port));
    });
  });
}

/** Starts the forwarder in this process. */
export async function startInProcess(opts: Omit<ForwarderOptions, 'host' | 'port' | 'adminHost' | 'adminPort'> & Partial<ForwarderOptions>): Promise<RunningForwarder> {
  let mod: typeof import('@glitch/forwarder');
  try {
    mod = await import('@glitch/forwarder');
  } catch (e) {
    throw new Error(`cannot load @glitch/forwarder (${(e as Error).message}); ${FORWARDER_HINT}`);
  }
  return mod.startForwarder({ host: '127.0.0.1', port: 0, adminHost: '127.0.0.1', adminPort: 0, threads: 1, ...opts });
}

export interface ChildForwarder {
  url: string;
  port: number;
  adminUrl: string;
  adminPort: number;
  pid: number;
  child: ChildProcess;
  /** Everything the child wrote to stdout/stderr so far. */
  output(): string;
  /** Resident set size of the process (and its threads) in bytes, from /proc. */
  rssBytes(): number;
  /** Open file descriptors of the process (sockets, files, pipes). */
  openFds(): number;
  /** Open TCP sockets of the process, from /proc/<pid>/fd + /proc/net/tcp*. */
  tcpSockets(): { established: number; total: number };
  alive(): boolean;
  /** Fetches a path on the admin port (/healthz, /readyz, /metrics). */
  admin(path: string): Promise<{ status: number; body: string }>;
  stop(): Promise<void>;
}

export interface ChildForwarderOptions {
  upstreamUrl: string;
  keys: StaticKey[];
  threads?: number;
  /** Extra GLITCH_* (or NODE_OPTIONS) environment. */
  env?: Record<string, string>;
  readyTimeoutMs?: number;
  /**
   * Run the compiled forwarder (dist/main.js, as production does) instead of the TypeScript
   * sources through tsx. Benches use it: tsx's transform (esbuild keepNames wrappers and all)
   * measurably slows the hot path, so measuring sources would not measure what ships.
   */
  built?: boolean;
  /** A compiled entry script to run with plain node instead (it reads the same GLITCH_* env). */
  entry?: string;
}

/**
 * Runs `node --conditions=source --import tsx services/forwarder/src/main.ts` (or, with
 * `built`, `node services/forwarder/dist/main.js`) with GLITCH_PORT / GLITCH_ADMIN_PORT (free
 * ports picked here), GLITCH_UPSTREAM_URL, GLITCH_KEYS_FILE and GLITCH_FORWARDER_THREADS, and
 * waits for GET /readyz = 200.
 */
export async function startChild(opts: ChildForwarderOptions): Promise<ChildForwarder> {
  const compiled = opts.built === true || opts.entry !== undefined;
  const entry = opts.entry ?? (opts.built ? forwarderMainBuilt : forwarderMain);
  if (!existsSync(entry)) throw new Error(`forwarder entry ${entry} not found; ${FORWARDER_HINT}`);
  const dir = mkdtempSync(join(tmpdir(), 'glitch-fwd-'));
  const keysFile = join(dir, 'keys.json');
  writeFileSync(keysFile, JSON.stringify({ keys: opts.keys }));
  const port = await freePort();
  const adminPort = await freePort();
  let out = '';
  const child = spawn(process.execPath, [...FORWARDER_NODE_FLAGS, ...(compiled ? [entry] : ['--conditions=source', '--import', 'tsx', entry])], {
    cwd: repoRoot,
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? dir,
      NODE_ENV: 'test',
      GLITCH_HOST: '127.0.0.1',
      GLITCH_PORT: String(port),
      GLITCH_ADMIN_HOST: '127.0.0.1',
      GLITCH_ADMIN_PORT: String(adminPort),
      GLITCH_UPSTREAM_URL: opts.upstreamUrl,
      GLITCH_KEYS_FILE: keysFile,
      GLITCH_FORWARDER_THREADS: String(opts.threads ?? 1),
      GLITCH_LOG_LEVEL: 'warn',
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out = (out + d).slice(-200_000)));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out = (out + d).slice(-200_000)));
  let exited: string | null = null;
  child.once('exit', (code, signal) => (exited = `exited with ${code ?? signal}`));
  const pid = child.pid!;
  const adminUrl = `http://127.0.0.1:${adminPort}`;

  const admin = async (path: string): Promise<{ status: number; body: string }> => {
    const r = await fetch(adminUrl + path, { signal: AbortSignal.timeout(5_000) });
    return { status: r.status, body: await r.text() };
  };

  const deadline = Date.now() + (opts.readyTimeoutMs ?? 30_000);
  for (;;) {
    if (exited) throw new Error(`forwarder child ${exited} before ready; output:\n${out}`);
    try {
      if ((await admin('/readyz')).status === 200) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`forwarder child not ready (GET ${adminUrl}/readyz) within ${opts.readyTimeoutMs ?? 30_000} ms; output:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    adminUrl,
    adminPort,
    pid,
    child,
    output: () => out,
    rssBytes: () => procRssBytes(pid),
    openFds: () => readdirSync(`/proc/${pid}/fd`).length,
    tcpSockets: () => procTcpSockets(pid),
    alive: () => exited === null && child.exitCode === null && child.signalCode === null,
    admin,
    async stop() {
      if (exited === null) {
        const done = new Promise<void>((r) => child.once('exit', () => r()));
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await done;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function procRssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

/** TCP sockets owned by `pid` (by inode), split into ESTABLISHED and all states. */
export function procTcpSockets(pid: number): { established: number; total: number } {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSafe(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      /* fd closed meanwhile */
    }
  }
  let established = 0;
  let total = 0;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10) continue;
      if (!inodes.has(cols[9]!)) continue;
      total++;
      if (cols[3] === '01') established++;
    }
  }
  return { established, total };
}

function readlinkSafe(p: string): string {
  try {
    return readlinkSync(p);
  } catch {
    return '';
  }
}
