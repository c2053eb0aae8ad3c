// Ingest: a consumer group on the exchanges and findings topics that writes ClickHouse.
//
// Exactly-once into ClickHouse, with at-least-once delivery underneath:
// - messages are batched across partitions by rows, bytes and time, and a batch is inserted
//   with a dedup token derived from the offsets it covers (a retried insert adds nothing);
// - offsets are committed only after ClickHouse acknowledged (the handler's outcomes wait
//   for the insert);
// - after a restart or rebalance, offsets at or below what the table already holds for that
//   partition (max(kafka_offset)) are skipped, so a batch inserted but not committed before a
//   crash is not inserted again (this keeps the usage rollup exact, not just `FINAL` reads);
// - tables are ReplacingMergeTree on the record id for anything that still slips through.
// Poison messages go to the dead-letter topic with the reason; ClickHouse failures pause
// consumption (handlers hold their batches) and retry with back-off, committing nothing.
import { createKafkaBus, type Bus, type KafkaBusOptions, type BusMessage, type DeliveredBatch, type Outcome, type Subscription, type SubscriptionStats, deadLetter, ok, retry, sleep } from '@glitch/bus';
import type { Logger } from '@glitch/log';
import { ExchangeRecord, Finding, TOPICS, decode } from '@glitch/records';
import {
  dedupToken,
  insertExchanges,
  insertFindings,
  insertSecurityEvents,
  insertedWatermarks,
  migrate,
  openDatabase,
  securityEventsFromExchange,
  type ClickHouseClient,
  type ClickHouseTarget,
  type OffsetRange,
  type Provenance,
} from '@glitch/store';

export interface IngestOptions {
  /** An existing bus (embedded mode's in-memory bus); not closed by stop(). */
  bus?: Bus;
  /** Or Kafka brokers: ingest creates (and closes) a Kafka bus. */
  kafka?: { brokers: string[]; clientId?: string; consumer?: KafkaBusOptions['consumer'] };
  /** An existing client (not closed by stop()), or a target ingest opens itself. */
  clickhouse: { client: ClickHouseClient } | { target: ClickHouseTarget; database?: string };
  /** Apply migrations at start (default true), with the retention TTL in days. */
  migrate?: boolean | { ttlDays?: number };
  groupId: string;
  /** Flush when this many rows are waiting… */
  batchRows: number;
  /**
   * …or once this long has passed since the previous insert began, or since start (at most
   * one insert per batchMs, and no waiting when a fetch-and-insert cycle already took that
   * long, or after a quiet spell)…
   */
  batchMs: number;
  /** …or when they hold this many bytes (default 64 MiB; chDB takes an insert as one string). */
  batchBytes?: number;
  topics?: Partial<{ exchanges: string; findings: string; deadLetter: string }>;
  /** Back-off between ClickHouse retries (doubles, with jitter). Default 200 ms … 10 s. */
  backoff?: { initialMs: number; maxMs: number };
  /** How long stop() keeps retrying a failing flush before giving up on it (uncommitted). Default 10 s. */
  stopGraceMs?: number;
  logger: Logger;
}

export interface IngestStats {
  /** Messages the bus delivered (a chunked record counts once). */
  received: number;
  exchangesInserted: number;
  securityEventsInserted: number;
  findingsInserted: number;
  /** Poison messages sent to the dead-letter topic. */
  deadLettered: number;
  /** Replayed messages skipped because ClickHouse already held their offsets. */
  skippedReplayed: number;
  batchesFlushed: number;
  /** Failed ClickHouse calls (each one retried after a back-off). */
  clickhouseFailures: number;
  /** True while ClickHouse calls fail: consumption is held and nothing is committed. */
  paused: boolean;
  pausedSince: number | null;
  /** Back-off waits taken so far, most recent last (at most 20 kept). */
  recentBackoffsMs: number[];
  lastError: string | null;
  bus: SubscriptionStats;
}

export interface Ingest {
  stats(): IngestStats;
  /** Flushes what is pending (within stopGraceMs), commits, leaves the group, closes what it opened. */
  stop(): Promise<void>;
  /** Crash-like: abandons pending work without committing it (tests; fatal errors). */
  abort(): Promise<void>;
}

