// An ingest process for tests that kill it: startIngest on Kafka into chDB (its own data dir:
// chDB binds one per process), configured by GLITCH_TEST_INGEST (JSON, IngestChildConfig).
// Over IPC it answers SQL queries and stats, and takes fault switches: ClickHouse down/up
// (every call fails while down, as a stopped server would), and "hang after the N-th insert
// into exchanges" (the insert lands, the acknowledgement never comes: the process is then
// killed mid-batch, after ClickHouse has the rows but before offsets are committed).
//
// startIngestChild() (below) runs it from a test.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { IngestStats } from '@glitch/ingest';
import { faultyClickHouse, type ClickHouseFaults } from './faulty-clickhouse.js';
import { cpuProfileFlags, repoRoot } from './forwarder.js';
import type { PipelineTopics } from './pipeline.js';

export interface IngestChildConfig {
  brokers: string[];
  topics: PipelineTopics;
  groupId: string;
  chdbPath: string;
  /** The N-th insert into `exchanges` (1-based) lands and never answers. */
  hangAfterInsert?: number;
  batchRows?: number;
  batchMs?: number;
}

export type FaultState = ClickHouseFaults;

type ToIngest = { type: 'query'; id: number; sql: string } | { type: 'stats'; id: number } | { type: 'clickhouse'; id: number; down: boolean };
type FromIngest =
  | { type: 'ready' }
  | { type: 'result'; id: number; rows: Record<string, unknown>[] }
  | { type: 'stats'; id: number; stats: IngestStats; fault: FaultState }
  | { type: 'ok'; id: number }
  | { type: 'error'; id: number; message: string };

async function main(): Promise<void> {
  const { createLogger } = await import('@glitch/log');
  const { startIngest } = await import('@glitch/ingest');
  const { openDatabase } = await import('@glitch/store');
  const config = JSON.parse(process.env.GLITCH_TEST_INGEST ?? '') as IngestChildConfig;
  const logger = createLogger({ name: 'pipeline-ingest', level: 'error' });
  const real = await openDatabase({ kind: 'chdb', path: config.chdbPath }, 'glitch', { create: true });
  const { client, faults: fault } = faultyClickHouse(real);
  if (config.hangAfterInsert !== undefined) fault.hang = { table: 'exchanges', nth: config.hangAfterInsert };
  const ingest = await startIngest({
    kafka: { brokers: config.brokers, consumer: { sessionTimeoutMs: 6_000, heartbeatIntervalMs: 500, maxWaitTimeMs: 100 } },
    clickhouse: { client },
    groupId: config.groupId,
    batchRows: config.batchRows ?? 10,
    batchMs: config.batchMs ?? 100,
    topics: config.topics,
    backoff: { initialMs: 100, maxMs: 600 },
    logger,
  });
  const send = (m: FromIngest) => process.send?.(m);
  process.on('message', (m: ToIngest) => {
    void (async () => {
      try {
        if (m.type === 'query') {
          const rs = await real.query({ query: m.sql, format: 'JSONEachRow' });
          send({ type: 'result', id: m.id, rows: await rs.json<Record<string, unknown>>() });
        } else if (m.type === 'stats') {
          send({ type: 'stats', id: m.id, stats: ingest.stats(), fault: { ...fault } });
        } else {
          fault.down = m.down;
          send({ type: 'ok', id: m.id });
        }
      } catch (e) {
        send({ type: 'error', id: m.id, message: (e as Error).message });
      }
    })();
  });
  process.once('SIGTERM', () => {
    void ingest.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
  send({ type: 'ready' });
}

export interface IngestChild {
  pid: number;
  child: ChildProcess;
  query<T = Record<string, unknown>>(sql: string): Promise<T[]>;
  count(sql: string): Promise<number>;
  stats(): Promise<{ stats: IngestStats; fault: FaultState }>;
  setClickHouseDown(down: boolean): Promise<void>;
  output(): string;
  kill(): Promise<void>;
  stop(): Promise<void>;
}

export async function startIngestChild(config: IngestChildConfig, readyTimeoutMs = 60_000): Promise<IngestChild> {
  const script = fileURLToPath(import.meta.url);
  let out = '';
  const child = spawn(process.execPath, [...cpuProfileFlags(), '--conditions=source', '--import', 'tsx', script], {
    cwd: repoRoot,
    env: { ...process.env, GLITCH_TEST_INGEST: JSON.stringify(config) },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out = (out + d).slice(-100_000)));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out = (out + d).slice(-100_000)));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const gone = () => child.exitCode !== null || child.signalCode !== null;
  let nextId = 0;
  const waiting = new Map<number, { resolve: (m: FromIngest) => void; reject: (e: Error) => void }>();
  child.on('message', (m: FromIngest) => {
    if (m.type === 'ready') return;
    const w = waiting.get(m.id);
    waiting.delete(m.id);
    if (m.type === 'error') w?.reject(new Error(`ingest child: ${m.message}`));
    else w?.resolve(m);
  });
  void exited.then(() => {
    for (const w of waiting.values()) w.reject(new Error(`ingest child exited; output:\n${out.slice(-3000)}`));
    waiting.clear();
  });
  const call = (m: Omit<ToIngest, 'id'> & { type: ToIngest['type'] }): Promise<FromIngest> =>
    new Promise((resolve, reject) => {
      if (gone()) return reject(new Error(`ingest child is gone; output:\n${out.slice(-3000)}`));
      const id = nextId++;
      waiting.set(id, { resolve, reject });
      child.send({ ...m, id } as ToIngest);
    });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`ingest child not ready within ${readyTimeoutMs} ms; output:\n${out}`));
    }, readyTimeoutMs);
    child.on('message', (m: FromIngest) => {
      if (m.type === 'ready') {
        clearTimeout(timer);
        resolve();
      }
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`ingest child exited (${child.exitCode ?? child.signalCode}) before ready; output:\n${out}`));
    });
  });
  const api: IngestChild = {
    pid: child.pid!,
    child,
    output: () => out,
    async query<T>(sql: string) {
      const r = await call({ type: 'query', sql } as ToIngest);
      return (r as Extract<FromIngest, { type: 'result' }>).rows as T[];
    },
    async count(sql: string) {
      const [row] = await api.query(sql);
      return Number(Object.values(row ?? {})[0]);
    },
    async stats() {
      const r = (await call({ type: 'stats' } as ToIngest)) as Extract<FromIngest, { type: 'stats' }>;
      return { stats: r.stats, fault: r.fault };
    },
    async setClickHouseDown(down: boolean) {
      await call({ type: 'clickhouse', down } as ToIngest);
    },
    async kill() {
      if (!gone()) child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (!gone()) child.kill('SIGTERM');
      await exited;
    },
  };
  return api;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((e: unknown) => {
    process.stderr.write(`pipeline-ingest: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  });
}
