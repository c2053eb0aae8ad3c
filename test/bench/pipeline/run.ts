// Pipeline bench (not part of `npm test`; `npm run bench:pipeline`, also run by `npm run bench`):
//
// 1. Added latency: the same paced load (Claude Code-like streaming turns) straight to the
//    mock upstream, through the forwarder with recording off, and with recording on
//    (RecordPublisher → Kafka). Added latency = through the forwarder − direct; the goal is
//    that recording changes it by < 5 %. The three targets take turns in short blocks (one
//    second of load each by default), in rotating order, many times over: on this shared VM
//    the same work runs up to ~30 % slower for minutes at a time, so long rounds one after the
//    other compare the machine's moods, not the targets. Also prints each process's CPU per
//    request (the recording forwarder's split by thread role: relay, main/recording, the rest).
// 2. Throughput: records/s through forwarder → Kafka (publisher acks) and on into ClickHouse
//    (ingest inserts), for a burst of exchanges at high concurrency.
//
// The forwarder runs in its own process (test/support/pipeline-sensor.ts), ingest in another
// (test/support/pipeline-ingest.ts, chDB); the load generator and the mock upstream in this
// one, which should run with V8's --single-threaded-gc (scripts/bench.mjs passes it): its
// parallel GC helpers otherwise take both cores for ~10 ms every ~0.7 s and stall the
// forwarder under test (p99 through the forwarder 6 ms with them, under 2 ms without).
// Kafka: a private librdkafka mock (it keeps ~5 MiB per partition, so bursts are sized to
// fit). Prints a table and writes JSON to test/bench/results/ (gitignored).
//
//   npm run bench:pipeline -- --blocks=60 --block=300 --concurrency=16 --body=16384 --threads=1
//   npm run bench:pipeline -- --only=latency   (or --only=throughput: one phase)
//   npm run bench:pipeline -- --recording-priority=normal   (default idle, as the services run)
//   npm run bench:pipeline -- --only=latency --control=aa   (A/A: neither forwarder records; checks the bench's bias)
//   npm run bench:pipeline -- --off-relay=main   (the recording-off forwarder's relay in its main thread)
//   npm run bench:pipeline -- --broker-priority=idle   (the Kafka broker at SCHED_IDLE during the latency phase)
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
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
import { cpuSeconds, interruptCounts } from '../proc.js';

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const num = (name: string, fallback: number) => (args.has(name) ? Number(args.get(name)) : fallback);
/** Latency phase: this many turns of the three targets, each a block of `block` requests. */
const BLOCKS = num('blocks', 60);
const BLOCK_REQUESTS = num('block', 300);
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
 * near 0: check it before trusting a result near the goal.
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
/** Pause after every block (ms), the same for every target (see latencyPhase). */
const GAP_MS = num('gap', 50);
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
async function load(url: string, key: string | null, requests: number, concurrency: number, body: (i: number) => Buffer, rate = 0, sharedAgent?: Agent): Promise<{ latencies: number[]; seconds: number; errors: number }> {
  const agent = sharedAgent ?? new Agent({ keepAlive: true, maxSockets: concurrency });
  const u = new URL(url);
  const latencies: number[] = [];
  let next = 0;
  let errors = 0;
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
        const t0 = performance.now();
        const status = await new Promise<number>((resolve) => {
          const req = request(
            {
              host: u.hostname,
              port: u.port,
              path: '/v1/messages?beta=true',
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
        latencies.push(performance.now() - t0);
        if (status !== 200) errors++;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  if (!sharedAgent) agent.destroy();
  return { latencies, seconds, errors };
}

function summarize(target: string, r: { latencies: number[]; seconds: number }): LatencyResult {
  const sorted = [...r.latencies].sort((a, b) => a - b);
  const mean = sorted.reduce((a, b) => a + b, 0) / sorted.length;
  return { target, requests: sorted.length, seconds: r.seconds, rps: sorted.length / r.seconds, p50: percentile(sorted, 50), p90: percentile(sorted, 90), p99: percentile(sorted, 99), mean };
}

const ms = (n: number) => n.toFixed(2);

interface Setup {
  mock: Awaited<ReturnType<typeof privateKafkaMock>>;
  up: Awaited<ReturnType<typeof startMockUpstream>>;
  key: ReturnType<typeof testKey>;
  body: (i: number) => Buffer;
  sensorConfig: (recording: boolean, topic: string) => SensorChildConfig;
}

type Target = 'direct' | 'off' | 'on';

interface LatencyReport {
  blocks: number;
  blockRequests: number;
  /** Every measured request of a target pooled together. */
  pooled: Record<Target, LatencyResult>;
  /** Pooled, forwarder − direct. */
  addedOff: { p50: number; p99: number; mean: number };
  addedOn: { p50: number; p99: number; mean: number };
  /** Pooled, added latency (forwarder − direct) with recording on over off: the goal's measure, as the issue words it. */
  addedOnVsOffPct: { mean: number; p50: number };
  /** Pooled mean end-to-end latency through the forwarder, recording on over off. */
  recordingOnVsOffPct: number;
  /** Pooled p50, on over off. */
  recordingOnVsOffP50Pct: number;
  /** Records of the recording forwarder not yet handed to Kafka when its block ended: median and max. */
  backlogAtBlockEnd: { median: number; max: number };
  /** Per turn (the two forwarders' blocks within the same few seconds), mean on over off, and their median. */
  perTurnOnVsOffPct: { median: number; turns: number[] };
  /**
   * CPU per measured request, µs, from the first measured block until recording caught up:
   * each sensor process (the recording-on one by thread role), and the broker.
   */
  cpuPerRequestUs: { sensorOff: number; sensorOn: number; broker: number; sensorOffRelay: number; sensorOnThreads: { relay: number; main: number; other: number } };
  /** Machine-wide TLB shootdowns and rescheduling IPIs per request during each target's blocks. */
  interruptsPerRequest: Record<Target, { tlb: number; resched: number }>;
}

/** A sensor's CPU so far by thread role: relay threads, the main thread (recording), and the rest (libuv pool, V8 helpers, loader). */
function sensorCpu(sensor: SensorChild): { relay: number; main: number; other: number } {
  const total = cpuSeconds(sensor.pid);
  const relay = sensor.relayThreadIds.reduce((sum, tid) => sum + cpuSeconds(sensor.pid, tid), 0);
  const main = sensor.relayThreadIds.includes(sensor.pid) ? 0 : cpuSeconds(sensor.pid, sensor.pid);
  return { relay, main, other: total - relay - main };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** The six orders of the three targets: turn t uses ORDERS[t % 6], so each target is first, second and third equally often. */
const ORDERS: readonly (readonly Target[])[] = [
  ['direct', 'off', 'on'],
  ['on', 'direct', 'off'],
  ['off', 'on', 'direct'],
  ['direct', 'on', 'off'],
  ['off', 'direct', 'on'],
  ['on', 'off', 'direct'],
];

/** 1. Added latency: direct, recording off and recording on take turns in short blocks. */
async function latencyPhase(s: Setup): Promise<LatencyReport> {
  const topic = (await pipelineTopics((n, p) => s.mock.createTopic(n, p), 8)).exchanges;
  const samples: Record<Target, number[]> = { direct: [], off: [], on: [] };
  const seconds: Record<Target, number> = { direct: 0, off: 0, on: 0 };
  const turns: number[] = [];
  const backlog: number[] = [];
  const interrupts: Record<Target, { tlb: number; resched: number }> = { direct: { tlb: 0, resched: 0 }, off: { tlb: 0, resched: 0 }, on: { tlb: 0, resched: 0 } };
  const agents: Record<Target, Agent> = { direct: new Agent({ keepAlive: true, maxSockets: CONCURRENCY }), off: new Agent({ keepAlive: true, maxSockets: CONCURRENCY }), on: new Agent({ keepAlive: true, maxSockets: CONCURRENCY }) };
  let on: SensorChild | undefined;
  let off: SensorChild | undefined;
  let cpuPerRequestUs: LatencyReport['cpuPerRequestUs'] = { sensorOff: NaN, sensorOn: NaN, broker: NaN, sensorOffRelay: NaN, sensorOnThreads: { relay: NaN, main: NaN, other: NaN } };
  let errors = 0;
  try {
    off = await startSensorChild(s.sensorConfig(false, topic));
    on = await startSensorChild(s.sensorConfig(true, topic));
    const sensors = { off, on };
    const urlOf = (t: Target) => (t === 'direct' ? s.up.url : sensors[t].url);
    const keyOf = (t: Target) => (t === 'direct' ? null : s.key.secret);
    // The recording forwarder's records of one block are stored before the next block
    // starts, so its idle-priority work does not spill into another target's block. Every
    // block, whatever its target, is followed by the same pause: with a pause after the
    // recording blocks only, the other targets ran some blocks back to back with their own
    // previous one (warm), and an A/A run (--control=aa) measured +8 to +16 % for
    // identical forwarders.
    const settle = async () => {
      await waitFor(async () => (await sensors.on.stats()).queued === 0, 60_000, 'recording to catch up');
      await new Promise((r) => setTimeout(r, GAP_MS));
    };
    // Warm up every path (JIT, pools, keep-alive connections, Kafka producer connection).
    for (const t of ['direct', 'off', 'on'] as const) await load(urlOf(t), keyOf(t), 300, CONCURRENCY, s.body, 0, agents[t]);
    await settle();
    // CPU from here until recording has caught up after the last block: at idle priority
    // recording may finish after its block, and it still costs what it costs.
    const offCpu0 = sensorCpu(off);
    const onCpu0 = sensorCpu(on);
    const brokerCpu0 = cpuSeconds(s.mock.pid);
    for (let turn = 0; turn < BLOCKS; turn++) {
      const means: Partial<Record<Target, number>> = {};
      for (const t of ORDERS[turn % ORDERS.length]!) {
        const irq0 = interruptCounts();
        const r = await load(urlOf(t), keyOf(t), BLOCK_REQUESTS, CONCURRENCY, s.body, RATE, agents[t]);
        const irq1 = interruptCounts();
        interrupts[t].tlb += irq1.tlb - irq0.tlb;
        interrupts[t].resched += irq1.resched - irq0.resched;
        errors += r.errors;
        samples[t].push(...r.latencies);
        seconds[t] += r.seconds;
        means[t] = r.latencies.reduce((a, b) => a + b, 0) / r.latencies.length;
        if (t === 'on') {
          // How far recording trailed its block (records not yet handed to Kafka): near zero
          // means it kept up during the block rather than running in the settle pause.
          backlog.push((await sensors.on.stats()).queued);
        }
        await settle();
      }
      turns.push(((means.on! - means.off!) / means.off!) * 100);
      if ((turn + 1) % 10 === 0 || turn + 1 === BLOCKS) console.log(`[bench] ${turn + 1}/${BLOCKS} turns`);
    }
    const onStats = await on.stats();
    const offCpu = sensorCpu(off);
    const onCpu = sensorCpu(on);
    const perRequest = (sec: number) => (sec * 1e6) / (BLOCKS * BLOCK_REQUESTS);
    const total = (c: { relay: number; main: number; other: number }) => c.relay + c.main + c.other;
    cpuPerRequestUs = {
      sensorOff: perRequest(total(offCpu) - total(offCpu0)),
      sensorOffRelay: perRequest(offCpu.relay - offCpu0.relay),
      sensorOn: perRequest(total(onCpu) - total(onCpu0)),
      broker: perRequest(cpuSeconds(s.mock.pid) - brokerCpu0),
      sensorOnThreads: { relay: perRequest(onCpu.relay - onCpu0.relay), main: perRequest(onCpu.main - onCpu0.main), other: perRequest(onCpu.other - onCpu0.other) },
    };
    console.log(`[bench] recording-on forwarder: ${onStats.captured} captured, ${onStats.published} published, ${onStats.spooled} spooled, dropped ${JSON.stringify(onStats.dropped)}; client errors ${errors}`);
  } finally {
    for (const a of Object.values(agents)) a.destroy();
    await off?.stop();
    await on?.stop();
  }
  const names: Record<Target, string> = { direct: 'direct', off: 'forwarder, recording off', on: 'forwarder, recording on' };
  const pooled = {} as Record<Target, LatencyResult>;
  for (const t of ['direct', 'off', 'on'] as const) pooled[t] = summarize(names[t], { latencies: samples[t], seconds: seconds[t] });
  const added = (k: 'off' | 'on') => ({ p50: pooled[k].p50 - pooled.direct.p50, p99: pooled[k].p99 - pooled.direct.p99, mean: pooled[k].mean - pooled.direct.mean });
  const report: LatencyReport = {
    blocks: BLOCKS,
    blockRequests: BLOCK_REQUESTS,
    pooled,
    addedOff: added('off'),
    addedOn: added('on'),
    addedOnVsOffPct: {
      mean: ((pooled.on.mean - pooled.off.mean) / (pooled.off.mean - pooled.direct.mean)) * 100,
      p50: ((pooled.on.p50 - pooled.off.p50) / (pooled.off.p50 - pooled.direct.p50)) * 100,
    },
    recordingOnVsOffPct: ((pooled.on.mean - pooled.off.mean) / pooled.off.mean) * 100,
    recordingOnVsOffP50Pct: ((pooled.on.p50 - pooled.off.p50) / pooled.off.p50) * 100,
    perTurnOnVsOffPct: { median: median(turns), turns },
    backlogAtBlockEnd: { median: median(backlog), max: Math.max(...backlog) },
    cpuPerRequestUs,
    interruptsPerRequest: Object.fromEntries((['direct', 'off', 'on'] as const).map((t) => [t, { tlb: interrupts[t].tlb / samples[t].length, resched: interrupts[t].resched / samples[t].length }])) as Record<Target, { tlb: number; resched: number }>,
  };

  const rows: string[][] = [['target', 'req/s', 'p50 ms', 'p90 ms', 'p99 ms', 'mean ms']];
  for (const t of ['direct', 'off', 'on'] as const) rows.push([pooled[t].target, pooled[t].rps.toFixed(0), ms(pooled[t].p50), ms(pooled[t].p90), ms(pooled[t].p99), ms(pooled[t].mean)]);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  console.log('');
  for (const r of rows) console.log(r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '));
  console.log('');
  const { addedOff, addedOn } = report;
  const signed = (x: number) => `${x >= 0 ? '+' : ''}${x.toFixed(2)} %`;
  console.log(`${BLOCKS} turns of ${BLOCK_REQUESTS} requests per target; added latency (forwarder − direct, pooled): recording off p50 ${ms(addedOff.p50)} ms, mean ${ms(addedOff.mean)} ms; recording on p50 ${ms(addedOn.p50)} ms, mean ${ms(addedOn.mean)} ms`);
  console.log(`CPU per measured request (µs, until recording caught up): forwarder recording off ${cpuPerRequestUs.sensorOff.toFixed(0)} (relay thread ${cpuPerRequestUs.sensorOffRelay.toFixed(0)}), recording on ${cpuPerRequestUs.sensorOn.toFixed(0)} (relay threads ${cpuPerRequestUs.sensorOnThreads.relay.toFixed(0)}, main thread ${cpuPerRequestUs.sensorOnThreads.main.toFixed(0)}, other threads ${cpuPerRequestUs.sensorOnThreads.other.toFixed(0)}), Kafka broker ${cpuPerRequestUs.broker.toFixed(0)}`);
  const irq = report.interruptsPerRequest;
  console.log(`interrupts per request during each target's blocks (machine-wide): TLB shootdowns direct ${irq.direct.tlb.toFixed(2)}, recording off ${irq.off.tlb.toFixed(2)}, on ${irq.on.tlb.toFixed(2)}; rescheduling IPIs ${irq.direct.resched.toFixed(2)}, ${irq.off.resched.toFixed(2)}, ${irq.on.resched.toFixed(2)}`);
  const sortedTurns = [...turns].sort((a, b) => a - b);
  console.log(`recording backlog when its block ended (records not yet handed to Kafka, of ${BLOCK_REQUESTS}): median ${report.backlogAtBlockEnd.median}, max ${report.backlogAtBlockEnd.max}`);
  console.log(`recording on vs off, end-to-end through the forwarder: p50 ${signed(report.recordingOnVsOffP50Pct)}, mean ${signed(report.recordingOnVsOffPct)}; per-turn ratios of the means: median ${signed(report.perTurnOnVsOffPct.median)} (quartiles ${signed(percentile(sortedTurns, 25))} / ${signed(percentile(sortedTurns, 75))})`);
  const goal = report.addedOnVsOffPct.mean;
  console.log(`recording on vs off, the forwarder's added latency (pooled mean; p50 ${signed(report.addedOnVsOffPct.p50)}): ${signed(goal)} (goal < 5 %) → ${goal < 5 ? 'OK' : 'OVER GOAL'}${goal < -5 ? ' (recording measured faster than not recording: this run is noise-bound)' : ''}`);
  return report;
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
    await waitFor(async () => inKafka(await sensor.stats()) >= publishedBefore + BURST, 120_000, 'the burst published to Kafka', async () => ({ recorder: await sensor.stats(), output: sensor.output().slice(-1000) }));
    const tKafka = performance.now();
    await waitFor(async () => (await ingest.count('SELECT count() FROM exchanges')) >= baseline + BURST, 300_000, 'the burst in ClickHouse', async () => (await ingest.stats()).stats);
    const tCh = performance.now();
    const st = await sensor.stats();
    const ist = (await ingest.stats()).stats;
    const throughput = {
      exchanges: BURST,
      concurrency: BURST_CONCURRENCY,
      clientErrors: r.errors,
      clientSeconds: (tSent - t0) / 1000,
      clientRps: BURST / ((tSent - t0) / 1000),
      toKafkaSeconds: (tKafka - t0) / 1000,
      recordsPerSecondToKafka: BURST / ((tKafka - t0) / 1000),
      toClickHouseSeconds: (tCh - t0) / 1000,
      recordsPerSecondToClickHouse: BURST / ((tCh - t0) / 1000),
      spooled: st.spooled,
      ingestInserts: ist.batchesFlushed,
      ingestRowsPerInsert: ist.exchangesInserted / Math.max(1, ist.batchesFlushed),
    };
    console.log(
      `throughput: ${throughput.exchanges} exchanges at concurrency ${throughput.concurrency}: clients ${throughput.clientRps.toFixed(0)} req/s; forwarder → Kafka ${throughput.recordsPerSecondToKafka.toFixed(0)} records/s; → ClickHouse ${throughput.recordsPerSecondToClickHouse.toFixed(0)} records/s (${throughput.toClickHouseSeconds.toFixed(1)} s, ${throughput.ingestInserts} inserts of ${throughput.ingestRowsPerInsert.toFixed(0)} rows on average); spooled ${throughput.spooled}, client errors ${throughput.clientErrors}`,
    );
    return throughput;
  } finally {
    await burstSensor?.stop();
    await ingest.stop();
  }
}

async function main(): Promise<void> {
  const mock = await privateKafkaMock();
  const up = await startMockUpstream({ keepRequests: 0 });
  // A short streamed answer, immediately: the bench measures the forwarder, not the model.
  up.respond = () => reply.stream({ content: [{ type: 'text', text: 'Bench answer with a few words in it.' }] });
  const key = testKey('tenant-bench');
  const bodies = Array.from({ length: 64 }, (_, i) => messageBody({ tag: `bench-${i}`, seq: i, stream: true, padBytes: BODY_BYTES }));
  const setup: Setup = {
    mock,
    up,
    key,
    body: (i: number) => bodies[i % bodies.length]!,
    sensorConfig: (recording, topic) => ({ brokers: mock.brokers, topic, upstreamUrl: up.url, keys: [key], spoolDir: mkdtempSync(join(tmpdir(), 'glitch-bench-spool-')), threads: THREADS, recording: recording && !CONTROL_AA, recordingPriority: PRIORITY, logLevel: 'error', ...(recording ? {} : { relayInMainThread: OFF_RELAY === 'main' }) }),
  };
  if (CONTROL_AA) console.log('[bench] --control=aa: the "recording on" forwarder does not record; "on vs off" below is the bench\'s own bias and noise');
  console.log(`[bench] pipeline: ${cpus().length} cores, Node ${process.version}, forwarder threads ${THREADS}, recording priority ${PRIORITY}, request body ${BODY_BYTES} B, latency phase ${RATE > 0 ? `paced at ${RATE} req/s` : 'closed loop'} with ${CONCURRENCY} clients, kafka: private librdkafka mock ${mock.version} (latency phase: broker priority ${BROKER_PRIORITY})`);
  if (!SINGLE_THREADED_GC) console.log('[bench] note: this process runs without --single-threaded-gc (use npm run bench:pipeline): its GC helper threads will stall the forwarder under test now and then');
  let latency: LatencyReport | null = null;
  let throughput: Record<string, number> | null = null;
  try {
    if (ONLY !== 'throughput') {
      if (BROKER_PRIORITY === 'idle') setSchedulingPolicy(mock.pid, 'idle');
      latency = await latencyPhase(setup);
      if (BROKER_PRIORITY === 'idle') setSchedulingPolicy(mock.pid, 'normal');
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
        config: { controlAA: CONTROL_AA, offRelay: OFF_RELAY, brokerPriority: BROKER_PRIORITY, gapMs: GAP_MS, recordingPriority: PRIORITY, blocks: BLOCKS, blockRequests: BLOCK_REQUESTS, concurrency: CONCURRENCY, rate: RATE, bodyBytes: BODY_BYTES, threads: THREADS, singleThreadedGc: SINGLE_THREADED_GC, kafka: `librdkafka mock ${mock.version}`, clickhouse: 'chDB (ingest child process)' },
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
