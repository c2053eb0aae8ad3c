// Kafka adapter (kafkajs). Publishing: gzip-compressed batches (messages published within
// `lingerMs` share requests), partitions chosen here with Kafka's murmur2 so every outcome
// names its partition and offset, requests sent one at a time so order holds per
// partition. No idempotent producer and no admin topic creation: the librdkafka mock used
// in tests has no controller (topics are created by infra). Consuming: one kafkajs consumer
// per subscription, offsets committed by hand only after the handler's outcomes.
import { gzipSync } from 'node:zlib';
import kafkajs from 'kafkajs';
import {
  CompressionTypes,
  Kafka,
  logLevel,
  type Admin,
  type Consumer,
  type EachBatchPayload,
  type KafkaConfig,
  type LogEntry,
  type Message,
  type Producer,
} from 'kafkajs';
import { chunkMessages } from './chunking.js';
import { ConsumerCore, sleep, type RawMessage } from './consume.js';
import { combine } from './memory.js';
import { keyBuffer, partitionFor } from './partitioner.js';
import type { Bus, BusLogger, HeaderMap, OutgoingMessage, PublishOutcome, SubscribeOptions, Subscription } from './types.js';

export interface KafkaBusOptions {
  brokers: string[];
  clientId?: string;
  /** Largest message sent whole (bytes of key + value); bigger records are chunked. Default 900 000. */
  maxMessageBytes?: number;
  /**
   * How long a publish waits for others to share its request. Default 100 ms: each produce
   * request costs kafkajs (and the socket) a fixed share of CPU whatever it carries, so
   * sharing requests saves most of what publishing costs. For the forwarder's recorder, at
   * 300 records/s, 100 ms instead of 20 cut the recording thread's CPU by ~120 µs (~13 %)
   * per record (docs/benchmarks.md, "Pipeline, 2026-12-05 (noon)"). Records are off the hot
   * path, and a tenth of a second late is still live; a full request (requestMaxBytes) goes
   * at once, so at high rates requests leave sooner than this.
   */
  lingerMs?: number;
  /** Uncompressed bytes per produce request. Default maxMessageBytes. */
  requestMaxBytes?: number;
  connectionTimeoutMs?: number;
  requestTimeoutMs?: number;
  /** kafkajs retries inside one publish before its outcome is `retry`. */
  producerRetry?: { retries: number; initialRetryTime: number; maxRetryTime: number };
  /**
   * kafkajs retries for connecting and metadata (every request of this client goes through
   * them, so with the broker down a publish takes these *and* producerRetry before `retry`).
   * Default kafkajs's: 5 retries from 300 ms, ≈ 10 s. A recorder that should start spooling
   * quickly sets it low.
   */
  clientRetry?: { retries: number; initialRetryTime: number; maxRetryTime: number };
  consumer?: {
    sessionTimeoutMs?: number;
    heartbeatIntervalMs?: number;
    maxWaitTimeMs?: number;
    maxBytesPerPartition?: number;
    maxBytes?: number;
    partitionsConsumedConcurrently?: number;
  };
  logger?: BusLogger;
}

/** Gzip level of produced batches: see useInlineGzip. */
const GZIP_LEVEL = 1;
let inlineGzipInstalled = false;

/**
 * kafkajs's gzip codec compresses on the libuv pool at level 6: ~350 µs of CPU per batch
 * holding one 20 KB record, most of it the hand-off and a new zlib stream per call, which
 * made compression the largest single cost of recording. In line at level 1 it is ~40 µs,
 * for ~10 % more bytes. Blocking the publisher's thread that long is fine: it is the
 * recording thread, which yields to the relay (GLITCH_RECORDING_PRIORITY). Decompressing
 * (consumers, one call per fetched batch) stays kafkajs's. The codec table is kafkajs's
 * own module state: the first bus made swaps that entry, once.
 */
function useInlineGzip(): void {
  if (inlineGzipInstalled) return;
  inlineGzipInstalled = true;
  // Not a named ESM export of kafkajs (its CommonJS exports are not statically detectable).
  const codecs = kafkajs.CompressionCodecs;
  const kafkajsGzip = codecs[CompressionTypes.GZIP]() as { decompress(buffer: Buffer): Promise<Buffer> };
  const codec = {
    compress: async (encoder: { buffer: Buffer }): Promise<Buffer> => gzipSync(encoder.buffer, { level: GZIP_LEVEL }),
    decompress: (buffer: Buffer): Promise<Buffer> => kafkajsGzip.decompress(buffer),
  };
  codecs[CompressionTypes.GZIP] = () => codec;
}