type Row =
  | { table: 'exchanges'; record: ExchangeRecord; provenance: Provenance; firstOffset: string; bytes: number }
  | { table: 'findings'; finding: Finding; provenance: Provenance; firstOffset: string; bytes: number };

class Stopping extends Error {
  constructor() {
    super('ingest is stopping before ClickHouse acknowledged this batch');
  }
}

export async function startIngest(opts: IngestOptions): Promise<Ingest> {
  const logger = opts.logger;
  const topics = {
    exchanges: opts.topics?.exchanges ?? TOPICS.exchanges,
    findings: opts.topics?.findings ?? TOPICS.findings,
    deadLetter: opts.topics?.deadLetter ?? TOPICS.deadLetter,
  };
  const batchBytes = opts.batchBytes ?? 64 * 1024 * 1024;
  const backoff = opts.backoff ?? { initialMs: 200, maxMs: 10_000 };
  const stopGraceMs = opts.stopGraceMs ?? 10_000;
  if (!opts.bus && !opts.kafka) throw new Error('startIngest needs a bus or kafka brokers');

  const ownsClient = !('client' in opts.clickhouse);
  const client = 'client' in opts.clickhouse ? opts.clickhouse.client : await openDatabase(opts.clickhouse.target, opts.clickhouse.database, { create: true });
  if (opts.migrate !== false) {
    const ttlDays = typeof opts.migrate === 'object' ? opts.migrate.ttlDays : undefined;
    const r = await migrate(client, ttlDays === undefined ? {} : { ttlDays });
    logger.info({ database: r.database, applied: r.applied, ttlDays: r.ttlDays, ttlChanged: r.ttlChanged }, 'ClickHouse schema ready');
  }
  const ownsBus = !opts.bus;
  const bus =
    opts.bus ??
    createKafkaBus({
      brokers: opts.kafka!.brokers,
      clientId: opts.kafka!.clientId ?? 'glitch-ingest',
      logger,
      ...(opts.kafka!.consumer ? { consumer: opts.kafka!.consumer } : {}),
    });

  const stats: Omit<IngestStats, 'bus'> = {
    received: 0,
    exchangesInserted: 0,
    securityEventsInserted: 0,
    findingsInserted: 0,
    deadLettered: 0,
    skippedReplayed: 0,
    batchesFlushed: 0,
    clickhouseFailures: 0,
    paused: false,
    pausedSince: null,
    recentBackoffsMs: [],
    lastError: null,
  };
  const life = new AbortController(); // aborted by abort(): stop retrying, abandon waits
  let stopDeadline: number | null = null; // set by stop(): give up retrying after it

  // ---- ClickHouse calls with back-off -------------------------------------------------
  async function withRetry<T>(what: string, call: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      if (life.signal.aborted) throw new Stopping();
      try {
        const r = await call();
        if (stats.paused) {
          logger.info({ what, pausedMs: Date.now() - (stats.pausedSince ?? Date.now()) }, 'ClickHouse is back; resuming');
          stats.paused = false;
          stats.pausedSince = null;
        }
        return r;
      } catch (e) {
        if (life.signal.aborted) throw new Stopping();
        stats.clickhouseFailures++;
        stats.lastError = `${what}: ${(e as Error).message}`;
        if (!stats.paused) {
          stats.paused = true;
          stats.pausedSince = Date.now();
          logger.warn({ what, err: e }, 'ClickHouse call failed; holding consumption and retrying with back-off (nothing is committed meanwhile)');
        }
        if (stopDeadline !== null && Date.now() >= stopDeadline) throw new Stopping();
        const base = Math.min(backoff.maxMs, backoff.initialMs * 2 ** Math.min(attempt, 20));
        const delay = Math.round(base * (0.8 + Math.random() * 0.4));
        stats.recentBackoffsMs.push(delay);
        if (stats.recentBackoffsMs.length > 20) stats.recentBackoffsMs.shift();
        await sleep(delay, life.signal);
      }
    }
  }

  // ---- what ClickHouse already holds, per partition ------------------------------------
  const watermarks = new Map<string, { generation: number; offset: bigint }>();
  async function watermark(topic: string, partition: number, generation: number): Promise<bigint> {
    const key = `${topic}/${partition}`;
    const known = watermarks.get(key);
    if (known && known.generation === generation) return known.offset;
    const table = topic === topics.findings ? 'findings' : 'exchanges';
    const loaded = await withRetry(`read ${table} watermarks`, () => insertedWatermarks(client, table, topic));
    const offset = loaded.get(partition) ?? -1n;
    watermarks.set(key, { generation, offset });
    return offset;
  }

  // ---- batching ------------------------------------------------------------------------
  interface Waiter {
    resolve: () => void;
    reject: (e: Error) => void;
  }
  let pending: Row[] = [];
  let pendingBytes = 0;
  let waiters: Waiter[] = [];
  let timer: NodeJS.Timeout | undefined;
  let flushing: Promise<void> | null = null;
  /**
   * When the last insert began. The wait counts from there, not from the first waiting row:
   * the bus delivers a partition's next messages only after this batch is stored, so time
   * spent waiting after a slow fetch-and-insert cycle only idled the pipeline (with the
   * librdkafka mock, which returns one record batch per partition per fetch, it capped
   * ingest at one fetch per batchMs + insert). Start counts as an insert: the backlog a
   * starting ingest finds is gathered for one batchMs first.
   */
  let lastInsertAt = performance.now();

  function enqueue(rows: Row[]): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      pending.push(...rows);
      for (const r of rows) pendingBytes += r.bytes;
      waiters.push({ resolve, reject });
      if (pending.length >= opts.batchRows || pendingBytes >= batchBytes || stopDeadline !== null) void flushNow();
      else timer ??= setTimeout(() => void flushNow(), Math.max(0, lastInsertAt + opts.batchMs - performance.now()));
    });
  }

  function flushNow(): Promise<void> {
    if (timer) clearTimeout(timer);
    timer = undefined;
    if (flushing) return flushing;
    flushing = (async () => {
      while (pending.length && !life.signal.aborted) {
        const rows = pending;
        const ws = waiters;
        pending = [];
        pendingBytes = 0;
        waiters = [];
        try {
          lastInsertAt = performance.now();
          await insertBatch(rows);
          for (const w of ws) w.resolve();
        } catch (e) {
          for (const w of ws) w.reject(e as Error);
        }
      }
    })().finally(() => {
      flushing = null;
    });
    return flushing;
  }

  async function insertBatch(rows: Row[]): Promise<void> {
    const exchanges = rows.filter((r): r is Extract<Row, { table: 'exchanges' }> => r.table === 'exchanges');
    const findings = rows.filter((r): r is Extract<Row, { table: 'findings' }> => r.table === 'findings');
    // Exchanges go last: their max(kafka_offset) is what a restart trusts, so everything
    // derived from them must already be stored when it moves.
    if (exchanges.length) {
      const events = exchanges.flatMap((r) => securityEventsFromExchange(r.record).map((event) => ({ event, provenance: r.provenance })));
      if (events.length) {
        const token = dedupToken('security_events', ranges(exchanges));
        await withRetry('insert security_events', () => insertSecurityEvents(client, events, token));
        stats.securityEventsInserted += events.length;
      }
    }
    if (findings.length) {
      const token = dedupToken('findings', ranges(findings));
      await withRetry('insert findings', () => insertFindings(client, findings, token));
      stats.findingsInserted += findings.length;
    }
    if (exchanges.length) {
      const token = dedupToken('exchanges', ranges(exchanges));
      await withRetry('insert exchanges', () => insertExchanges(client, exchanges, token));
      stats.exchangesInserted += exchanges.length;
    }
    stats.batchesFlushed++;
    for (const r of rows) {
      const key = `${r.provenance.topic}/${r.provenance.partition}`;
      const w = watermarks.get(key);
      const offset = BigInt(r.provenance.offset);
      if (w && offset > w.offset) w.offset = offset;
    }
  }

  // ---- the bus handler -------------------------------------------------------------------
  async function handle(batch: DeliveredBatch): Promise<readonly Outcome[]> {
    stats.received += batch.messages.length;
    const outcomes: Outcome[] = [];
    const rows: Row[] = [];
    let wm: bigint;
    try {
      wm = await watermark(batch.topic, batch.partition, batch.generation);
    } catch (e) {
      if (e instanceof Stopping) return batch.messages.map(() => retry(e.message));
      throw e;
    }
    for (const m of batch.messages) {
      const row = toRow(batch.topic, m);
      if ('reason' in row) {
        stats.deadLettered++;
        outcomes.push(deadLetter(row.reason));
      } else if (BigInt(m.offset) <= wm) {
        stats.skippedReplayed++;
        outcomes.push(ok);
      } else {
        rows.push(row);
        outcomes.push(ok);
      }
    }
    if (rows.length === 0) return outcomes;
    try {
      await enqueue(rows);
    } catch (e) {
      if (e instanceof Stopping) return batch.messages.map((_, i) => (outcomes[i]!.kind === 'dead_letter' ? outcomes[i]! : retry(e.message)));
      throw e;
    }
    return outcomes;
  }

  function toRow(topic: string, m: BusMessage): Row | { reason: string } {
    const provenance: Provenance = { topic, partition: m.partition, offset: m.offset };
    if (topic === topics.findings) {
      const d = decode(Finding, m.value);
      return d.ok ? { table: 'findings', finding: d.value, provenance, firstOffset: m.firstOffset, bytes: m.value.length } : { reason: `not a Finding: ${d.reason}` };
    }
    const d = decode(ExchangeRecord, m.value);
    return d.ok ? { table: 'exchanges', record: d.value, provenance, firstOffset: m.firstOffset, bytes: m.value.length } : { reason: `not an ExchangeRecord: ${d.reason}` };
  }

  let subscription: Subscription;
  try {
    subscription = await bus.subscribe({
      groupId: opts.groupId,
      topics: [topics.exchanges, topics.findings],
      deadLetterTopic: topics.deadLetter,
      handler: handle,
    });
  } catch (e) {
    if (ownsBus) await bus.close().catch(() => undefined);
    if (ownsClient) await client.close().catch(() => undefined);
    throw e;
  }
  logger.info({ groupId: opts.groupId, topics: [topics.exchanges, topics.findings], bus: bus.kind }, 'ingest consuming');

  let ended = false;
  return {
    stats: () => ({ ...stats, recentBackoffsMs: [...stats.recentBackoffsMs], bus: subscription.stats() }),
    async stop() {
      if (ended) return;
      ended = true;
      stopDeadline = Date.now() + stopGraceMs;
      await flushNow();
      await subscription.stop();
      if (ownsBus) await bus.close();
      if (ownsClient) await client.close();
      logger.info({ stats: { ...stats } }, 'ingest stopped');
    },
    async abort() {
      if (ended) return;
      ended = true;
      life.abort();
      if (timer) clearTimeout(timer);
      for (const w of waiters) w.reject(new Stopping());
      waiters = [];
      pending = [];
      await subscription.abort();
      if (ownsBus) await bus.close();
      // An insert may still be running; a crash would not wait for it either.
      if (ownsClient) void client.close().catch(() => undefined);
    },
  };
}

/** The offset ranges rows cover, per topic/partition, for their dedup token. */
function ranges(rows: readonly { provenance: Provenance; firstOffset: string }[]): OffsetRange[] {
  const byPartition = new Map<string, OffsetRange & { firstOffset: bigint; lastOffset: bigint }>();
  for (const r of rows) {
    const key = `${r.provenance.topic}/${r.provenance.partition}`;
    const first = BigInt(r.firstOffset);
    const last = BigInt(r.provenance.offset);
    const cur = byPartition.get(key);
    if (!cur) byPartition.set(key, { topic: r.provenance.topic, partition: r.provenance.partition, firstOffset: first, lastOffset: last });
    else {
      if (first < cur.firstOffset) cur.firstOffset = first;
      if (last > cur.lastOffset) cur.lastOffset = last;
    }
  }
  return [...byPartition.values()];
}
