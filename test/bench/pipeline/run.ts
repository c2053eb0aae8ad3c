// Pipeline bench (not part of `npm test`; `npm run bench:pipeline`, also run by `npm run bench`):
//
// 1. Added latency: the same paced load (Claude Code-like streaming turns) straight to the
//    upstream, through the forwarder with recording off, and with recording on
//    (RecordPublisher → Kafka). Added latency = through the forwarder − direct; the goal is
//    that recording changes it by < 5 %. The targets take turns in short blocks (one second
//    of load each by default), in rotating order, many times over: on this shared VM the same
//    work runs up to ~30 % slower for minutes at a time, so long rounds one after the other
//    compare the machine's moods, not the targets. The turns are split into epochs, each with
//    freshly started forwarders: two processes of one build differ by up to ±20 % in added
//    latency for their whole life, so one pair per run compares processes, not recording.
//    Which forwarder starts first, and which comes first in every order the bench picks,
//    alternate over epochs (an A/A run, --control=aa, checks that nothing else favors a slot).
//    The verdict comes with a 90 % bootstrap interval over epochs and turns. Also prints each
//    process's CPU per request (the recording forwarder's split by thread role: relay,
//    main/recording, the rest; the load generator and the upstream per target's blocks) and
//    interrupts per request on each CPU.
// 2. Throughput: records/s through forwarder → Kafka (publisher acks) and on into ClickHouse
//    (ingest inserts), for a burst of exchanges at high concurrency.
//
// The forwarders run in their own processes (test/support/pipeline-sensor.ts), as the
// services run them (recording at SCHED_IDLE on CPUs of its own); ingest in another
// (test/support/pipeline-ingest.ts, chDB); the upstream in another (../upstream-process.ts);
// the load generator in this one, which should run with V8's --single-threaded-gc
// (scripts/bench.mjs passes it): its parallel GC helpers otherwise take both cores for ~10 ms
// every ~0.7 s and stall the forwarder under test. The recording-off forwarder's threads are
// placed where the recording one placed its own (--off-pin), and the broker, which stands in
// for machines elsewhere, on the recording CPUs (--broker-cpus); the load generator and the upstream where --shared-cpus says. Kafka: a private librdkafka
// mock (it keeps ~5 MiB per partition, so bursts are sized to fit). Prints a table and writes
// JSON to test/bench/results/ (gitignored).
//
//   npm run bench:pipeline -- --blocks=60 --epochs=6 --block=300 --concurrency=16 --body=16384 --threads=1
//   npm run bench:pipeline -- --only=latency   (or --only=throughput: one phase)
//   npm run bench:pipeline -- --only=latency --warmup=300   (requests per target before an epoch's blocks; default 8000)
//   npm run bench:pipeline -- --recording-priority=normal   (default idle, as the services run)
//   npm run bench:pipeline -- --recording-cpus=off   (recording forwarders without CPUs of their own; default auto, as the services run)
//   npm run bench:pipeline -- --only=latency --control=aa   (A/A: neither forwarder records; checks the bench's bias)
//   npm run bench:pipeline -- --off-relay=main   (the recording-off forwarder's relay in its main thread)
//   npm run bench:pipeline -- --off-pin=none   (the recording-off forwarder unpinned, as a forwarder without recorder runs; default same)
//   npm run bench:pipeline -- --broker-cpus=any   (the broker unpinned; default recording) --broker-priority=idle (SCHED_IDLE)
//   npm run bench:pipeline -- --block-log=/tmp/blocks.txt   (each block's target and CLOCK_MONOTONIC span, to split a perf sched trace)
//   npm run bench:pipeline -- --request-log=/tmp/requests.txt   (each measured request's target, CLOCK_MONOTONIC start and latency, to find the slowest in such a trace)
//   npm run bench:pipeline -- --shared-cpus=relay   (load generator and upstream on the relay CPUs, off the recording CPU; default any)
//   npm run bench:pipeline -- --upstream=inproc   (the tests' mock upstream inside this process; default its own process)
//   npm run bench:pipeline -- --only=latency --variant-flags="--max-semi-space-size=8"   (a fourth target: a second recording forwarder run differently; also --variant-env=K=V,…, --variant-config='{"recordingPriority":"normal"}' and --variant-pin=0/1)
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { appendFileSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { uniqueName } from '../../harness/env.js';
import { privateKafkaMock } from '../../harness/kafka.js';
import { repoRoot, testKey } from '../../support/forwarder.js';
import { reply, startMockUpstream } from '../../support/mock-upstream.js';
import { pipelineTopics, messageBody, waitFor } from '../../support/pipeline.js';
import { startIngestChild } from '../../support/pipeline-ingest.js';
import { startSensorChild, type SensorChild, type SensorChildConfig } from '../../support/pipeline-sensor.js';
import { addInterrupts, addThreadCounters, cpuSeconds, interruptCounts, memoryMonitorThreads, noThreadCounters, processMemory, runSeconds, threadCounters, threadCountersPer, type InterruptCounts, type ProcessMemory, type ThreadCounters } from '../proc.js';
import { threadCpuList } from '../../support/threads.js';
import { startBenchUpstream } from '../upstream-process.js';
import { formatCpuList, parseCpuList } from '@glitch/config';
import { allowedCpus, planCpus, type RecordingCpus } from '@glitch/forwarder';
import type { PublisherStats } from '@glitch/recorder';

const args = new Map(process.argv.slice(2).map((a) => {
  const kv = a.replace(/^--/, '');
  const eq = kv.indexOf('=');
  return (eq === -1 ? [kv, ''] : [kv.slice(0, eq), kv.slice(eq + 1)]) as [string, string];
}));
const num = (name: string, fallback: number) => (args.has(name) ? Number(args.get(name)) : fallback);
/** Latency phase: this many turns of the three targets, each a block of `block` requests. */
const BLOCKS = num('blocks', 60);
const BLOCK_REQUESTS = num('block', 300);
/** The latency phase's turns are split over this many epochs, each with freshly started forwarders. */
const EPOCHS = Math.max(1, Math.min(num('epochs', 6), BLOCKS));
const CONCURRENCY = num('concurrency', 16);
const BODY_BYTES = num('body', 16 * 1024);
const THREADS = num('threads', 1);
const BURST = num('burst', 4000);
const BURST_CONCURRENCY = num('burst-concurrency', 64);
/** Paced load for the latency phase (requests started per second); 0 = closed loop (saturation). */
const RATE = num('rate', 300);
/** Recording threads' priority (`idle`, the services' default, or `normal`). */
const PRIORITY = (args.get('recording-priority') ?? 'idle') as 'idle' | 'normal';
if (PRIORITY !== 'idle' && PRIORITY !== 'normal') {
  console.error(`--recording-priority must be idle or normal (got ${String(PRIORITY)})`);
  process.exit(2);
}
/**
 * Where the recording-off forwarder's one relay thread runs: `worker` (default; as with
 * recording on, and as every forwarder with more than one thread runs) or `main` (what a
 * one-thread forwarder without a recorder does by default).
 */
const OFF_RELAY = args.get('off-relay') ?? 'worker';
if (OFF_RELAY !== 'worker' && OFF_RELAY !== 'main') {
  console.error(`--off-relay must be worker or main (got ${OFF_RELAY})`);
  process.exit(2);
}
/**
 * `--control=aa`: the "recording on" forwarder does not record either (an A/A run). What it
 * then measures as "recording on vs off" is the bench's own bias and noise, which should be
 * near 0: check it before trusting a result near the goal. Its threads are pinned where a
 * recording forwarder places its own (until 2026-12-05 night A/A runs ran every forwarder unpinned).
 */
const CONTROL_AA = args.get('control') === 'aa';
if (args.has('control') && !CONTROL_AA) {
  console.error(`--control must be aa (got ${args.get('control')})`);
  process.exit(2);
}
/**
 * The Kafka broker's scheduling during the latency phase: `normal` (default) or `idle`
 * (SCHED_IDLE, via chrt). The broker stands in for a cluster on other machines; `idle` checks
 * whether its wake-ups on these two shared cores are what recording costs the relay (three
 * 60-turn runs, 2026-12-05: +5.0, +13.0, +6.7 % against +13.6 % at normal: no clear effect).
 * The throughput phase always runs it at normal priority.
 */
const BROKER_PRIORITY = args.get('broker-priority') ?? 'normal';
if (BROKER_PRIORITY !== 'idle' && BROKER_PRIORITY !== 'normal') {
  console.error(`--broker-priority must be idle or normal (got ${BROKER_PRIORITY})`);
  process.exit(2);
}
/** Whether `text` looks like a taskset CPU list (0, 0-1, 0,2). */
const isCpuList = (text: string) => /^[0-9][0-9,-]*$/.test(text);

/** `--<name>=RELAY_CPUS/OTHER_CPUS` (taskset lists, e.g. 0/1), or null when not given. */
function cpuPair(name: string): { relay: string; other: string } | null {
  const value = args.get(name);
  if (value === undefined) return null;
  const parts = value.split('/');
  if (parts.length !== 2 || !parts.every(isCpuList)) {
    console.error(`--${name} must be RELAY_CPUS/OTHER_CPUS, e.g. 0/1 (got ${value})`);
    process.exit(2);
  }
  return { relay: parts[0]!, other: parts[1]! };
}

/** `--<name>`: one of `keywords` or a CPU list (`example` in the error), `fallback` when not given. */
function placementArg(name: string, fallback: string, keywords: readonly string[], example: string): string {
  const value = args.get(name) ?? fallback;
  if (!keywords.includes(value) && !isCpuList(value)) {
    console.error(`--${name} must be ${keywords.join(', ')} or a CPU list such as ${example} (got ${value})`);
    process.exit(2);
  }
  return value;
}

/**
 * A fourth target for comparisons within one run (the machine's moods make comparisons
 * across runs unreliable): a second recording forwarder started with `--variant-flags`
 * (node flags, space-separated) and/or `--variant-env` (K=V,K2=V2) and/or `--variant-config`
 * (JSON merged into its SensorChildConfig, e.g. '{"recordingPriority":"normal"}'), and/or with its threads
 * pinned by `--variant-pin=RELAY/OTHER` (CPU lists for taskset, e.g. 0/1). Reported against
 * recording off and against the plain recording forwarder.
 */
const VARIANT: { nodeFlags: string[]; env: Record<string, string>; config: Partial<SensorChildConfig>; pin: { relay: string; other: string } | null; describe: string } | null = (() => {
  const flags = args.get('variant-flags');
  const env = args.get('variant-env');
  const configJson = args.get('variant-config');
  const pin = args.get('variant-pin');
  if (flags === undefined && env === undefined && configJson === undefined && pin === undefined) return null;
  let config: Partial<SensorChildConfig> = {};
  try {
    const parsed: unknown = JSON.parse(configJson ?? '{}');
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
    config = parsed as Partial<SensorChildConfig>;
  } catch {
    console.error(`--variant-config must be a JSON object of sensor options, e.g. '{"recordingPriority":"normal"}' (got ${configJson})`);
    process.exit(2);
  }
  // Split at the first '=': a value may hold more (GLIBC_TUNABLES=glibc.malloc.x=1).
  const envPairs = (env ?? '').split(',').filter((kv) => kv !== '').map((kv) => {
    const at = kv.indexOf('=');
    return at < 0 ? [kv] : [kv.slice(0, at), kv.slice(at + 1)];
  });
  if (envPairs.some((kv) => kv.length !== 2 || kv[0] === '')) {
    console.error(`--variant-env must be K=V,K2=V2 (got ${env})`);
    process.exit(2);
  }
  return {
    nodeFlags: (flags ?? '').split(' ').filter((f) => f !== ''),
    env: Object.fromEntries(envPairs) as Record<string, string>,
    config,
    pin: cpuPair('variant-pin'),
    describe: [flags && `flags ${flags}`, env && `env ${env}`, configJson && `config ${configJson}`, pin && `pinned relay/other ${pin}`].filter(Boolean).join(', '),
  };
})();
/** Recording forwarders' GLITCH_RECORDING_CPUS (`auto`, as the services run, `off`, or a CPU list). */
const RECORDING_CPUS_ARG = args.get('recording-cpus') ?? 'auto';
const RECORDING_CPUS: RecordingCpus = RECORDING_CPUS_ARG === 'auto' || RECORDING_CPUS_ARG === 'off' ? RECORDING_CPUS_ARG : parseCpuList(RECORDING_CPUS_ARG);
/** Where the upstream runs (see startUpstream). */
const UPSTREAM = args.get('upstream') ?? 'process';
if (UPSTREAM !== 'process' && UPSTREAM !== 'inproc') {
  console.error(`--upstream must be process or inproc (got ${UPSTREAM})`);
  process.exit(2);
}
/** The request path: the canned upstream reads what to answer from the query (forwarders relay it unchanged). */
const UPSTREAM_PATH = UPSTREAM === 'process' ? '/v1/messages?beta=true&mode=sse&events=8&gap=0' : '/v1/messages?beta=true';
/**
 * `--off-pin`: where the recording-off forwarder's threads run. `same` (default): on the CPUs
 * the recording forwarder gave its relay and its other threads (GLITCH_RECORDING_CPUS=auto
 * keeps them apart), so "on vs off" measures recording, not recording plus a CPU layout that
 * by itself made relaying faster here (docs/benchmarks.md); `none`: as a forwarder without a
 * recorder runs (anywhere); or RELAY_CPUS/OTHER_CPUS.
 */
const OFF_PIN_ARG = args.get('off-pin') ?? 'same';
const OFF_PIN: 'same' | 'none' | { relay: string; other: string } = OFF_PIN_ARG === 'same' || OFF_PIN_ARG === 'none' ? OFF_PIN_ARG : cpuPair('off-pin')!;
/**
 * `--broker-cpus`: where the Kafka broker runs during the latency phase. It stands in for a
 * cluster on other machines, and only the recording forwarders make it work (~50 µs of CPU
 * per record). `recording` (default): on the recording forwarder's recording CPUs, the
 * nearest thing to elsewhere here; `any`: wherever the kernel puts it; or a CPU list.
 */
const BROKER_CPUS = placementArg('broker-cpus', 'recording', ['recording', 'any'], '1');
/**
 * `--shared-cpus`: where the processes every target shares run during the latency phase: the
 * load generator (this process) and the upstream process. They stand in for Claude Code and
 * the Anthropic API, which run on other machines. `any` (default): wherever the kernel puts
 * them; `relay`: on the recording forwarder's relay CPUs, which leaves its recording CPUs to
 * recording and the broker, as on a forwarder host; or a CPU list. Applies to every target alike.
 */
const SHARED_CPUS = placementArg('shared-cpus', 'any', ['relay', 'any'], '0');
/**
 * `--block-log=FILE`: appends one line per measured block, `<target> <start> <end> <epoch>`
 * (CLOCK_MONOTONIC ns, as `perf record -k CLOCK_MONOTONIC` stamps events), so a trace taken
 * alongside (perf sched) can be split by target.
 */
const BLOCK_LOG = args.get('block-log');
/**
 * `--request-log=FILE`: appends one line per measured request, `<target> <start> <latency> <epoch>`
 * (start in CLOCK_MONOTONIC ns, latency in µs), to match the slowest requests against such a trace.
 */
const REQUEST_LOG = args.get('request-log');
/** Pause after every block (ms), the same for every target (see latencyPhase). */
const GAP_MS = num('gap', 50);
/**
 * Requests per target (unpaced, --concurrency at a time) before each epoch's measured blocks. A
 * production forwarder has run for hours: with 300, most of a request's functions were still
 * unoptimized when measuring began (--trace-opt), and that measured V8's warm-up, which
 * recording lengthens (docs/benchmarks.md, 2026-12-05 late).
 */
const WARMUP_REQUESTS = num('warmup', 8000);
/** `--only=latency` or `--only=throughput` runs one phase (default both). */
const ONLY = args.get('only');
if (ONLY !== undefined && ONLY !== 'latency' && ONLY !== 'throughput') {
  console.error(`--only must be latency or throughput (got ${ONLY})`);
  process.exit(2);
}
/** Whether this process (load generator + mock upstream) runs without V8's GC helper threads (see the top). */
const SINGLE_THREADED_GC = process.execArgv.includes('--single-threaded-gc');
for (const gone of ['requests', 'rounds']) {
  if (args.has(gone)) {
    console.error(`--${gone} is gone: the latency phase runs --blocks turns of --block requests per target`);
    process.exit(2);
  }
}

interface LatencyResult {
  target: string;
  requests: number;
  seconds: number;
  rps: number;
  p10: number;
  p25: number;
  p50: number;
  p90: number;
  p99: number;
  mean: number;
}

/** Every thread of `pid` to SCHED_IDLE or back to SCHED_OTHER (util-linux chrt). */
function setSchedulingPolicy(pid: number, policy: 'idle' | 'normal'): void {
  try {
    execFileSync('chrt', ['--all-tasks', policy === 'idle' ? '--idle' : '--other', '--pid', '0', String(pid)], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    throw new Error(`could not set the Kafka broker (pid ${pid}) to ${policy} priority with chrt (util-linux: apt-get install util-linux), or run with --broker-priority=normal: ${(e as Error).message}`);
  }
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/**
 * `concurrency` keep-alive clients sending turns. With `rate`, request i starts no earlier than
 * i/rate s after the start (a paced load below saturation: latency is the forwarder's, not
 * queueing behind a saturated CPU); without, back to back (closed loop).
 */
async function load(url: string, key: string | null, requests: number, concurrency: number, body: (i: number) => Buffer, rate = 0, sharedAgent?: Agent): Promise<{ latencies: number[]; starts: bigint[]; seconds: number; errors: number; refused: number }> {
  const path = UPSTREAM_PATH;
  const agent = sharedAgent ?? new Agent({ keepAlive: true, maxSockets: concurrency });
  const u = new URL(url);
  const latencies: number[] = [];
  const starts: bigint[] = [];
  let next = 0;
  let errors = 0;
  let refused = 0; // 503: turned away unrelayed (recording backlog), so never recorded
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      const session = randomUUID(); // one session per client: records spread over partitions
      while (next < requests) {
        const i = next++;
        if (rate > 0) {
          const due = started + (i * 1000) / rate - performance.now();
          if (due > 0) await new Promise((r) => setTimeout(r, due));
        }
        const b = body(i);
        const startedAt = process.hrtime.bigint();
        const status = await new Promise<number>((resolve) => {
          const req = request(
            {
              host: u.hostname,
              port: u.port,
              path,
              method: 'POST',
              agent,
              headers: {
                'content-type': 'application/json',
                'content-length': String(b.length),
                'x-api-key': 'sk-ant-api03-bench',
                'anthropic-version': '2023-06-01',
                'x-claude-code-session-id': session,
                ...(key ? { 'x-glitch-key': key } : {}),
              },
            },
            (res) => {
              res.on('data', () => {});
              res.on('end', () => resolve(res.statusCode ?? 0));
              res.on('error', () => resolve(0));
            },
          );
          req.on('error', () => resolve(0));
          req.end(b);
        });
        latencies.push(Number(process.hrtime.bigint() - startedAt) / 1e6);
        starts.push(startedAt);
        if (status !== 200) errors++;
        if (status === 503) refused++;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  if (!sharedAgent) agent.destroy();
  return { latencies, starts, seconds, errors, refused };
}

function summarize(target: string, r: { latencies: number[]; seconds: number }): LatencyResult {
  const sorted = [...r.latencies].sort((a, b) => a - b);
  const mean = meanOf(sorted);
  return { target, requests: sorted.length, seconds: r.seconds, rps: sorted.length / r.seconds, p10: percentile(sorted, 10), p25: percentile(sorted, 25), p50: percentile(sorted, 50), p90: percentile(sorted, 90), p99: percentile(sorted, 99), mean };
}

const ms = (n: number) => n.toFixed(3);
const meanOf = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** Even epochs start the recording-off forwarder first, odd ones the recording one: the order alternates, so it cancels in the mean. */
const offStartsFirst = (epoch: number) => epoch % 2 === 0;

/** Per-epoch values split in two: the epochs `inFirst` holds for, then the others. */
function splitEpochs<T>(perEpoch: readonly T[], inFirst: (epoch: number) => boolean): [T[], T[]] {
  return [perEpoch.filter((_, i) => inFirst(i)), perEpoch.filter((_, i) => !inFirst(i))];
}

/**
 * Epochs 2–3, 6–7, … are mirrored: every order the bench chooses (warm-up, the turns' block
 * orders, agents, stats polls) has the two forwarders swapped. Until 2026-12-06 those orders
 * were fixed (the recording-off forwarder's blocks came first in every warm-up round and in
 * each epoch's first turn), and six A/A runs put the identical "on" slot 1.4–6.3 % faster
 * (mean −4.4 %), its relay thread using ~4 % less CPU and faulting less; three mirrored A/A
 * runs pooled −0.2 % (docs/benchmarks.md). Crossed with the start order, so each of the
 * four combinations gets a quarter of the epochs.
 */
const mirrored = (epoch: number) => Math.floor(epoch / 2) % 2 === 1;
const swapSlots = (t: Target): Target => (t === 'off' ? 'on' : t === 'on' ? 'off' : t);
/** `targets` in the order epoch `epoch` uses: as listed, or with the two forwarders swapped. */
const inEpochOrder = <T extends Target>(epoch: number, targets: readonly T[]): T[] => (mirrored(epoch) ? targets.map((t) => swapSlots(t) as T) : [...targets]);

/** The bootstrap's stratum of an epoch: its start order and whether it is mirrored. */
const designCell = (epoch: number) => (offStartsFirst(epoch) ? 0 : 1) + (mirrored(epoch) ? 2 : 0);

interface Setup {
  mock: Awaited<ReturnType<typeof privateKafkaMock>>;
  /** The upstream's address (a forwarder's GLITCH_UPSTREAM_URL; direct load goes there). */
  up: { url: string; pid: number | null };
  key: ReturnType<typeof testKey>;
  body: (i: number) => Buffer;
  sensorConfig: (recording: boolean, topic: string) => SensorChildConfig;
}

type Target = 'direct' | 'off' | 'on' | 'variant';
/** The forwarders that record (and whose records must be in Kafka before the next block). */
type Recording = 'on' | 'variant';

/** Added latency (forwarder − direct) of `k` over recording off's, in %, from the three means. */
function addedVsOffPct(k: number, off: number, direct: number): number {
  return ((k - off) / (off - direct)) * 100;
}

interface LatencyReport {
  blocks: number;
  blockRequests: number;
  /** Every measured request of a target pooled together. */
  pooled: Partial<Record<Target, LatencyResult>>;
  /** Pooled, forwarder − direct. */
  addedOff: { p50: number; p99: number; mean: number };
  addedOn: { p50: number; p99: number; mean: number };
  /**
   * Pooled, added latency (forwarder − direct) with recording on over off: the goal's
   * measure, as the issue words it; ci90: the 5th and 95th percentile of the same measure
   * over BOOTSTRAP resamplings of epochs and of turns within them (bootstrap90).
   */
  addedOnVsOffPct: { mean: number; p50: number; ci90: [number, number] };
  /** With --variant-*: the same for the variant forwarder, over off, and the variant over on (% of on's added latency). */
  variant?: { describe: string; addedVsOffPct: { mean: number; p50: number; ci90: [number, number] }; addedVsOnPct: { mean: number; ci90: [number, number] } };
  /** Pooled mean end-to-end latency through the forwarder, recording on over off. */
  recordingOnVsOffPct: number;
  /** Pooled p50, on over off. */
  recordingOnVsOffP50Pct: number;
  /** CPU lists: the recording forwarder's relay and other threads (as it placed them), what the off forwarder and the broker were pinned to (null: not pinned). */
  placement: { on: { relay: string; other: string }; off: { relay: string; other: string } | null; broker: string | null; shared: string | null } | null;
  /** Per epoch (one pair of forwarder processes), the goal's measure from that epoch's blocks alone. */
  perEpochAddedOnVsOffPct: number[];
  /** The same by start order (even epochs start the recording-off forwarder first), from those epochs' mean added latencies. */
  byStartOrder: { offFirst: number; onFirst: number };
  /** The same by block order (see `mirrored`): epochs with the bench's orders as listed, and mirrored ones (NaN with fewer than 3 epochs). */
  byBlockOrder: { asListed: number; mirrored: number };
  /** Per epoch, each forwarder's added latency (its blocks' mean − direct's, ms); `variant` in runs with one. */
  perEpochAddedMs: { off: number; on: number; variant?: number }[];
  /** Records of the recording forwarder not yet handed to Kafka when its block ended: median and max. */
  backlogAtBlockEnd: { median: number; max: number };
  /** DAMON's kernel threads (kdamond) at the start of the phase, and how long they ran during each target's blocks. */
  memoryMonitor: { threads: number; msPerBlock: Partial<Record<Target, number>> };
  /** Per turn (the two forwarders' blocks within the same few seconds), mean on over off, and their median. */
  perTurnOnVsOffPct: { median: number; turns: number[] };
  /**
   * CPU per measured request, µs, from the first measured block until recording caught up:
   * each sensor process (the recording ones by thread role), and the broker.
   */
  cpuPerRequestUs: { sensorOff: number; sensorOn: number; broker: number; sensorOffRelay: number; sensorOnThreads: ThreadCpu; sensorVariantThreads?: ThreadCpu };
  /** Per measured request, over the same span: the forwarders' relay threads' minor page faults and context switches (voluntary: it waited for work; involuntary: preempted). */
  relayCountersPerRequest: Partial<Record<Recording | 'off', ThreadCounters>>;
  /** Each forwarder's resident memory at the end of each epoch's blocks, the median over epochs. */
  memoryAtEpochEnd: Partial<Record<Recording | 'off', ProcessMemory>>;
  /**
   * CPU per request of the processes every target shares, during each target's blocks: the
   * load generator (this process) and the upstream (null in-process). Work that only gets
   * slower beside recording (caches, the other vCPU) shows here, not in the forwarder's.
   */
  sharedCpuPerRequestUs: Partial<Record<Target, { loadGenerator: number; upstream: number | null }>>;
  /** Interrupts per request, per CPU, during each target's blocks (TLB shootdowns, rescheduling and function-call IPIs, local timer). */
  interruptsPerRequest: Partial<Record<Target, InterruptCounts>>;
}

interface ThreadCpu {
  relay: number;
  main: number;
  other: number;
}

/** A sensor's relay threads' ThreadCounters so far, summed. */
function relayThreadCounters(sensor: SensorChild): ThreadCounters {
  const sum = noThreadCounters();
  for (const tid of sensor.relayThreadIds) addThreadCounters(sum, threadCounters(sensor.pid, tid));
  return sum;
}

/** A sensor's CPU so far by thread role: relay threads, the main thread (recording), and the rest (libuv pool, V8 helpers, loader). */
function sensorCpu(sensor: SensorChild): ThreadCpu {
  const total = cpuSeconds(sensor.pid);
  const relay = sensor.relayThreadIds.reduce((sum, tid) => sum + cpuSeconds(sensor.pid, tid), 0);
  const main = sensor.relayThreadIds.includes(sensor.pid) ? 0 : cpuSeconds(sensor.pid, sensor.pid);
  return { relay, main, other: total - relay - main };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** The six orders of the three targets: turn t uses ORDERS[t % 6], so each target is first, second and third equally often. */
const ORDERS_3: readonly (readonly Target[])[] = [
  ['direct', 'off', 'on'],
  ['on', 'direct', 'off'],
  ['off', 'on', 'direct'],
  ['direct', 'on', 'off'],
  ['off', 'direct', 'on'],
  ['on', 'off', 'direct'],
];
/** With a variant: a balanced Latin square of four (each target in each position once, and right after each other target once, every 4 turns). */
const ORDERS_4: readonly (readonly Target[])[] = [
  ['direct', 'off', 'variant', 'on'],
  ['off', 'on', 'direct', 'variant'],
  ['on', 'variant', 'off', 'direct'],
  ['variant', 'direct', 'on', 'off'],
];

/** Bootstrap resamplings of the turns for the confidence intervals. */
const BOOTSTRAP = 4000;

/**
 * 5th and 95th percentile of `measure` over resamplings of the data: epochs (forwarder
 * process pairs) with replacement, then turns within each picked epoch with replacement.
 * Every block has the same number of requests, so a pooled mean is the mean of block means.
 * Epochs are resampled within their cell of the design (start order × mirrored or not): the
 * design balances those orders, and the process started first is often the slower one, so
 * resampling across cells would count an imbalance the design does not have.
 */
function bootstrap90(epochs: Partial<Record<Target, number[]>>[], measure: (m: (t: Target) => number) => number): [number, number] {
  const out: number[] = [];
  let seed = 0x9e3779b9;
  const rand = () => {
    // xorshift32: the same data gives the same interval
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 2 ** 32;
  };
  const pick = (n: number) => Math.floor(rand() * n);
  const cells = [0, 1, 2, 3].map((c) => epochs.filter((_, e) => designCell(e) === c));
  for (let b = 0; b < BOOTSTRAP; b++) {
    const picks: { epoch: Partial<Record<Target, number[]>>; turn: number }[] = [];
    for (let e = 0; e < epochs.length; e++) {
      const stratum = cells[designCell(e)]!;
      const epoch = stratum[pick(stratum.length)]!;
      const n = epoch.direct!.length;
      for (let i = 0; i < n; i++) picks.push({ epoch, turn: pick(n) });
    }
    out.push(
      measure((t) => {
        let sum = 0;
        for (const p of picks) sum += p.epoch[t]![p.turn]!;
        return sum / picks.length;
      }),
    );
  }
  out.sort((a, b) => a - b);
  return [percentile(out, 5), percentile(out, 95)];
}

/** Sets the CPU affinity of every thread of `pid`: `relayCpus` for its relay threads, `otherCpus` for the rest (util-linux taskset). */
function pinThreads(pid: number, relayThreadIds: readonly number[], relayCpus: string, otherCpus: string): void {
  for (const tid of readdirSync(`/proc/${pid}/task`).map(Number)) {
    execFileSync('taskset', ['--pid', '--cpu-list', relayThreadIds.includes(tid) ? relayCpus : otherCpus, String(tid)], { stdio: ['ignore', 'ignore', 'pipe'] });
  }
}

/** 1. Added latency: direct, recording off and recording on (and a variant) take turns in short blocks. */
async function latencyPhase(s: Setup): Promise<LatencyReport> {
  const topic = (await pipelineTopics((n, p) => s.mock.createTopic(n, p), 8)).exchanges;
  const targets: Target[] = VARIANT ? ['direct', 'off', 'on', 'variant'] : ['direct', 'off', 'on'];
  const orders = VARIANT ? ORDERS_4 : ORDERS_3;
  const recordingTargets: Recording[] = VARIANT ? ['on', 'variant'] : ['on'];
  const samples: Partial<Record<Target, number[]>> = {};
  /** Per epoch, per target, the mean of each of its blocks. */
  const blockMeans: Partial<Record<Target, number[]>>[] = [];
  const seconds: Partial<Record<Target, number>> = {};
  const interrupts: Partial<Record<Target, InterruptCounts>> = {};
  const sharedCpu: Partial<Record<Target, { loadGenerator: number; upstream: number; memoryMonitor: number }>> = {};
  const upstreamCpu = () => (s.up.pid === null ? 0 : cpuSeconds(s.up.pid));
  const memoryMonitors = memoryMonitorThreads();
  const memoryMonitorRun = () => memoryMonitors.reduce((sum, pid) => sum + runSeconds(pid), 0);
  for (const t of targets) {
    samples[t] = [];
    seconds[t] = 0;
    interrupts[t] = { tlb: [], resched: [], call: [], timer: [] };
    sharedCpu[t] = { loadGenerator: 0, upstream: 0, memoryMonitor: 0 };
  }
  const turns: number[] = [];
  const backlog: number[] = [];
  let placement: LatencyReport['placement'] = null;
  const zero = (): ThreadCpu => ({ relay: 0, main: 0, other: 0 });
  const cpu = { off: zero(), on: zero(), variant: zero(), broker: 0 };
  const add = (into: ThreadCpu, a: ThreadCpu, b: ThreadCpu) => {
    into.relay += a.relay - b.relay;
    into.main += a.main - b.main;
    into.other += a.other - b.other;
  };
  const relayCounters = { off: noThreadCounters(), on: noThreadCounters(), variant: noThreadCounters() };
  const memory: Record<Recording | 'off', ProcessMemory[]> = { off: [], on: [], variant: [] };
  let errors = 0;
  let warmupErrors = 0;
  const recorded = { captured: 0, published: 0, spooled: 0, dropped: {} as Record<string, number> };
  let turn = 0;
  for (let epoch = 0; epoch < EPOCHS; epoch++) {
    const epochTurns = Math.floor(BLOCKS / EPOCHS) + (epoch < BLOCKS % EPOCHS ? 1 : 0);
    const means: Partial<Record<Target, number[]>> = {};
    for (const t of targets) means[t] = [];
    blockMeans.push(means);
    // Fresh forwarder processes every epoch: two processes of the same build differ by
    // several percent in latency for their whole life (an A/A run measured −10 % and
    // +12 % for identical forwarders), so one pair per run compares processes, not recording.
    const sensors: Partial<Record<Exclude<Target, 'direct'>, SensorChild>> = {};
    const agents: Partial<Record<Target, Agent>> = {};
    for (const t of inEpochOrder(epoch, targets)) agents[t] = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    try {
      // Start order alternates too: the first process started has a different machine to start on.
      for (const t of offStartsFirst(epoch) ? (['off', 'on'] as const) : (['on', 'off'] as const)) sensors[t] = await startSensorChild(s.sensorConfig(t === 'on', topic));
      const on = sensors.on!;
      if (CONTROL_AA) {
        // The "on" slot does not record, so it places none of its threads: pin them where a
        // recording forwarder places its own (the forwarder's plan), so that the A/A run
        // measures the bias of the layout the real runs use, not of an unpinned one.
        const plan = planCpus(RECORDING_CPUS, allowedCpus(), THREADS, true, cpus().length);
        if (plan.relayCpus !== null && plan.recordingCpus !== null) pinThreads(on.pid, on.relayThreadIds, formatCpuList(plan.relayCpus), formatCpuList(plan.recordingCpus));
      }
      // Where the recording forwarder put its threads: its relay thread's and its main thread's CPUs.
      const onPlaced = { relay: threadCpuList(on.pid, on.relayThreadIds[0]!)!, other: threadCpuList(on.pid, on.pid)! };
      const offPin = OFF_PIN === 'same' ? onPlaced : OFF_PIN === 'none' ? null : OFF_PIN;
      if (offPin !== null) pinThreads(sensors.off!.pid, sensors.off!.relayThreadIds, offPin.relay, offPin.other);
      const brokerCpus = BROKER_CPUS === 'recording' ? onPlaced.other : BROKER_CPUS === 'any' ? null : BROKER_CPUS;
      if (brokerCpus !== null) pinThreads(s.mock.pid, [], brokerCpus, brokerCpus);
      const sharedCpus = SHARED_CPUS === 'relay' ? onPlaced.relay : SHARED_CPUS === 'any' ? null : SHARED_CPUS;
      if (sharedCpus !== null) {
        pinThreads(process.pid, [], sharedCpus, sharedCpus);
        if (s.up.pid !== null) pinThreads(s.up.pid, [], sharedCpus, sharedCpus);
      }
      if (epoch === 0) placement = { on: onPlaced, off: offPin, broker: brokerCpus, shared: sharedCpus };
      if (VARIANT) {
        const v = (sensors.variant = await startSensorChild({ ...s.sensorConfig(true, topic), ...VARIANT.config }, 30_000, { nodeFlags: VARIANT.nodeFlags, env: VARIANT.env }));
        if (VARIANT.pin) pinThreads(v.pid, v.relayThreadIds, VARIANT.pin.relay, VARIANT.pin.other);
      }
      const forwarders = inEpochOrder(epoch, ['off', 'on', 'variant'] as const).filter((t) => sensors[t] !== undefined);
      if (BLOCK_LOG !== undefined) {
        const procs = forwarders.map((t) => `${t}=${sensors[t]!.pid}:${sensors[t]!.relayThreadIds.join(',')}`);
        appendFileSync(BLOCK_LOG, `# epoch ${epoch} ${procs.join(' ')} loadgen=${process.pid} upstream=${s.up.pid ?? process.pid} broker=${s.mock.pid}\n`);
      }
      const sensorOf = (t: Exclude<Target, 'direct'>): SensorChild => sensors[t]!;
      const urlOf = (t: Target) => (t === 'direct' ? s.up.url : sensorOf(t).url);
      const keyOf = (t: Target) => (t === 'direct' ? null : s.key.secret);
      // The recording forwarders' records of one block are stored before the next block
      // starts, so their idle-priority work does not spill into another target's block. Every
      // block, whatever its target, is followed by the same pause: with a pause after the
      // recording blocks only, the other targets ran some blocks back to back with their own
      // previous one (warm), and an A/A run (--control=aa) measured +8 to +16 % for
      // identical forwarders.
      //
      // Every poll asks every forwarder for its stats, recording or not, so that no
      // forwarder's main thread is woken more often than another's (until 2026-12-06 only the
      // recording ones were asked; making this symmetric alone did not remove the A/A runs'
      // bias: see `mirrored`). Returns each forwarder's first answer (for the recording backlog).
      const settle = async (): Promise<Partial<Record<Exclude<Target, 'direct'>, PublisherStats>>> => {
        let first: Partial<Record<Exclude<Target, 'direct'>, PublisherStats>> | undefined;
        // Caught up: nothing waiting in memory, and no spool being replayed.
        await waitFor(async () => {
          const now: Partial<Record<Exclude<Target, 'direct'>, PublisherStats>> = {};
          for (const t of forwarders) now[t] = await sensorOf(t).stats();
          first ??= now;
          return recordingTargets.every((r) => now[r]!.queued === 0 && now[r]!.mode === 'direct');
        }, 60_000, 'recording to catch up');
        await new Promise((r) => setTimeout(r, GAP_MS));
        return first!;
      };
      // Warm up every path (JIT, pools, keep-alive connections, Kafka producer connection)
      // until V8 has optimized what a request runs: --warmup requests per target, in unpaced
      // blocks each followed by the settle pause (in one burst, recording fell behind: half
      // of the burst was refused with 503 and records went through the disk spool, whose
      // replay then ran into the measured blocks), then one paced block each, so that paths
      // only a pause after a block takes (the recording thread gone to sleep, woken by the
      // next capture) have run too: code first run after optimizing is deoptimized there.
      //
      // Each round takes the next of the turns' orders, as the turns do: with one fixed order
      // for all of an epoch's rounds (until 2026-12-06), the target whose blocks came first
      // measured slower in 11 of 12 mirrored runs, by 1–19 points (docs/benchmarks.md).
      let round = 0;
      for (let sent = 0; sent < WARMUP_REQUESTS; sent += BLOCK_REQUESTS, round++) {
        for (const t of inEpochOrder(epoch, orders[round % orders.length]!)) {
          warmupErrors += (await load(urlOf(t), keyOf(t), Math.min(BLOCK_REQUESTS, WARMUP_REQUESTS - sent), CONCURRENCY, s.body, 0, agents[t])).errors;
          await settle();
        }
      }
      for (const t of inEpochOrder(epoch, orders[round % orders.length]!)) {
        warmupErrors += (await load(urlOf(t), keyOf(t), BLOCK_REQUESTS, CONCURRENCY, s.body, RATE, agents[t])).errors;
        await settle();
      }
      // CPU from here until recording has caught up after the last block: at idle priority
      // recording may finish after its block, and it still costs what it costs.
      const reading = (t: (typeof forwarders)[number]) => ({ cpu: sensorCpu(sensorOf(t)), relay: relayThreadCounters(sensorOf(t)) });
      const start = new Map(forwarders.map((t) => [t, reading(t)]));
      const broker0 = cpuSeconds(s.mock.pid);
      for (let i = 0; i < epochTurns; i++, turn++) {
        const turnMeans: Partial<Record<Target, number>> = {};
        for (const t of inEpochOrder(epoch, orders[turn % orders.length]!)) {
          const irq0 = interruptCounts();
          const self0 = process.cpuUsage();
          const up0 = upstreamCpu();
          const monitor0 = memoryMonitorRun();
          const blockStart = process.hrtime.bigint();
          const r = await load(urlOf(t), keyOf(t), BLOCK_REQUESTS, CONCURRENCY, s.body, RATE, agents[t]);
          if (BLOCK_LOG !== undefined) appendFileSync(BLOCK_LOG, `${t} ${blockStart} ${process.hrtime.bigint()} ${epoch}\n`);
          if (REQUEST_LOG !== undefined) appendFileSync(REQUEST_LOG, r.latencies.map((ms, k) => `${t} ${r.starts[k]} ${Math.round(ms * 1000)} ${epoch}\n`).join(''));
          const self1 = process.cpuUsage(self0);
          sharedCpu[t]!.loadGenerator += (self1.user + self1.system) / 1e6;
          sharedCpu[t]!.upstream += upstreamCpu() - up0;
          sharedCpu[t]!.memoryMonitor += memoryMonitorRun() - monitor0;
          const irq1 = interruptCounts();
          addInterrupts(interrupts[t]!, irq0, irq1);
          errors += r.errors;
          samples[t]!.push(...r.latencies);
          seconds[t]! += r.seconds;
          turnMeans[t] = meanOf(r.latencies);
          means[t]!.push(turnMeans[t]);
          const afterBlock = await settle();
          // How far recording trailed its block (records not yet handed to Kafka): near zero
          // means it kept up during the block rather than running in the settle pause.
          if (t === 'on') backlog.push(afterBlock.on!.queued);
        }
        turns.push(((turnMeans.on! - turnMeans.off!) / turnMeans.off!) * 100);
        if ((turn + 1) % 10 === 0 || turn + 1 === BLOCKS) console.log(`[bench] ${turn + 1}/${BLOCKS} turns (epoch ${epoch + 1}/${EPOCHS})`);
      }
      for (const t of forwarders) {
        const end = reading(t);
        add(cpu[t], end.cpu, start.get(t)!.cpu);
        addThreadCounters(relayCounters[t], end.relay, start.get(t)!.relay);
        memory[t].push(processMemory(sensorOf(t).pid));
      }
      cpu.broker += cpuSeconds(s.mock.pid) - broker0;
      const st = await sensorOf('on').stats();
      recorded.captured += st.captured;
      recorded.published += st.published;
      recorded.spooled += st.spooled;
      for (const [k, v] of Object.entries(st.dropped)) recorded.dropped[k] = (recorded.dropped[k] ?? 0) + v;
    } finally {
      for (const a of Object.values(agents)) a.destroy();
      for (const sensor of Object.values(sensors)) await sensor.stop();
    }
  }
  const measuredRequests = BLOCKS * BLOCK_REQUESTS;
  /** The forwarders this run started, in a fixed order for the report. */
  const forwarderSlots = ['off', 'on', ...(VARIANT ? (['variant'] as const) : [])] as const;
  const perRequest = (sec: number) => (sec * 1e6) / measuredRequests;
  const perRequestThreads = (c: ThreadCpu): ThreadCpu => ({ relay: perRequest(c.relay), main: perRequest(c.main), other: perRequest(c.other) });
  const total = (c: ThreadCpu) => c.relay + c.main + c.other;
  const cpuPerRequestUs: LatencyReport['cpuPerRequestUs'] = {
    sensorOff: perRequest(total(cpu.off)),
    sensorOffRelay: perRequest(cpu.off.relay),
    sensorOn: perRequest(total(cpu.on)),
    broker: perRequest(cpu.broker),
    sensorOnThreads: perRequestThreads(cpu.on),
    ...(VARIANT ? { sensorVariantThreads: perRequestThreads(cpu.variant) } : {}),
  };
  console.log(`[bench] recording-on forwarders: ${recorded.captured} captured, ${recorded.published} published, ${recorded.spooled} spooled, dropped ${JSON.stringify(recorded.dropped)}; client errors ${errors} (warm-up: ${warmupErrors})`);
  const names: Record<Target, string> = { direct: 'direct', off: 'forwarder, recording off', on: 'forwarder, recording on', variant: 'forwarder, recording on, variant' };
  const pooled: Partial<Record<Target, LatencyResult>> = {};
  for (const t of targets) pooled[t] = summarize(names[t], { latencies: samples[t]!, seconds: seconds[t]! });
  const P = (t: Target): LatencyResult => pooled[t]!;
  const added = (k: Target) => ({ p50: P(k).p50 - P('direct').p50, p99: P(k).p99 - P('direct').p99, mean: P(k).mean - P('direct').mean });
  const vsOff = (k: Recording) => ({
    mean: addedVsOffPct(P(k).mean, P('off').mean, P('direct').mean),
    p50: addedVsOffPct(P(k).p50, P('off').p50, P('direct').p50),
    ci90: bootstrap90(blockMeans, (m) => addedVsOffPct(m(k), m('off'), m('direct'))),
  });
  const epochMean = (e: Partial<Record<Target, number[]>>, t: Target) => meanOf(e[t]!);
  const perEpoch = blockMeans.map((e) => addedVsOffPct(epochMean(e, 'on'), epochMean(e, 'off'), epochMean(e, 'direct')));
  const addedIn = (e: Partial<Record<Target, number[]>>, t: Target) => epochMean(e, t) - epochMean(e, 'direct');
  const perEpochAddedMs = blockMeans.map((e) => ({ off: addedIn(e, 'off'), on: addedIn(e, 'on'), ...(VARIANT ? { variant: addedIn(e, 'variant') } : {}) }));
  // A group of epochs' mean added latencies (ms), and the goal's measure from those means,
  // not the mean of per-epoch percentages (an epoch whose recording-off forwarder added
  // almost nothing gives +1,000 %).
  const group = (epochs: readonly { off: number; on: number }[]) => {
    const off = meanOf(epochs.map((e) => e.off));
    const on = meanOf(epochs.map((e) => e.on));
    return { off, on, pct: ((on - off) / off) * 100, epochs: epochs.length };
  };
  const groupsBy = (inFirst: (epoch: number) => boolean) => {
    const [first, rest] = splitEpochs(perEpochAddedMs, inFirst);
    return [group(first), group(rest)] as const;
  };
  const [offFirst, onFirst] = groupsBy(offStartsFirst);
  const [asListed, mirror] = groupsBy((e) => !mirrored(e));
  const report: LatencyReport = {
    blocks: BLOCKS,
    blockRequests: BLOCK_REQUESTS,
    pooled,
    addedOff: added('off'),
    addedOn: added('on'),
    addedOnVsOffPct: vsOff('on'),
    ...(VARIANT
      ? {
          variant: {
            describe: VARIANT.describe,
            addedVsOffPct: vsOff('variant'),
            addedVsOnPct: {
              mean: ((P('variant').mean - P('on').mean) / (P('on').mean - P('direct').mean)) * 100,
              ci90: bootstrap90(blockMeans, (m) => ((m('variant') - m('on')) / (m('on') - m('direct'))) * 100),
            },
          },
        }
      : {}),
    recordingOnVsOffPct: ((P('on').mean - P('off').mean) / P('off').mean) * 100,
    recordingOnVsOffP50Pct: ((P('on').p50 - P('off').p50) / P('off').p50) * 100,
    perTurnOnVsOffPct: { median: median(turns), turns },
    perEpochAddedOnVsOffPct: perEpoch,
    perEpochAddedMs,
    byStartOrder: { offFirst: offFirst.pct, onFirst: onFirst.pct },
    byBlockOrder: { asListed: asListed.pct, mirrored: mirror.pct },
    backlogAtBlockEnd: { median: median(backlog), max: Math.max(...backlog) },
    cpuPerRequestUs,
    relayCountersPerRequest: Object.fromEntries(
      forwarderSlots.map((t) => [t, threadCountersPer(relayCounters[t], measuredRequests)]),
    ),
    memoryAtEpochEnd: Object.fromEntries(
      forwarderSlots.map((t) => {
        const m = memory[t];
        return [t, { rssMiB: median(m.map((x) => x.rssMiB)), anonMiB: median(m.map((x) => x.anonMiB)), mallocArenaMiB: median(m.map((x) => x.mallocArenaMiB)) }];
      }),
    ),
    placement,
    sharedCpuPerRequestUs: Object.fromEntries(
      targets.map((t) => {
        const n = samples[t]!.length;
        return [t, { loadGenerator: (sharedCpu[t]!.loadGenerator / n) * 1e6, upstream: s.up.pid === null ? null : (sharedCpu[t]!.upstream / n) * 1e6 }];
      }),
    ),
    memoryMonitor: { threads: memoryMonitors.length, msPerBlock: Object.fromEntries(targets.map((t) => [t, (sharedCpu[t]!.memoryMonitor / BLOCKS) * 1e3])) },
    interruptsPerRequest: Object.fromEntries(
      targets.map((t) => {
        const n = samples[t]!.length;
        const c = interrupts[t]!;
        return [t, { tlb: c.tlb.map((v) => v / n), resched: c.resched.map((v) => v / n), call: c.call.map((v) => v / n), timer: c.timer.map((v) => v / n) }];
      }),
    ),
  };

  const rows: string[][] = [['target', 'req/s', 'p10 ms', 'p25 ms', 'p50 ms', 'p90 ms', 'p99 ms', 'mean ms']];
  for (const t of targets) rows.push([P(t).target, P(t).rps.toFixed(0), ms(P(t).p10), ms(P(t).p25), ms(P(t).p50), ms(P(t).p90), ms(P(t).p99), ms(P(t).mean)]);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  console.log('');
  for (const r of rows) console.log(r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '));
  console.log('');
  const { addedOff, addedOn } = report;
  const signed = (x: number) => `${x >= 0 ? '+' : ''}${x.toFixed(2)} %`;
  const ci = ([a, b]: [number, number]) => `90 % CI ${signed(a)} … ${signed(b)}`;
  const threads = (c: ThreadCpu) => `relay threads ${c.relay.toFixed(0)}, main thread ${c.main.toFixed(0)}, other threads ${c.other.toFixed(0)}`;
  console.log(`${BLOCKS} turns of ${BLOCK_REQUESTS} requests per target; added latency (forwarder − direct, pooled): recording off p50 ${ms(addedOff.p50)} ms, mean ${ms(addedOff.mean)} ms; recording on p50 ${ms(addedOn.p50)} ms, mean ${ms(addedOn.mean)} ms`);
  console.log(`CPU per measured request (µs, until recording caught up): forwarder recording off ${cpuPerRequestUs.sensorOff.toFixed(0)} (relay thread ${cpuPerRequestUs.sensorOffRelay.toFixed(0)}), recording on ${cpuPerRequestUs.sensorOn.toFixed(0)} (${threads(cpuPerRequestUs.sensorOnThreads)})${cpuPerRequestUs.sensorVariantThreads ? `, variant (${threads(cpuPerRequestUs.sensorVariantThreads)})` : ''}, Kafka broker ${cpuPerRequestUs.broker.toFixed(0)}`);
  const counted = Object.entries(report.relayCountersPerRequest).map(([t, c]) => `${t} ${c.minorFaults.toFixed(2)} minor + ${c.majorFaults.toFixed(4)} major faults, ${c.voluntarySwitches.toFixed(2)} voluntary + ${c.involuntarySwitches.toFixed(2)} involuntary switches`);
  console.log(`relay threads per measured request (same span): ${counted.join('; ')}`);
  const resident = Object.entries(report.memoryAtEpochEnd).map(([t, m]) => `${t} ${m.rssMiB.toFixed(0)} (anonymous ${m.anonMiB.toFixed(0)}, malloc arena ${m.mallocArenaMiB.toFixed(0)})`);
  console.log(`forwarders' resident memory at the end of an epoch's blocks (MiB, median over epochs): ${resident.join('; ')}`);
  if (placement !== null) {
    const pl = placement;
    console.log(`placement (CPU lists): recording forwarder relay ${pl.on.relay}, its other threads ${pl.on.other}; recording-off forwarder ${pl.off === null ? 'unpinned' : `relay ${pl.off.relay}, other threads ${pl.off.other}`}; Kafka broker ${pl.broker ?? 'unpinned'}; load generator and upstream ${pl.shared ?? 'unpinned'}`);
  }
  const shared = report.sharedCpuPerRequestUs;
  console.log(
    `CPU per request of the shared processes during each target's blocks (µs): load generator ${targets.map((t) => `${t} ${shared[t]!.loadGenerator.toFixed(0)}`).join(', ')}; upstream ${targets.map((t) => `${t} ${shared[t]!.upstream === null ? 'n/a (in-process)' : shared[t]!.upstream!.toFixed(0)}`).join(', ')}`,
  );
  const monitor = report.memoryMonitor;
  console.log(
    monitor.threads === 0
      ? 'kernel memory monitor (DAMON): not running'
      : `kernel memory monitor (DAMON, ${monitor.threads} kdamond thread${monitor.threads > 1 ? 's' : ''}) running during each target's blocks (ms per block): ${targets.map((t) => `${t} ${monitor.msPerBlock[t]!.toFixed(1)}`).join(', ')}; it holds a CPU for milliseconds at a time, the largest source of the p99 where it runs (docs/benchmarks.md)`,
  );
  const irq = report.interruptsPerRequest;
  const perCpu = (v: number[]) => (v.length ? v.map((x) => x.toFixed(2)).join('/') : 'n/a');
  const kinds: [keyof InterruptCounts, string][] = [['tlb', 'TLB shootdowns'], ['resched', 'rescheduling IPIs'], ['call', 'function-call IPIs'], ['timer', 'local timer']];
  console.log(`interrupts per request during each target's blocks (per CPU, 0/1/…): ${kinds.map(([k, name]) => `${name} ${targets.map((t) => `${t} ${perCpu(irq[t]![k])}`).join(', ')}`).join('; ')}`);
  const sortedTurns = [...turns].sort((a, b) => a - b);
  console.log(`recording backlog when its block ended (records not yet handed to Kafka, of ${BLOCK_REQUESTS}): median ${report.backlogAtBlockEnd.median}, max ${report.backlogAtBlockEnd.max}`);
  console.log(`recording on vs off, end-to-end through the forwarder: p50 ${signed(report.recordingOnVsOffP50Pct)}, mean ${signed(report.recordingOnVsOffPct)}; per-turn ratios of the means: median ${signed(report.perTurnOnVsOffPct.median)} (quartiles ${signed(percentile(sortedTurns, 25))} / ${signed(percentile(sortedTurns, 75))})`);
  if (report.variant) {
    const v = report.variant;
    console.log(`variant (${v.describe}) vs off, the forwarder's added latency: mean ${signed(v.addedVsOffPct.mean)} (${ci(v.addedVsOffPct.ci90)}), p50 ${signed(v.addedVsOffPct.p50)}; variant vs on: mean ${signed(v.addedVsOnPct.mean)} of on's added latency (${ci(v.addedVsOnPct.ci90)})`);
  }
  console.log(`recording on vs off, the forwarder's added latency per epoch (fresh processes each): ${report.perEpochAddedOnVsOffPct.map(signed).join(', ')}`);
  if (report.perEpochAddedOnVsOffPct.length > 1) {
    console.log(`  by start order (from those epochs' mean added latency): recording-off forwarder started first ${signed(offFirst.pct)} (added ms: off ${ms(offFirst.off)}, on ${ms(offFirst.on)}), recording one first ${signed(onFirst.pct)} (off ${ms(onFirst.off)}, on ${ms(onFirst.on)})`);
    if (mirror.epochs > 0) console.log(`  by block order (from those epochs' mean added latency): as listed, recording-off forwarder's blocks first in each epoch's first turn ${signed(asListed.pct)} (added ms: off ${ms(asListed.off)}, on ${ms(asListed.on)}), mirrored ${signed(mirror.pct)} (off ${ms(mirror.off)}, on ${ms(mirror.on)})`);
  }
  const goal = report.addedOnVsOffPct;
  console.log(`recording on vs off, the forwarder's added latency (pooled mean; p50 ${signed(goal.p50)}): ${signed(goal.mean)} (${ci(goal.ci90)}; goal < 5 %) → ${goal.mean < 5 ? 'OK' : 'OVER GOAL'}${goal.mean < -5 ? ' (recording measured faster than not recording: this run is noise-bound)' : ''}`);
  return report;
}

/**
 * The upstream: `--upstream=process` (default) is the benches' canned uWS upstream in its own
 * process; `inproc` the tests' mock upstream inside this (load generator) process, where
 * every request through a forwarder crossed this process's event loop three times against
 * once for direct ones, so this process's pauses weighed on the forwarders' tails more than
 * on direct's. Both answer with a short SSE stream at once: the bench measures the
 * forwarder, not the model.
 */
async function startUpstream(): Promise<{ url: string; pid: number | null; close(): Promise<void> }> {
  if (UPSTREAM === 'inproc') {
    const up = await startMockUpstream({ keepRequests: 0 });
    up.respond = () => reply.stream({ content: [{ type: 'text', text: 'Bench answer with a few words in it.' }] });
    return { url: up.url, pid: null, close: () => up.close() };
  }
  const up = await startBenchUpstream();
  return { url: up.url, pid: up.pid, close: () => up.stop() };
}

/** 2. Throughput: forwarder → Kafka → ClickHouse, for a burst at high concurrency. */
async function throughputPhase(s: Setup): Promise<Record<string, number>> {
  const burstTopics = await pipelineTopics((n, p) => s.mock.createTopic(n, p), 8);
  const ingest = await startIngestChild({ brokers: s.mock.brokers, topics: burstTopics, groupId: uniqueName('bench-ingest'), chdbPath: mkdtempSync(join(tmpdir(), 'glitch-bench-chdb-')), batchRows: 2_000, batchMs: 200 });
  let burstSensor: SensorChild | undefined;
  try {
    const sensor = (burstSensor = await startSensorChild(s.sensorConfig(true, burstTopics.exchanges)));
    // Ingest joins its group before the burst, so the clock measures the pipeline, not the join.
    await load(sensor.url, s.key.secret, 10, 2, s.body);
    await waitFor(async () => (await ingest.count('SELECT count() FROM exchanges')) >= 10, 120_000, 'ingest joined and storing');
    const baseline = await ingest.count('SELECT count() FROM exchanges');
    // Records reach Kafka directly (published) or through the spool (replayed) when the
    // burst outruns the bus: both count.
    const inKafka = (st: { published: number; replayed: number }) => st.published + st.replayed;
    const publishedBefore = inKafka(await sensor.stats());
    const t0 = performance.now();
    const r = await load(sensor.url, s.key.secret, BURST, BURST_CONCURRENCY, s.body);
    const tSent = performance.now();
    // Requests refused with 503 (recording fell behind: the designed back-pressure) are not recorded.
    const recorded = BURST - r.refused;
    await waitFor(async () => inKafka(await sensor.stats()) >= publishedBefore + recorded, 120_000, 'the burst published to Kafka', async () => ({ recorder: await sensor.stats(), output: sensor.output().slice(-1000) }));
    const tKafka = performance.now();
    await waitFor(async () => (await ingest.count('SELECT count() FROM exchanges')) >= baseline + recorded, 300_000, 'the burst in ClickHouse', async () => (await ingest.stats()).stats);
    const tCh = performance.now();
    const st = await sensor.stats();
    const ist = (await ingest.stats()).stats;
    const throughput = {
      exchanges: BURST,
      concurrency: BURST_CONCURRENCY,
      clientErrors: r.errors,
      refused: r.refused,
      recorded,
      clientSeconds: (tSent - t0) / 1000,
      clientRps: BURST / ((tSent - t0) / 1000),
      toKafkaSeconds: (tKafka - t0) / 1000,
      recordsPerSecondToKafka: recorded / ((tKafka - t0) / 1000),
      toClickHouseSeconds: (tCh - t0) / 1000,
      recordsPerSecondToClickHouse: recorded / ((tCh - t0) / 1000),
      spooled: st.spooled,
      ingestInserts: ist.batchesFlushed,
      ingestRowsPerInsert: ist.exchangesInserted / Math.max(1, ist.batchesFlushed),
    };
    console.log(
      `throughput: ${throughput.exchanges} exchanges at concurrency ${throughput.concurrency}: clients ${throughput.clientRps.toFixed(0)} req/s; forwarder → Kafka ${throughput.recordsPerSecondToKafka.toFixed(0)} records/s; → ClickHouse ${throughput.recordsPerSecondToClickHouse.toFixed(0)} records/s (${throughput.toClickHouseSeconds.toFixed(1)} s, ${throughput.ingestInserts} inserts of ${throughput.ingestRowsPerInsert.toFixed(0)} rows on average); spooled ${throughput.spooled}, client errors ${throughput.clientErrors} (refused with 503 while recording was behind, so not recorded: ${throughput.refused})`,
    );
    return throughput;
  } finally {
    await burstSensor?.stop();
    await ingest.stop();
  }
}

async function main(): Promise<void> {
  const mock = await privateKafkaMock();
  const up = await startUpstream();
  const key = testKey('tenant-bench');
  const bodies = Array.from({ length: 64 }, (_, i) => messageBody({ tag: `bench-${i}`, seq: i, stream: true, padBytes: BODY_BYTES }));
  const setup: Setup = {
    mock,
    up,
    key,
    body: (i: number) => bodies[i % bodies.length]!,
    sensorConfig: (recording, topic) => ({ brokers: mock.brokers, topic, upstreamUrl: up.url, keys: [key], spoolDir: mkdtempSync(join(tmpdir(), 'glitch-bench-spool-')), threads: THREADS, recording: recording && !CONTROL_AA, recordingPriority: PRIORITY, recordingCpus: RECORDING_CPUS, logLevel: 'error', ...(recording && !CONTROL_AA ? {} : { relayInMainThread: OFF_RELAY === 'main' }) }),
  };
  if (CONTROL_AA) console.log('[bench] --control=aa: the "recording on" forwarder does not record; "on vs off" below is the bench\'s own bias and noise');
  console.log(`[bench] pipeline: ${cpus().length} cores, Node ${process.version}, forwarder threads ${THREADS}, recording priority ${PRIORITY}, request body ${BODY_BYTES} B, latency phase ${RATE > 0 ? `paced at ${RATE} req/s` : 'closed loop'} with ${CONCURRENCY} clients after ${WARMUP_REQUESTS} warm-up requests per target and epoch, kafka: private librdkafka mock ${mock.version} (latency phase: broker priority ${BROKER_PRIORITY})`);
  if (!SINGLE_THREADED_GC) console.log('[bench] note: this process runs without --single-threaded-gc (use npm run bench:pipeline): its GC helper threads will stall the forwarder under test now and then');
  let latency: LatencyReport | null = null;
  let throughput: Record<string, number> | null = null;
  try {
    if (ONLY !== 'throughput') {
      if (BROKER_PRIORITY === 'idle') setSchedulingPolicy(mock.pid, 'idle');
      latency = await latencyPhase(setup);
      if (BROKER_PRIORITY === 'idle') setSchedulingPolicy(mock.pid, 'normal');
      const every = `0-${cpus().length - 1}`;
      if (BROKER_CPUS !== 'any') pinThreads(mock.pid, [], every, every);
      if (SHARED_CPUS !== 'any') {
        pinThreads(process.pid, [], every, every);
        if (up.pid !== null) pinThreads(up.pid, [], every, every);
      }
    }
    if (ONLY !== 'latency') throughput = await throughputPhase(setup);
  } finally {
    await up.close();
    await mock.stop();
  }

  const resultsDir = join(repoRoot, 'test', 'bench', 'results');
  mkdirSync(resultsDir, { recursive: true });
  const file = join(resultsDir, `pipeline-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(
    file,
    JSON.stringify(
      {
        at: new Date().toISOString(),
        machine: { cores: cpus().length, node: process.version },
        config: { brokerCpus: BROKER_CPUS, sharedCpus: SHARED_CPUS, offPin: OFF_PIN_ARG, recordingCpus: RECORDING_CPUS_ARG, upstream: UPSTREAM, variant: VARIANT, epochs: EPOCHS, warmupRequests: WARMUP_REQUESTS, controlAA: CONTROL_AA, offRelay: OFF_RELAY, brokerPriority: BROKER_PRIORITY, gapMs: GAP_MS, recordingPriority: PRIORITY, blocks: BLOCKS, blockRequests: BLOCK_REQUESTS, concurrency: CONCURRENCY, rate: RATE, bodyBytes: BODY_BYTES, threads: THREADS, singleThreadedGc: SINGLE_THREADED_GC, kafka: `librdkafka mock ${mock.version}`, clickhouse: 'chDB (ingest child process)' },
        latency,
        throughput,
      },
      null,
      2,
    ) + '\n',
  );
  console.log(`[bench] results written to ${file}`);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