// Broker errors that no retry fixes: the message itself is unacceptable.
const PERMANENT = new Set(['MESSAGE_TOO_LARGE', 'RECORD_LIST_TOO_LARGE', 'INVALID_RECORD', 'CORRUPT_MESSAGE', 'INVALID_TOPIC_EXCEPTION', 'TOPIC_AUTHORIZATION_FAILED', 'INVALID_REQUIRED_ACKS']);

function classify(e: unknown): PublishOutcome {
  const reasons: string[] = [];
  let cur: unknown = e;
  for (let depth = 0; cur && depth < 5; depth++) {
    const err = cur as { type?: string; message?: string; cause?: unknown; originalError?: unknown };
    if (err.message) reasons.push(err.message);
    if (err.type && PERMANENT.has(err.type)) return { kind: 'drop', reason: `${err.type}: ${reasons.join(' ← ')}` };
    cur = err.originalError ?? err.cause;
  }
  return { kind: 'retry', reason: reasons.join(' ← ') || String(e) };
}

function kafkaLogCreator(logger: BusLogger | undefined) {
  return () => (entry: LogEntry) => {
    if (!logger) return;
    const { message, ...extra } = entry.log;
    const obj = { kafkajs: entry.namespace, ...extra };
    // kafkajs logs every connection retry as an error; an outage is reported by outcomes.
    if (entry.level === logLevel.ERROR) logger.warn(obj, message);
    else logger.debug(obj, message);
  };
}

interface QueuedMessage {
  entry: Entry;
  index: number;
  message: Message;
  partition: number;
  bytes: number;
}

interface Entry {
  topic: string;
  outcomes: (PublishOutcome | undefined)[];
  remaining: number;
  failed: PublishOutcome | null;
  resolve: (o: PublishOutcome[]) => void;
}

