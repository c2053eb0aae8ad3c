// The benches' fast canned upstream (forwarder/upstream.ts, uWebSockets.js) in a process of
// its own, so the upstream's work and pauses are not the load generator's.
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '..', '..');

/** SIGTERM, then SIGKILL after 5 s; resolves once the process is gone. */
export function stopProcess(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((r) => {
    const t = setTimeout(() => p.kill('SIGKILL'), 5_000);
    p.once('exit', () => {
      clearTimeout(t);
      r();
    });
    p.kill('SIGTERM');
  });
}

/** Runs one of the benches' TypeScript servers (path relative to test/bench); resolves once it printed "LISTENING <port>". */
export async function spawnListening(script: string, args: string[], what: string): Promise<{ p: ChildProcess; port: number }> {
  const p = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', join(here, script), ...args], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((res, rej) => {
    let out = '';
    p.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const m = /LISTENING (\d+)/.exec(out);
      if (m) res(Number(m[1]));
    });
    p.once('exit', (c) => rej(new Error(`${what} exited ${c}`)));
  });
  return { p, port };
}

export interface BenchUpstream {
  url: string;
  pid: number;
  stats(): Promise<{ open: number; aborted: number; completed: number }>;
  stop(): Promise<void>;
}

/** The canned upstream (forwarder/upstream.ts: its query string picks JSON or SSE) in its own process. */
export async function startBenchUpstream(): Promise<BenchUpstream> {
  const { p, port } = await spawnListening(join('forwarder', 'upstream.ts'), ['0'], 'bench upstream');
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    pid: p.pid!,
    stats: async () => (await (await fetch(`${url}/__stats`)).json()) as { open: number; aborted: number; completed: number },
    stop: () => stopProcess(p),
  };
}
