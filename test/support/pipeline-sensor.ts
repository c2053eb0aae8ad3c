// A forwarder process with recording on, for tests that kill it: startForwarder +
// RecordPublisher + DiskSpool + Kafka bus, composed from GLITCH_TEST_SENSOR (JSON, see
// SensorChildConfig). Talks to its parent over IPC: sends {type:'ready', url, port} once
// listening, answers {type:'stats'} with the publisher's stats. SIGTERM stops it gracefully
// (records flushed to Kafka or the spool); SIGKILL is a crash.
//
// startSensorChild() (below) runs it from a test.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RecordingCpus, RecordingPriority, StaticKey } from '@glitch/forwarder';
import type { PublisherStats } from '@glitch/recorder';
import { cpuProfileFlags, FORWARDER_NODE_FLAGS, repoRoot } from './forwarder.js';

export interface SensorChildConfig {
  brokers: string[];
  topic: string;
  upstreamUrl: string;
  keys: StaticKey[];
  spoolDir: string;
  threads?: number;
  logLevel?: string;
  /** false: no recorder (baseline). Default true. */
  recording?: boolean;
  /** See SensorOptions.recordingPriority (the services default to `idle`). */
  recordingPriority?: RecordingPriority;
  /** See SensorOptions.relayInMainThread. */
  relayInMainThread?: boolean;
  /** See SensorOptions.recordingCpus (the services default to `auto`). */
  recordingCpus?: RecordingCpus;
  /** See SensorOptions.captureHandoffDelayMs. */
  captureHandoffDelayMs?: number;
  /** Flags of the forwarder's usual node flags (FORWARDER_NODE_FLAGS) to leave out, by name (to test the warnings). */
  withoutNodeFlags?: string[];
}

type FromSensor = { type: 'ready'; url: string; port: number; relayThreadIds: number[] } | { type: 'stats'; id: number; stats: PublisherStats } | { type: 'error'; message: string };
type ToSensor = { type: 'stats'; id: number };

async function main(): Promise<void> {
  const { createLogger } = await import('@glitch/log');
  const { startSensor } = await import('./pipeline.js');
  const config = JSON.parse(process.env.GLITCH_TEST_SENSOR ?? '') as SensorChildConfig;
  const logger = createLogger({ name: 'pipeline-sensor', level: (config.logLevel ?? 'error') as 'error' });
  const send = (m: FromSensor) => process.send?.(m);
  const sensor = await startSensor({ ...config, logger });
  process.on('message', (m: ToSensor) => {
    if (m.type === 'stats') send({ type: 'stats', id: m.id, stats: sensor.publisher.stats });
  });
  process.once('SIGTERM', () => {
    void sensor.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
  send({ type: 'ready', url: sensor.forwarder.url, port: sensor.forwarder.port, relayThreadIds: sensor.forwarder.relayThreadIds() });
}

export interface SensorChild {
  url: string;
  pid: number;
  /** Kernel thread ids of the child's relay threads. */
  relayThreadIds: number[];
  child: ChildProcess;
  stats(): Promise<PublisherStats>;
  output(): string;
  /** SIGKILL: a crash, nothing flushed. Resolves when the process is gone. */
  kill(): Promise<void>;
  /** SIGTERM: graceful stop. */
  stop(): Promise<void>;
}

/** How a bench starts one sensor differently from the others (a variant under comparison). */
export interface SensorChildSpawn {
  /** Node flags after the forwarder's own. */
  nodeFlags?: string[];
  /** Environment on top of this process's. */
  env?: Record<string, string>;
}

export async function startSensorChild(config: SensorChildConfig, readyTimeoutMs = 30_000, spawnWith: SensorChildSpawn = {}): Promise<SensorChild> {
  const script = fileURLToPath(import.meta.url);
  let out = '';
  // GLITCH_BENCH_SENSOR_FLAGS='--trace-gc …': extra V8/Node flags for the sensor; with
  // GLITCH_BENCH_SENSOR_LOG_DIR=/dir its whole output also goes to /dir/sensor-<pid>.log.
  const extraFlags = [...(process.env.GLITCH_BENCH_SENSOR_FLAGS?.split(' ').filter((f) => f !== '') ?? []), ...(spawnWith.nodeFlags ?? [])];
  const nodeFlags = FORWARDER_NODE_FLAGS.filter((f) => !(config.withoutNodeFlags ?? []).includes(f.split('=')[0]!));
  const child = spawn(process.execPath, [...nodeFlags, ...cpuProfileFlags(), ...extraFlags, '--conditions=source', '--import', 'tsx', script], {
    cwd: repoRoot,
    env: { ...process.env, ...spawnWith.env, GLITCH_TEST_SENSOR: JSON.stringify(config) },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out = (out + d).slice(-100_000)));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out = (out + d).slice(-100_000)));
  if (process.env.GLITCH_BENCH_SENSOR_LOG_DIR) {
    const log = createWriteStream(join(process.env.GLITCH_BENCH_SENSOR_LOG_DIR, `sensor-${child.pid}.log`));
    // Two sources into one file: neither may end it; the child's exit does.
    child.stdout!.pipe(log, { end: false });
    child.stderr!.pipe(log, { end: false });
    child.once('exit', () => log.end());
  }
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  let nextId = 0;
  const waiting = new Map<number, (s: PublisherStats) => void>();
  child.on('message', (m: FromSensor) => {
    if (m.type === 'stats') {
      waiting.get(m.id)?.(m.stats);
      waiting.delete(m.id);
    }
  });
  const ready = await new Promise<{ url: string; relayThreadIds: number[] }>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`sensor child not ready within ${readyTimeoutMs} ms; output:\n${out}`));
    }, readyTimeoutMs);
    child.on('message', (m: FromSensor) => {
      if (m.type === 'ready') {
        clearTimeout(timer);
        resolve(m);
      }
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`sensor child exited (${child.exitCode ?? child.signalCode}) before ready; output:\n${out}`));
    });
  });
  return {
    url: ready.url,
    pid: child.pid!,
    relayThreadIds: ready.relayThreadIds,
    child,
    output: () => out,
    stats() {
      return new Promise((resolve, reject) => {
        if (child.exitCode !== null || child.signalCode !== null) return reject(new Error(`sensor child is gone; output:\n${out}`));
        const id = nextId++;
        waiting.set(id, resolve);
        child.send({ type: 'stats', id } satisfies ToSensor);
      });
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((e: unknown) => {
    process.stderr.write(`pipeline-sensor: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  });
}