export function createKafkaBus(opts: KafkaBusOptions): Bus {
  const logger = opts.logger;
  const maxMessageBytes = opts.maxMessageBytes ?? 900_000;
  const requestMaxBytes = opts.requestMaxBytes ?? maxMessageBytes;
  const lingerMs = opts.lingerMs ?? 100;
  useInlineGzip();
  const config: KafkaConfig = {
    clientId: opts.clientId ?? 'glitch',
    brokers: opts.brokers,
    connectionTimeout: opts.connectionTimeoutMs ?? 3_000,
    requestTimeout: opts.requestTimeoutMs ?? 30_000,
    logLevel: logLevel.WARN,
    logCreator: kafkaLogCreator(logger),
    ...(opts.clientRetry ? { retry: opts.clientRetry } : {}),
  };
  const kafka = new Kafka(config);
  let producer: Producer | undefined;
  let producerReady: Promise<Producer> | undefined;
  let admin: Promise<Admin> | undefined;
  const counters = new Map<string, number>();
  const consumers = new Set<Consumer>();
  let closed = false;

  function connectProducer(): Promise<Producer> {
    producerReady ??= (async () => {
      const p = kafka.producer({
        allowAutoTopicCreation: false,
        idempotent: false,
        maxInFlightRequests: 1,
        retry: opts.producerRetry ?? { retries: 5, initialRetryTime: 200, maxRetryTime: 2_000 },
      });
      await p.connect();
      producer = p;
      return p;
    })().catch((e: unknown) => {
      producerReady = undefined;
      throw e;
    });
    return producerReady;
  }

  // One lookup per topic shared by every concurrent publish: they resume in the order they
  // asked, so messages published back to back are queued in that order (separate lookups
  // could resolve in any order and reorder the first messages of a topic). A refresh is
  // chained after the previous lookup for the same reason.
  const partitionLookups = new Map<string, { promise: Promise<number>; stale: boolean }>();
  function partitionsOf(topic: string): Promise<number> {
    const current = partitionLookups.get(topic);
    if (current && !current.stale) return current.promise;
    const previous = current?.promise.then(
      () => undefined,
      () => undefined,
    );
    const lookup = {
      stale: false,
      promise: (async () => {
        await previous;
        admin ??= (async () => {
          const a = kafka.admin();
          await a.connect();
          return a;
        })().catch((e: unknown) => {
          admin = undefined;
          throw e;
        });
        const meta = await (await admin).fetchTopicMetadata({ topics: [topic] });
        const n = meta.topics.find((t) => t.name === topic)?.partitions.length ?? 0;
        if (n === 0) throw new Error(`topic ${topic} does not exist (topics are created by infra, not by publishers)`);
        return n;
      })(),
    };
    partitionLookups.set(topic, lookup);
    lookup.promise.catch(() => {
      lookup.stale = true; // the next publish asks again
    });
    return lookup.promise;
  }

  // ---- batching producer ----------------------------------------------------------------
  const queue: QueuedMessage[] = [];
  let queuedBytes = 0;
  let timer: NodeJS.Timeout | undefined;
  let flushing = false;

  function settle(q: QueuedMessage, outcome: PublishOutcome): void {
    const e = q.entry;
    if (e.outcomes[q.index] !== undefined) return;
    e.outcomes[q.index] = outcome;
    if (outcome.kind !== 'ok') e.failed ??= outcome;
    if (--e.remaining === 0) e.resolve(e.outcomes as PublishOutcome[]);
  }

  function kick(): void {
    if (timer) clearTimeout(timer);
    timer = undefined;
    if (flushing) return;
    flushing = true;
    void drain().finally(() => {
      flushing = false;
      if (queue.length) kick();
    });
  }

  async function drain(): Promise<void> {
    while (queue.length) {
      const request: QueuedMessage[] = [];
      let bytes = 0;
      while (queue.length && (request.length === 0 || bytes + queue[0]!.bytes <= requestMaxBytes)) {
        const q = queue.shift()!;
        queuedBytes -= q.bytes;
        // A record whose earlier chunk failed is abandoned: later chunks would only be dropped.
        if (q.entry.failed) settle(q, q.entry.failed);
        else {
          request.push(q);
          bytes += q.bytes;
        }
      }
      if (request.length) await send(request);
    }
  }

  async function send(request: QueuedMessage[]): Promise<void> {
    const byTopic = new Map<string, Message[]>();
    for (const q of request) {
      const list = byTopic.get(q.entry.topic) ?? [];
      list.push(q.message);
      byTopic.set(q.entry.topic, list);
    }
    try {
      const p = await connectProducer();
      const meta = await p.sendBatch({
        compression: CompressionTypes.GZIP,
        acks: -1,
        topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
      });
      // Messages of one topic-partition are stored in request order from baseOffset on.
      const next = new Map<string, bigint>();
      for (const r of meta) {
        if (r.errorCode !== 0) continue;
        next.set(`${r.topicName}/${r.partition}`, BigInt(r.baseOffset ?? r.offset ?? '-1'));
      }
      let failed: PublishOutcome | null = null;
      for (const q of request) {
        const k = `${q.entry.topic}/${q.partition}`;
        const offset = next.get(k);
        if (offset === undefined || offset < 0n) {
          failed = { kind: 'retry', reason: `broker returned no offset for ${k}` };
          settle(q, failed);
          continue;
        }
        next.set(k, offset + 1n);
        settle(q, { kind: 'ok', partition: q.partition, offset: String(offset) });
      }
      if (failed) failQueued(failed);
    } catch (e) {
      const outcome = classify(e);
      for (const t of byTopic.keys()) {
        const l = partitionLookups.get(t);
        if (l) l.stale = true; // partitions may have changed
      }
      logger?.debug({ err: e, messages: request.length, outcome: outcome.kind }, 'kafka produce request failed');
      if (outcome.kind === 'drop' && request.length > 1) {
        // The broker refused the request for one unacceptable message: send each alone, so
        // only that one is dropped rather than everything that shared its request.
        for (const q of request) await send([q]);
        return;
      }
      for (const q of request) settle(q, outcome);
      if (outcome.kind === 'retry') failQueued(outcome);
    }
  }

  /**
   * After a request failed, nothing queued behind it is sent: it would overtake the failed
   * messages (which their publishers will send again, or spool), breaking per-key order. Its
   * publishers get the same `retry` outcome.
   */
  function failQueued(outcome: PublishOutcome): void {
    const behind = queue.splice(0);
    queuedBytes = 0;
    for (const q of behind) settle(q, { kind: 'retry', reason: `not sent: an earlier request failed (${outcome.kind === 'ok' ? '' : outcome.reason})` });
  }

  async function enqueue(topic: string, messages: readonly OutgoingMessage[]): Promise<PublishOutcome[]> {
    if (messages.length === 0) return [];
    if (closed) return messages.map(() => ({ kind: 'drop', reason: 'bus is closed' }));
    let partitions: number;
    try {
      partitions = await partitionsOf(topic);
    } catch (e) {
      const o = classify(e);
      return messages.map(() => o);
    }
    return new Promise<PublishOutcome[]>((resolve) => {
      const entry: Entry = { topic, outcomes: messages.map(() => undefined), remaining: messages.length, failed: null, resolve };
      const counter = counters.get(topic) ?? 0;
      counters.set(topic, counter + 1);
      messages.forEach((m, index) => {
        const key = keyBuffer(m.key);
        const bytes = m.value.length + (key?.length ?? 0);
        if (bytes > maxMessageBytes) {
          settle({ entry, index, message: { value: null }, partition: -1, bytes }, { kind: 'drop', reason: `message of ${bytes} bytes exceeds maxMessageBytes ${maxMessageBytes} (publishRecord chunks large records)` });
          return;
        }
        const partition = partitionFor(key, partitions, counter);
        const message: Message = { key, value: m.value, partition, ...(m.headers ? { headers: { ...m.headers } } : {}) };
        queue.push({ entry, index, message, partition, bytes });
        queuedBytes += bytes;
      });
      if (queuedBytes >= requestMaxBytes) kick();
      else timer ??= setTimeout(kick, lingerMs);
    });
  }

  // ---- consuming --------------------------------------------------------------------------
  async function subscribe(so: SubscribeOptions): Promise<Subscription> {
    if (closed) throw new Error('bus is closed');
    const c = opts.consumer ?? {};
    const heartbeatIntervalMs = c.heartbeatIntervalMs ?? 3_000;
    const consumer = kafka.consumer({
      groupId: so.groupId,
      sessionTimeout: c.sessionTimeoutMs ?? 30_000,
      heartbeatInterval: heartbeatIntervalMs,
      maxWaitTimeInMs: c.maxWaitTimeMs ?? 500,
      maxBytesPerPartition: c.maxBytesPerPartition ?? 16 * 1024 * 1024,
      maxBytes: c.maxBytes ?? 32 * 1024 * 1024,
      allowAutoTopicCreation: false,
      retry: { retries: 8, initialRetryTime: 300, maxRetryTime: 5_000 },
    });
    const core = new ConsumerCore(so, (t, k, v) => bus.publishRecord(t, k, v), logger);
    let generation = 0;
    let assignment: Record<string, number[]> = {};
    let finished = false;
    const lastCommitted = new Map<string, bigint>();
    /** Where each partition's next batch should start, within one generation. */
    const nextExpected = new Map<string, bigint>();

    consumer.on(consumer.events.GROUP_JOIN, (e) => {
      // Fetching restarts from committed offsets after every join: forget partial state.
      generation++;
      assignment = Object.fromEntries(Object.entries(e.payload.memberAssignment).map(([t, ps]) => [t, [...ps].sort((a, b) => a - b)]));
      core.resetAll();
      lastCommitted.clear();
      nextExpected.clear();
    });
    // kafkajs restarts a crashed consumer only after retriable errors; after any other (the
    // librdkafka mock answers some SyncGroups with INVALID_REQUEST) it stays disconnected,
    // which would leave this process up but consuming nothing. Start it again ourselves.
    let restartTimer: NodeJS.Timeout | undefined;
    let restartDelayMs = 1_000;
    consumer.on(consumer.events.CRASH, (e) => {
      const restartHere = !e.payload.restart && !finished && !closed;
      core.stats.lastError = `consumer crashed: ${e.payload.error.message}${e.payload.restart || restartHere ? ' (restarting)' : ''}`;
      logger?.warn({ groupId: so.groupId, err: e.payload.error, restart: e.payload.restart || restartHere }, 'kafka consumer crashed');
      if (!restartHere) return;
      clearTimeout(restartTimer);
      restartTimer = setTimeout(() => {
        if (finished || closed) return;
        startConsuming().then(
          () => (restartDelayMs = 1_000),
          (err: unknown) => logger?.error({ groupId: so.groupId, err }, 'kafka consumer restart failed; the next crash or stop decides'),
        );
      }, restartDelayMs);
      restartDelayMs = Math.min(restartDelayMs * 2, 30_000);
    });

    async function eachBatch(p: EachBatchPayload): Promise<void> {
      const { batch } = p;
      if (core.abort.signal.aborted || !p.isRunning() || p.isStale() || batch.messages.length === 0) return;
      const gen = generation;
      const tp = `${batch.topic}/${batch.partition}`;
      const expected = nextExpected.get(tp);
      const first = BigInt(batch.messages[0]!.offset);
      if (expected !== undefined && first > expected) {
        // kafkajs silently jumps to the log start when our position was deleted by retention
        // (the librdkafka mock keeps only ~5 MB per partition): those messages are lost.
        core.recordGap(batch.topic, batch.partition, expected, first);
      }
      const raw: RawMessage[] = batch.messages.map((m) => ({
        offset: BigInt(m.offset),
        key: m.key ?? null,
        value: m.value ?? Buffer.alloc(0),
        headers: headerMap(m.headers),
        timestamp: Number(m.timestamp),
      }));
      // kafkajs heartbeats only between batches; a handler may take long (ClickHouse down).
      const pump = setInterval(() => void p.heartbeat().catch(() => undefined), heartbeatIntervalMs);
      let r;
      try {
        r = await core.processBatch(batch.topic, batch.partition, gen, raw);
      } finally {
        clearInterval(pump);
      }
      if (r.aborted || gen !== generation) return; // a rebalance re-reads from the committed offset
      p.resolveOffset(String(r.nextOffset - 1n));
      nextExpected.set(tp, r.nextOffset);
      if (r.commitOffset !== null && r.commitOffset !== lastCommitted.get(tp)) {
        try {
          await p.commitOffsetsIfNecessary({ topics: [{ topic: batch.topic, partitions: [{ partition: batch.partition, offset: String(r.commitOffset) }] }] });
          lastCommitted.set(tp, r.commitOffset);
          core.recordCommit(batch.topic, batch.partition, r.commitOffset);
        } catch (e) {
          core.recordCommitFailure(batch.topic, batch.partition, e);
        }
      }
      if (r.backoffMs > 0) {
        const until = Date.now() + r.backoffMs;
        while (Date.now() < until && !core.abort.signal.aborted) {
          await sleep(Math.min(heartbeatIntervalMs, until - Date.now()), core.abort.signal);
          await p.heartbeat().catch(() => undefined);
        }
      }
    }

    async function startConsuming(): Promise<void> {
      await consumer.connect();
      await consumer.subscribe({ topics: [...so.topics], fromBeginning: so.fromBeginning ?? true });
      await consumer.run({
        autoCommit: false,
        eachBatchAutoResolve: false,
        partitionsConsumedConcurrently: c.partitionsConsumedConcurrently ?? 16,
        eachBatch,
      });
    }

    consumers.add(consumer);
    try {
      await startConsuming();
    } catch (e) {
      consumers.delete(consumer);
      await consumer.disconnect().catch(() => undefined);
      throw e;
    }

    const finish = async (how: 'stop' | 'abort') => {
      if (finished) return;
      finished = true;
      if (how === 'abort') core.abort.abort();
      clearTimeout(restartTimer);
      await consumer.disconnect();
      consumers.delete(consumer);
      assignment = {};
    };
    return {
      groupId: so.groupId,
      assignment: () => Object.fromEntries(Object.entries(assignment).map(([t, ps]) => [t, [...ps]])),
      stats: () => ({ ...core.stats, committed: { ...core.stats.committed } }),
      stop: () => finish('stop'),
      abort: () => finish('abort'),
    };
  }

  const bus: Bus = {
    kind: 'kafka',
    maxMessageBytes,
    async publish(topic, key, value, headers) {
      return (await enqueue(topic, [{ key, value, ...(headers ? { headers } : {}) }]))[0]!;
    },
    publishBatch: enqueue,
    async publishRecord(topic, key, serialized, recordId) {
      if (serialized.length + (keyBuffer(key)?.length ?? 0) <= maxMessageBytes) return bus.publish(topic, key, serialized);
      return combine(await enqueue(topic, chunkMessages(key, serialized, maxMessageBytes, recordId)));
    },
    subscribe,
    async close() {
      closed = true;
      kick();
      while (flushing || queue.length) await sleep(5);
      await Promise.allSettled([...consumers].map((c) => c.disconnect()));
      if (producer) await producer.disconnect().catch(() => undefined);
      if (admin) await (await admin.catch(() => undefined))?.disconnect().catch(() => undefined);
    },
  };
  return bus;
}

function headerMap(h: Record<string, Buffer | string | (Buffer | string)[] | undefined> | undefined): HeaderMap {
  const out: HeaderMap = {};
  for (const [k, v] of Object.entries(h ?? {})) {
    if (v === undefined) continue;
    const last = Array.isArray(v) ? v[v.length - 1] : v;
    if (last !== undefined) out[k] = last.toString();
  }
  return out;
}
