// Forwarder bench (`npm run bench`): direct-to-upstream vs nginx proxy_pass vs Glitch on
// loopback, against a fast canned upstream (uWS, own process). Measures, per target:
//   - throughput and latency of 10 KB non-streaming POSTs (wrk + Lua, 64 connections),
//   - latency at concurrency 1 (added p50/p99 vs direct: the forwarder's own cost),
//   - SSE: time to first event and per-event lag (added vs direct),
//   - proxy CPU per 1,000 requests (the fair number on a box where wrk competes for CPU),
//   - RSS with 1,000 open streams and after 10,000 aborted ones (proxies only).
// Like with like: 1 Glitch thread vs 1 nginx worker, then all cores vs all cores. Glitch runs
// compiled (services/forwarder/dist, what `npm start` runs), with its default settings; the
// `+ recorder` rows add a Recorder that only counts, so they include the cost of capturing
// every exchange (copies, hand-over, SSE/usage completion), which nginx does not do.
// Prints a table and writes JSON to test/bench/results/ (gitignored).
//
// The `floor` row (floor-relay.ts) is the least a uWS + node:net relay can do per request:
// Glitch's distance to it is the relay's own cost, its distance to nginx the stack's.
//
// Flags: --duration=SECONDS (each throughput run, default 8), --rounds=N (default 3),
// --pin=off (by default 1-thread targets get core 0 to themselves: see placeFor),
// --only=direct,nginx,glitch,floor
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request as httpRequest } from 'node:http';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, startChild, testKey, type ChildForwarder } from '../../support/forwarder.js';
import { cpuSeconds } from '../proc.js';
import { spawnListening, startBenchUpstream as startUpstream, stopProcess, type BenchUpstream } from '../upstream-process.js';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '..', '..', '..');
const resultsDir = join(repoRoot, 'test', 'bench', 'results');
const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const DURATION_S = Number(args.get('duration') ?? 8);
const ROUNDS = Math.max(1, Number(args.get('rounds') ?? 3));
const ONLY = args.get('only')?.split(',');
const NCPU = cpus().length;
/** Pin 1-thread targets to their own core (see placeFor); `--pin=off` leaves placement to the scheduler. */
const PIN = NCPU >= 2 && args.get('pin') !== 'off';
const MB = 1024 * 1024;
const SSE_STREAMS = 200;
const SSE_EVENTS = 20;
const SSE_GAP_MS = 3;

// ---- preflight -------------------------------------------------------------------------

function which(cmd: string): string | null {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

const missing = ['nginx', 'wrk', 'taskset'].filter((c) => !which(c));
if (missing.length) {
  const packages = missing.map((c) => (c === 'taskset' ? 'util-linux' : c));
  console.error(`[bench] missing: ${missing.join(', ')}. Install with: apt-get update && apt-get install -y ${packages.join(' ')}`);
  process.exit(1);
}
const nginxVersion = spawnSync('nginx', ['-v'], { encoding: 'utf8' }).stderr.trim();
const wrkVersion = (spawnSync('wrk', ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0] ?? '').trim();

// ---- process helpers -------------------------------------------------------------------

function descendants(pid: number): number[] {
  const out = [pid];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const kids = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      for (const k of kids ? kids.split(' ') : []) out.push(...descendants(Number(k)));
    }
  } catch {
    /* gone */
  }
  return out;
}

