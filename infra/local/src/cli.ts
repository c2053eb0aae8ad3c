// `npm run infra:up` / `infra:down`: Redis and the Kafka mock for developing by hand.
// `up` starts a detached supervisor that owns both launchers (the Kafka mock stops with its
// parent) and records their addresses in .glitch/infra.json; `down` stops the supervisor.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startKafkaMock } from './kafka-mock.js';
import { startRedis } from './redis.js';

const TOPICS = [
  { name: 'glitch.exchanges.v1', partitions: 8 },
  { name: 'glitch.findings.v1', partitions: 4 },
  { name: 'glitch.deadletter.v1', partitions: 1 },
];

interface InfraState {
  pid: number;
  redisUrl: string;
  kafkaBrokers: string;
  kafkaControl: string;
}

function stateFile(dataDir: string): string {
  return join(resolve(dataDir), 'infra.json');
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function readState(dataDir: string): InfraState | undefined {
  const f = stateFile(dataDir);
  if (!existsSync(f)) return undefined;
  const s = JSON.parse(readFileSync(f, 'utf8')) as InfraState;
  return alive(s.pid) ? s : undefined;
}

function printState(s: InfraState): void {
  console.log(`redis:  ${s.redisUrl}`);
  console.log(`kafka:  ${s.kafkaBrokers} (librdkafka mock cluster; control ${s.kafkaControl})`);
  console.log('use them with:');
  console.log(`  export GLITCH_REDIS_URL=${s.redisUrl}`);
  console.log(`  export GLITCH_KAFKA_BROKERS=${s.kafkaBrokers}`);
}

async function up(dataDir: string): Promise<number> {
  const running = readState(dataDir);
  if (running) {
    console.log(`already running (supervisor pid ${running.pid})`);
    printState(running);
    return 0;
  }
  mkdirSync(resolve(dataDir), { recursive: true });
  rmSync(stateFile(dataDir), { force: true });
  const self = fileURLToPath(import.meta.url);
  const child = spawn(process.execPath, [...process.execArgv, self, 'supervise', dataDir], { detached: true, stdio: 'ignore' });
  child.unref();
  const deadline = Date.now() + 60_000; // the first run compiles the Kafka launcher
  while (Date.now() < deadline) {
    const s = readState(dataDir);
    if (s) {
      printState(s);
      return 0;
    }
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  console.error(`infrastructure did not come up; see ${join(resolve(dataDir), 'infra.log')}`);
  return 1;
}

async function supervise(dataDir: string): Promise<void> {
  const logFile = join(resolve(dataDir), 'infra.log');
  const log = (line: string) => writeFileSync(logFile, `${new Date().toISOString()} ${line}\n`, { flag: 'a' });
  try {
    const redis = await startRedis({ persist: true, dataDir: join(resolve(dataDir), 'redis') });
    const kafka = await startKafkaMock({ topics: TOPICS, log });
    const state: InfraState = { pid: process.pid, redisUrl: redis.url, kafkaBrokers: kafka.brokers.join(','), kafkaControl: kafka.controlAddress };
    writeFileSync(stateFile(dataDir), JSON.stringify(state, null, 2) + '\n');
    log(`up: ${JSON.stringify(state)}`);
    const stop = async () => {
      log('stopping');
      await Promise.allSettled([redis.stop(), kafka.stop()]);
      rmSync(stateFile(dataDir), { force: true });
      process.exit(0);
    };
    process.on('SIGTERM', () => void stop());
    process.on('SIGINT', () => void stop());
    setInterval(() => {}, 1 << 30); // stay alive until told to stop
  } catch (e) {
    log(`failed: ${(e as Error).message}`);
    process.exit(1);
  }
}

async function down(dataDir: string): Promise<number> {
  const s = readState(dataDir);
  if (!s) {
    console.log('not running');
    rmSync(stateFile(dataDir), { force: true });
    return 0;
  }
  process.kill(s.pid, 'SIGTERM');
  const deadline = Date.now() + 15_000;
  while (alive(s.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  if (alive(s.pid)) {
    console.error(`supervisor ${s.pid} did not stop in 15 s`);
    return 1;
  }
  console.log('stopped');
  return 0;
}

const [command, dir = process.env.GLITCH_DATA_DIR || '.glitch'] = process.argv.slice(2);
if (command === 'supervise') {
  void supervise(dir);
} else if (command === 'up') {
  up(dir).then((c) => process.exit(c), (e: unknown) => (console.error(e), process.exit(1)));
} else if (command === 'down') {
  down(dir).then((c) => process.exit(c), (e: unknown) => (console.error(e), process.exit(1)));
} else {
  console.error('usage: infra up|down [dataDir]');
  process.exit(2);
}