/** Sum of VmRSS over pid and all its descendants (nginx master + workers). */
function treeRss(pid: number): number {
  let total = 0;
  for (const p of descendants(pid)) {
    try {
      const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${p}/status`, 'utf8'));
      if (m) total += Number(m[1]) * 1024;
    } catch {
      /* gone */
    }
  }
  return total;
}

/** CPU seconds (user+sys) consumed so far by pid and its descendants. */
function treeCpuSeconds(pid: number): number {
  return descendants(pid).reduce((sum, p) => sum + cpuSeconds(p), 0);
}

async function waitHttp(url: string, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await fetch(url, { signal: AbortSignal.timeout(1_000) });
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`${what} not answering at ${url} after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

// ---- fast upstream: ../upstream-process.ts ----------------------------------------------

type Upstream = BenchUpstream;

// ---- targets ---------------------------------------------------------------------------

interface Target {
  name: string;
  kind: 'direct' | 'nginx' | 'glitch' | 'floor';
  /** Worker processes (nginx) or threads (Glitch). */
  parallelism: number;
  url: string;
  /** Process whose tree is the proxy (null for direct). */
  pid: number | null;
  /** Prometheus text from the target's admin port (Glitch), to say what errors were. */
  metrics?(): Promise<string>;
  stop(): Promise<void>;
}

async function startNginx(upstreamUrl: string, workers: number | 'auto'): Promise<Target> {
  const dir = mkdtempSync(join(tmpdir(), 'glitch-bench-nginx-'));
  chmodSync(dir, 0o755); // workers run as nobody
  const port = await freePort();
  const up = new URL(upstreamUrl);
  const conf = `
worker_processes ${workers};
worker_rlimit_nofile 20000;
daemon off;
master_process on;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 8192; multi_accept on; }
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  client_max_body_size 32m;
  client_body_buffer_size 1m;
  keepalive_requests 1000000;
  upstream anthropic {
    server ${up.hostname}:${up.port};
    keepalive 512;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location / {
      proxy_pass http://anthropic;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 3600s;
    }
  }
}
`;
  writeFileSync(join(dir, 'nginx.conf'), conf);
  const p = spawn('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')], { stdio: ['ignore', 'inherit', 'inherit'] });
  await waitHttp(`http://127.0.0.1:${port}/__stats`, 10_000, 'nginx');
  const n = workers === 'auto' ? NCPU : workers;
  return {
    name: `nginx ${workers === 'auto' ? `auto (${n} workers)` : `${n} worker`}`,
    kind: 'nginx',
    parallelism: n,
    url: `http://127.0.0.1:${port}`,
    pid: p.pid!,
    stop: async () => {
      await stopProcess(p);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The stack's floor (floor-relay.ts): uWS + node:net doing nothing but relay. */
async function startFloor(upstreamUrl: string): Promise<Target> {
  const { p, port } = await spawnListening(join('forwarder', 'floor-relay.ts'), [upstreamUrl], 'floor relay');
  return { name: 'floor: bare uWS + node:net relay, 1 thread', kind: 'floor', parallelism: 1, url: `http://127.0.0.1:${port}`, pid: p.pid!, stop: () => stopProcess(p) };
}

const key = testKey('tenant-bench', 'bench');
/** GLITCH_UPSTREAM_CONNECTIONS default (packages/config): far above the 1,000 streams held open here. */
const GLITCH_UPSTREAM_CONNECTIONS = 8192;

async function startGlitch(upstreamUrl: string, threads: number, recorder: boolean): Promise<Target & { child: ChildForwarder }> {
  const child = await startChild({
    upstreamUrl,
    keys: [key],
    threads,
    built: true,
    ...(recorder ? { entry: join(here, 'glitch-recording.mjs') } : {}),
    env: { GLITCH_LOG_LEVEL: 'error' },
  });
  const name = `glitch ${threads} thread${threads > 1 ? 's' : ''}${recorder ? ' + recorder' : ''}`;
  return { name, kind: 'glitch', parallelism: threads, url: child.url, pid: child.pid, child, metrics: async () => (await child.admin('/metrics')).body, stop: () => child.stop() };
}

// ---- measurements ----------------------------------------------------------------------

/** Prints what a throughput run's errors were: wrk's kinds, and Glitch's own error and refusal counters so far. */
async function reportErrors(tag: string, r: WrkResult, t: Target): Promise<void> {
  const kinds = Object.entries(r.errorKinds).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(', ');
  console.log(`[bench] ${tag}: ${r.errors} errors of ${r.requests} requests (wrk: ${kinds})`);
  if (!t.metrics) return;
  const lines = (await t.metrics()).split('\n').filter((l) => !l.startsWith('#') && /error|refus|backlog|status="5/.test(l) && !/ 0$/.test(l));
  for (const l of lines) console.log(`[bench]   ${l}`);
}

interface WrkResult {
  requests: number;
  duration_us: number;
  rps: number;
  errors: number;
  /** wrk's counts by kind; `status` is responses other than 2xx/3xx. */
  errorKinds: Record<'connect' | 'read' | 'write' | 'status' | 'timeout', number>;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  p999_ms: number;
  max_ms: number;
  mean_ms: number;
  proxyCpuMsPer1k: number | null;
}

function wrk(url: string, connections: number, seconds: number, bodyFile: string, pid: number | null): Promise<WrkResult> {
  const cpu0 = pid ? treeCpuSeconds(pid) : 0;
  return new Promise((res, rej) => {
    const p = spawn('wrk', ['-t1', `-c${connections}`, `-d${seconds}s`, '--timeout', '10s', '-s', join(here, 'wrk-post.lua'), `${url}/v1/messages?mode=json`], {
      env: { ...process.env, BENCH_BODY_FILE: bodyFile, BENCH_GLITCH_KEY: key.secret },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    p.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    p.once('exit', (code) => {
      const m = /BENCH_JSON (\{.*\})/.exec(out);
      if (code !== 0 || !m) return rej(new Error(`wrk failed (${code}): ${out}`));
      const j = JSON.parse(m[1]!) as Record<string, number>;
      const errorKinds = { connect: j.errors_connect!, read: j.errors_read!, write: j.errors_write!, status: j.errors_status!, timeout: j.errors_timeout! };
      const errors = Object.values(errorKinds).reduce((a, b) => a + b, 0);
      const cpu = pid ? treeCpuSeconds(pid) - cpu0 : null;
      res({
        requests: j.requests!,
        duration_us: j.duration_us!,
        rps: j.requests! / (j.duration_us! / 1e6),
        errors,
        errorKinds,
        p50_ms: j.p50_us! / 1000,
        p90_ms: j.p90_us! / 1000,
        p99_ms: j.p99_us! / 1000,
        p999_ms: j.p999_us! / 1000,
        max_ms: j.max_us! / 1000,
        mean_ms: j.mean_us! / 1000,
        proxyCpuMsPer1k: cpu === null ? null : (cpu * 1000 * 1000) / Math.max(1, j.requests!),
      });
    });
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** The run whose throughput is the median (the lower middle one for an even count). */
function medianRun(rs: WrkResult[]): WrkResult {
  const s = [...rs].sort((a, b) => a.rps - b.rps);
  return s[Math.floor((s.length - 1) / 2)]!;
}

function pct(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

interface SseResult {
  streams: number;
  eventsPerStream: number;
  gapMs: number;
  ttfe_p50_ms: number;
  ttfe_p99_ms: number;
  /** Arrival of event k minus (arrival of event 0 + k × gap): delay added after the first event. */
  lag_p50_ms: number;
  lag_p99_ms: number;
  failures: number;
}

/** Sequential SSE streams over one keep-alive connection; times every event's arrival. */
async function sseRun(url: string, streams: number, events: number, gap: number): Promise<SseResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const body = JSON.stringify({ model: 'claude-sonnet-4-6', max_tokens: 1024, stream: true, messages: [{ role: 'user', content: 'stream please' }] });
  const ttfe: number[] = [];
  const lags: number[] = [];
  let failures = 0;
  for (let s = 0; s < streams; s++) {
    const arrivals = await new Promise<number[] | null>((res) => {
      const t0 = performance.now();
      const times: number[] = [];
      const req = httpRequest(`${url}/v1/messages?mode=sse&events=${events}&gap=${gap}`, {
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-glitch-key': key.secret, 'x-api-key': 'sk-ant-bench', 'anthropic-version': '2023-06-01' },
      });
      req.on('response', (r) => {
        let pending = '';
        r.setEncoding('utf8');
        r.on('data', (c: string) => {
          const now = performance.now() - t0;
          pending += c;
          let i: number;
          while ((i = pending.indexOf('\n\n')) !== -1) {
            times.push(now);
            pending = pending.slice(i + 2);
          }
        });
        r.on('end', () => res(r.statusCode === 200 && times.length === events ? times : null));
        r.on('error', () => res(null));
      });
      req.on('error', () => res(null));
      req.end(body);
    });
    if (!arrivals) {
      failures++;
      continue;
    }
    ttfe.push(arrivals[0]!);
    // content_block_start leaves with message_start, event k (2 ≤ k ≤ N-4) k-1 gaps after
    // them, and the last 3 together one gap after the last delta (upstream.ts).
    for (let k = 1; k < events; k++) lags.push(arrivals[k]! - arrivals[0]! - Math.min(k - 1, events - 4) * gap);
  }
  agent.destroy();
  ttfe.sort((a, b) => a - b);
  lags.sort((a, b) => a - b);
  return { streams, eventsPerStream: events, gapMs: gap, ttfe_p50_ms: pct(ttfe, 50), ttfe_p99_ms: pct(ttfe, 99), lag_p50_ms: pct(lags, 50), lag_p99_ms: pct(lags, 99), failures };
}

interface MemoryResult {
  /** After the throughput, latency and SSE runs, with no stream open. */
  rssIdleMiB: number;
  rssWith1000OpenMiB: number;
  openStreamsEstablished: number;
  upstreamOpenAfterClose: number;
  rssAfter10000AbortedMiB: number;
  /**
   * After each further 10,000 aborted streams (ABORT_ROUNDS in all): a leak keeps growing,
   * garbage a collector has not reclaimed yet levels off.
   */
  rssAfterMoreAbortedMiB: number[];
  abortedSeenUpstream: number;
  /** The first 10,000. */
  abortSeconds: number;
}

/** Rounds of 10,000 aborted streams in the memory run. */
const ABORT_ROUNDS = 3;

/** Opens a stream that upstream holds open; resolves once the first bytes arrived (or null). */
function openHeldStream(url: string): Promise<{ close(): void } | null> {
  const body = '{"model":"claude-sonnet-4-6","max_tokens":8,"stream":true,"messages":[]}';
  return new Promise((res) => {
    const req = httpRequest(`${url}/v1/messages?mode=hold`, {
      method: 'POST',
      agent: false,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-glitch-key': key.secret, 'x-api-key': 'sk-ant-bench', 'anthropic-version': '2023-06-01' },
    });
    const timer = setTimeout(() => {
      req.destroy();
      res(null);
    }, 15_000);
    req.on('response', (r) => {
      r.once('data', () => {
        clearTimeout(timer);
        res({ close: () => req.destroy() });
      });
      r.on('error', () => undefined);
    });
    req.on('error', () => {
      clearTimeout(timer);
      res(null);
    });
    req.end(body);
  });
}

async function memoryRun(t: Target, upstream: Upstream): Promise<MemoryResult> {
  const pid = t.pid!;
  const settle = async (): Promise<number> => {
    const deadline = Date.now() + 15_000;
    let s = await upstream.stats();
    while (s.open > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      s = await upstream.stats();
    }
    return s.open;
  };
  await settle();
  const rssIdle = treeRss(pid);
  const opened = await Promise.all(Array.from({ length: 1_000 }, () => openHeldStream(t.url)));
  const live = opened.filter((o): o is { close(): void } => o !== null);
  await new Promise((r) => setTimeout(r, 500));
  const rssOpen = treeRss(pid);
  for (const o of live) o.close();
  const upstreamOpenAfterClose = await settle();

  const abortedBefore = (await upstream.stats()).aborted;
  const rssAfterRounds: number[] = [];
  let abortSeconds = 0;
  for (let round = 0; round < ABORT_ROUNDS; round++) {
    const t0 = Date.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: 100 }, async () => {
        while (next < 10_000) {
          next++;
          const s = await openHeldStream(t.url);
          s?.close();
        }
      }),
    );
    if (round === 0) abortSeconds = (Date.now() - t0) / 1000;
    await settle();
    await new Promise((r) => setTimeout(r, 1_000));
    rssAfterRounds.push(treeRss(pid) / MB);
  }
  return {
    rssIdleMiB: rssIdle / MB,
    rssWith1000OpenMiB: rssOpen / MB,
    openStreamsEstablished: live.length,
    upstreamOpenAfterClose,
    rssAfter10000AbortedMiB: rssAfterRounds[0]!,
    rssAfterMoreAbortedMiB: rssAfterRounds.slice(1),
    abortedSeenUpstream: (await upstream.stats()).aborted - abortedBefore,
    abortSeconds,
  };
}

// ---- placement ---------------------------------------------------------------------------

/** Sets the CPU affinity of every thread of each process (`taskset -a -p`). */
function setAffinity(pids: readonly number[], cpus: string): void {
  for (const pid of pids) {
    const r = spawnSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`taskset -a -p -c ${cpus} ${pid} failed: ${r.stderr.trim()}`);
  }
}

/**
 * A 1-thread target (1 nginx worker, 1 Glitch thread, the floor) gets core 0 to itself and
 * the load side (this process, hence the wrk it spawns, and the upstream) the other cores:
 * like with like, and no run where the proxy happens to share a core with wrk. Targets that
 * use every core (and direct) run unpinned.
 */
function placeFor(t: Target, upstreamPid: number): void {
  if (!PIN) return;
  const all = `0-${NCPU - 1}`;
  const single = t.parallelism === 1 && t.pid !== null;
  setAffinity([process.pid, upstreamPid], single ? `1-${NCPU - 1}` : all);
  if (t.pid !== null) setAffinity(descendants(t.pid), single ? '0' : all);
}

// ---- main ------------------------------------------------------------------------------

interface TargetResult {
  target: string;
  kind: Target['kind'];
  parallelism: number;
  /** The round with the median throughput. */
  throughput: WrkResult;
  throughputRounds: Array<{ rps: number; proxyCpuMsPer1k: number | null }>;
  /** Glitch and floor rows: throughput over nginx's of the same parallelism, per round and median. */
  vsNginx: { median: number; rounds: number[] } | null;
  latencyC1: WrkResult;
  addedLatencyC1: { p50_ms: number; p99_ms: number } | null;
  sse: SseResult | null;
  addedSse: { ttfe_p50_ms: number; ttfe_p99_ms: number; lag_p50_ms: number; lag_p99_ms: number } | null;
  memory: MemoryResult | null;
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'glitch-bench-'));
  const bodyFile = join(work, 'body.json');
  // A 10 KB Messages request shaped like Claude Code's (model, messages, system, tools, metadata, max_tokens, stream).
  const req = { model: 'claude-sonnet-4-6', messages: [{ role: 'user', content: '' }], system: 'You are a helpful assistant.', metadata: { user_id: 'bench' }, max_tokens: 1024, stream: false };
  const filler = 'Please review the following code and suggest improvements. '.repeat(200);
  req.messages[0]!.content = filler.slice(0, 10_240 - Buffer.byteLength(JSON.stringify(req)));
  writeFileSync(bodyFile, JSON.stringify(req));
  const bodyBytes = Buffer.byteLength(JSON.stringify(req));

  const upstream = await startUpstream();
  console.log(`[bench] ${NCPU} cores (${cpus()[0]?.model ?? '?'}), node ${process.version}, ${nginxVersion}, ${wrkVersion}`);
  console.log(`[bench] upstream ${upstream.url} (uWS, own process); body ${bodyBytes} B; ${ROUNDS} interleaved rounds of ${DURATION_S}s × 64 connections per target, latency runs 5s × 1 connection`);
  console.log(`[bench] SSE: ${SSE_STREAMS} sequential streams × ${SSE_EVENTS} events ${SSE_GAP_MS} ms apart; Glitch runs compiled with default settings (GLITCH_UPSTREAM_CONNECTIONS=${GLITCH_UPSTREAM_CONNECTIONS}; nginx has no upstream cap)`);
  console.log('[bench] note: wrk, the upstream and the proxy share these cores, so absolute throughput is a floor; compare rows, and proxy CPU per 1k requests. p99 at concurrency 1 is dominated by scheduler noise (see direct).');

  // Targets run in interleaved rounds (each round visits every target once, in the same
  // order) so that slow drift of this shared machine hits all of them alike; a target's
  // throughput is the median of its rounds, and its ratio to nginx is the median of the
  // per-round ratios (paired, so less noisy than a ratio of medians). Latency and SSE run
  // in the first round only. The memory runs (1,000 held streams, 10,000 aborts) come last,
  // in a pass of their own: they leave thousands of sockets behind, which slowed whichever
  // target ran next by up to half.
  const plan: Array<() => Promise<Target>> = [
    async () => ({ name: 'direct', kind: 'direct', parallelism: 0, url: upstream.url, pid: null, stop: async () => undefined }),
    () => startNginx(upstream.url, 1),
    () => startFloor(upstream.url),
    () => startGlitch(upstream.url, 1, false),
    () => startGlitch(upstream.url, 1, true),
    () => startNginx(upstream.url, 'auto'),
    () => startGlitch(upstream.url, NCPU, false),
    () => startGlitch(upstream.url, NCPU, true),
  ];
  const runs = new Map<string, { target: Target; rounds: WrkResult[]; latencyC1: WrkResult; sse: SseResult | null }>();
  const order: string[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    for (const start of plan) {
      const t = await start();
      if (ONLY && !ONLY.includes(t.kind)) {
        await t.stop();
        continue;
      }
      try {
        placeFor(t, upstream.pid);
        const tag = `${t.name} (round ${round + 1}/${ROUNDS})`;
        console.log(`[bench] ${tag}: warm-up, throughput`);
        await wrk(t.url, 16, 2, bodyFile, t.pid);
        const throughput = await wrk(t.url, 64, DURATION_S, bodyFile, t.pid);
        if (throughput.errors > 0) await reportErrors(tag, throughput, t);
        const seen = runs.get(t.name);
        if (seen) seen.rounds.push(throughput);
        else {
          console.log(`[bench] ${tag}: latency at concurrency 1, SSE`);
          const latencyC1 = await wrk(t.url, 1, 5, bodyFile, t.pid);
          // The floor relay does not stream.
          const sse = t.kind === 'floor' ? null : await sseRun(t.url, SSE_STREAMS, SSE_EVENTS, SSE_GAP_MS);
          runs.set(t.name, { target: t, rounds: [throughput], latencyC1, sse });
          order.push(t.name);
        }
      } catch (e) {
        console.error(`[bench] ${t.name} failed: ${(e as Error).stack}`);
        process.exitCode = 1;
      } finally {
        await t.stop();
      }
    }
  }

  const memory = new Map<string, MemoryResult>();
  for (const start of plan.slice(1)) {
    const t = await start();
    // The floor relay holds no streams (no SSE): nothing to measure there.
    if ((ONLY && !ONLY.includes(t.kind)) || t.kind === 'floor') {
      await t.stop();
      continue;
    }
    try {
      placeFor(t, upstream.pid);
      console.log(`[bench] ${t.name}: load, then memory (1,000 open streams, 10,000 aborted)`);
      await wrk(t.url, 64, Math.min(DURATION_S, 5), bodyFile, t.pid);
      memory.set(t.name, await memoryRun(t, upstream));
    } catch (e) {
      console.error(`[bench] ${t.name} memory run failed: ${(e as Error).stack}`);
      process.exitCode = 1;
    } finally {
      await t.stop();
    }
  }

  const results: TargetResult[] = [];
  const direct = runs.get('direct');
  for (const name of order) {
    const r = runs.get(name)!;
    const t = r.target;
    // The nginx row of the same parallelism, for the paired per-round ratio.
    const nginx = t.kind === 'glitch' || t.kind === 'floor' ? [...runs.values()].find((o) => o.target.kind === 'nginx' && o.target.parallelism === t.parallelism) : undefined;
    const ratios = nginx ? r.rounds.slice(0, nginx.rounds.length).map((x, i) => x.rps / nginx.rounds[i]!.rps) : [];
    results.push({
      target: name,
      kind: t.kind,
      parallelism: t.parallelism,
      throughput: medianRun(r.rounds),
      throughputRounds: r.rounds.map((x) => ({ rps: x.rps, proxyCpuMsPer1k: x.proxyCpuMsPer1k })),
      vsNginx: ratios.length > 0 ? { median: median(ratios), rounds: ratios } : null,
      latencyC1: r.latencyC1,
      addedLatencyC1: direct && t.kind !== 'direct' ? { p50_ms: r.latencyC1.p50_ms - direct.latencyC1.p50_ms, p99_ms: r.latencyC1.p99_ms - direct.latencyC1.p99_ms } : null,
      sse: r.sse,
      addedSse:
        direct?.sse && r.sse && t.kind !== 'direct'
          ? {
              ttfe_p50_ms: r.sse.ttfe_p50_ms - direct.sse.ttfe_p50_ms,
              ttfe_p99_ms: r.sse.ttfe_p99_ms - direct.sse.ttfe_p99_ms,
              lag_p50_ms: r.sse.lag_p50_ms - direct.sse.lag_p50_ms,
              lag_p99_ms: r.sse.lag_p99_ms - direct.sse.lag_p99_ms,
            }
          : null,
      memory: memory.get(name) ?? null,
    });
  }
  await upstream.stop();
  rmSync(work, { recursive: true, force: true });

  printTable(results);
  mkdirSync(resultsDir, { recursive: true });
  const file = join(resultsDir, `forwarder-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(
    file,
    JSON.stringify(
      {
        when: new Date().toISOString(),
        machine: { cores: NCPU, cpu: cpus()[0]?.model, node: process.version, nginx: nginxVersion, wrk: wrkVersion },
        config: { bodyBytes, rounds: ROUNDS, pinned: PIN, throughputSeconds: DURATION_S, throughputConnections: 64, latencyConnections: 1, sse: { streams: SSE_STREAMS, events: SSE_EVENTS, gapMs: SSE_GAP_MS }, glitchUpstreamConnections: GLITCH_UPSTREAM_CONNECTIONS },
        results,
      },
      null,
      2,
    ),
  );
  console.log(`[bench] results written to ${file}`);
}

function f(n: number | null | undefined, d = 2): string {
  return n === null || n === undefined || Number.isNaN(n) ? '—' : n.toFixed(d);
}

function printTable(rs: TargetResult[]): void {
  const rows: string[][] = [
    ['target', 'req/s (c64)', 'vs nginx', 'rounds req/s', 'p50 ms', 'p99 ms', 'errors', 'proxy CPU ms/1k req', 'c1 p50', 'c1 p99', '+p50', '+p99', 'SSE TTFE p50', '+TTFE p50', '+TTFE p99', '+lag p50', '+lag p99'],
  ];
  for (const r of rs) {
    rows.push([
      r.target,
      f(r.throughput.rps, 0),
      r.vsNginx ? `${f(r.vsNginx.median)}×` : '—',
      r.throughputRounds.map((x) => f(x.rps / 1000, 1) + 'k').join(' '),
      f(r.throughput.p50_ms),
      f(r.throughput.p99_ms),
      String(r.throughput.errors + r.latencyC1.errors + (r.sse?.failures ?? 0)),
      f(r.throughput.proxyCpuMsPer1k, 1),
      f(r.latencyC1.p50_ms, 3),
      f(r.latencyC1.p99_ms, 3),
      f(r.addedLatencyC1?.p50_ms, 3),
      f(r.addedLatencyC1?.p99_ms, 3),
      f(r.sse?.ttfe_p50_ms, 3),
      f(r.addedSse?.ttfe_p50_ms, 3),
      f(r.addedSse?.ttfe_p99_ms, 3),
      f(r.addedSse?.lag_p50_ms, 3),
      f(r.addedSse?.lag_p99_ms, 3),
    ]);
  }
  printRows(rows);
  const mem: string[][] = [['target', 'RSS after load MiB', 'RSS 1,000 open MiB', 'streams open', 'upstream left open', 'RSS after 10,000 aborted MiB', `then after each 10,000 more (to ${ABORT_ROUNDS * 10},000)`, 'aborts seen upstream', 'abort run s (10,000)']];
  for (const r of rs) {
    if (!r.memory) continue;
    const m = r.memory;
    mem.push([r.target, f(m.rssIdleMiB, 1), f(m.rssWith1000OpenMiB, 1), String(m.openStreamsEstablished), String(m.upstreamOpenAfterClose), f(m.rssAfter10000AbortedMiB, 1), m.rssAfterMoreAbortedMiB.map((x) => f(x, 1)).join(' '), String(m.abortedSeenUpstream), f(m.abortSeconds, 1)]);
  }
  console.log('');
  printRows(mem);
}

function printRows(rows: string[][]): void {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  rows.forEach((r, idx) => {
    console.log(r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '));
    if (idx === 0) console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
