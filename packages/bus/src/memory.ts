// In-memory bus for embedded mode (`glitch up`: one process). Topics are partitioned logs,
// consumer groups share partitions among their members and commit offsets, so code written
// against Kafka behaves the same here. Logs are trimmed once every group that reads a topic
// has committed past a message, and capped in bytes (drop-oldest, loudly) so a stalled
// consumer cannot exhaust memory.
import { BusStore } from './bus-store.js';
import { chunkMessages } from './chunking.js';
import { ConsumerCore, sleep, type RawMessage } from './consume.js';
import { keyBuffer, partitionFor } from './partitioner.js';
import type { Bus, BusLogger, OutgoingMessage, PublishOutcome, SubscribeOptions, Subscription } from './types.js';

export interface MemoryBusOptions {
  /** Partitions of a topic created implicitly by its first publish or subscribe. Default 1. */
  defaultPartitions?: number;
  /** Default 900 000 (like the Kafka adapter), so chunking is exercised the same way. */
  maxMessageBytes?: number;
  /** Per partition; beyond it the oldest messages are dropped even if unconsumed. Default 512 MiB. */
  retainBytesPerPartition?: number;
  /** Messages handed to a handler at once. Default 500. */
  maxBatchMessages?: number;
  logger?: BusLogger;
  /**
   * Where a partition's offsets begin (default 0). Offsets must never repeat for a
   * consumer that remembers them elsewhere: embedded ingest skips offsets ClickHouse already
   * holds, so `glitch up` starts each log after the highest offset stored before a restart.
   */
  firstOffset?: (topic: string, partition: number) => bigint;
  /**
   * Keep every partition on disk too (and the groups' commits), so a crash loses nothing
   * published: publishes resolve after an fsync, and a new bus on the same dir reloads.
   */
  persistDir?: string;
}

export interface MemoryBus extends Bus {
  readonly kind: 'memory';
  /** Creates a topic; an existing topic with another partition count is an error. */
  createTopic(name: string, partitions: number): void;
  /** Messages dropped unconsumed by the byte cap, per topic. */
  droppedUnconsumed(): Record<string, number>;
}

interface Stored extends RawMessage {
  bytes: number;
}

class PartitionLog {
  messages: Stored[] = [];
  bytes = 0;
  private waiters = new Set<() => void>();

  constructor(public start: bigint) {}

  get end(): bigint {
    return this.start + BigInt(this.messages.length);
  }

  /** Set when the bus is persisted: called with each new message before it is visible. */
  persist: ((m: Stored) => void) | undefined;
  onTrim: ((start: bigint) => void) | undefined;

  append(m: Omit<Stored, 'offset'>): bigint {
    const offset = this.end;
    const stored = { ...m, offset };
    this.persist?.(stored);
    this.messages.push(stored);
    this.bytes += m.bytes;
    return offset;
  }

  read(from: bigint, maxMessages: number): Stored[] {
    const i = Number(from - this.start);
    return this.messages.slice(Math.max(0, i), Math.max(0, i) + maxMessages);
  }

  /** Drops messages before `offset`. */
  trimTo(offset: bigint): number {
    const n = Math.min(this.messages.length, Number(offset - this.start));
    if (n <= 0) return 0;
    for (const m of this.messages.splice(0, n)) this.bytes -= m.bytes;
    this.start += BigInt(n);
    this.onTrim?.(this.start);
    return n;
  }

  /** Resolves at the next append or when `wake` registers a wake-up. */
  waitForAppend(wakers: Set<() => void>): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        this.waiters.delete(done);
        wakers.delete(done);
        resolve();
      };
      this.waiters.add(done);
      wakers.add(done);
    });
  }

  notify(): void {
    for (const w of [...this.waiters]) w();
  }
}

interface Topic {
  name: string;
  partitions: PartitionLog[];
  droppedUnconsumed: number;
  /** Keyless round-robin counter. */
  counter: number;
}

class Member {
  running = true;
  generation = 0;
  assigned = new Map<string, number[]>();
  readonly wakers = new Set<() => void>();
  readonly workers = new Set<Promise<void>>();
  constructor(
    readonly id: number,
    readonly topics: readonly string[],
    readonly core: ConsumerCore,
    readonly fromBeginning: boolean,
  ) {}
  wake(): void {
    for (const w of [...this.wakers]) w();
  }
}

class Group {
  members: Member[] = [];
  generation = 0;
  committed = new Map<string, bigint>();
  /** Serializes partition ownership: a new owner starts after the previous one's batch. */
  private locks = new Map<string, Promise<void>>();
  constructor(readonly id: string) {}

  async lock(tp: string): Promise<() => void> {
    const previous = this.locks.get(tp) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const chained = previous.then(() => mine);
    this.locks.set(tp, chained);
    await previous;
    return () => {
      release();
      if (this.locks.get(tp) === chained) this.locks.delete(tp);
    };
  }
}

export function createMemoryBus(opts: MemoryBusOptions = {}): MemoryBus {
  const defaultPartitions = opts.defaultPartitions ?? 1;
  const maxMessageBytes = opts.maxMessageBytes ?? 900_000;
  const retainBytes = opts.retainBytesPerPartition ?? 512 * 1024 * 1024;
  const maxBatch = opts.maxBatchMessages ?? 500;
  const logger = opts.logger;
  const topics = new Map<string, Topic>();
  const groups = new Map<string, Group>();
  let nextMemberId = 1;
  let closed = false;
  const store = opts.persistDir ? new BusStore({ dir: opts.persistDir, ...(logger ? { logger } : {}) }) : undefined;

  function createTopic(name: string, partitions: number): Topic {
    const existing = topics.get(name);
    if (existing) {
      if (existing.partitions.length !== partitions) throw new Error(`topic ${name} exists with ${existing.partitions.length} partitions, not ${partitions}`);
      return existing;
    }
    if (!Number.isInteger(partitions) || partitions < 1) throw new Error(`topic ${name}: partitions must be a positive integer`);
    const t: Topic = { name, partitions: Array.from({ length: partitions }, (_, p) => openPartition(name, p)), droppedUnconsumed: 0, counter: 0 };
    topics.set(name, t);
    return t;
  }
  const topicOf = (name: string): Topic => topics.get(name) ?? createTopic(name, store?.partitionsOf(name) ?? defaultPartitions);

  function openPartition(name: string, partition: number): PartitionLog {
    const first = opts.firstOffset?.(name, partition) ?? 0n;
    if (!store) return new PartitionLog(first);
    const loaded = store.loadPartition(name, partition);
    const log = new PartitionLog(loaded.messages[0]?.offset ?? (loaded.next > first ? loaded.next : first));
    for (const m of loaded.messages) log.append({ ...m, bytes: m.value.length + (m.key?.length ?? 0) });
    log.persist = (m) => store.append(name, partition, m);
    log.onTrim = (start) => store.trim(name, partition, start);
    return log;
  }

  function append(topic: Topic, m: OutgoingMessage, counter: number): PublishOutcome {
    const key = keyBuffer(m.key);
    const bytes = m.value.length + (key?.length ?? 0);
    if (bytes > maxMessageBytes) return { kind: 'drop', reason: `message of ${bytes} bytes exceeds maxMessageBytes ${maxMessageBytes} (publishRecord chunks large records)` };
    const partition = partitionFor(key, topic.partitions.length, counter);
    const log = topic.partitions[partition]!;
    const offset = log.append({ key, value: m.value, headers: { ...m.headers }, timestamp: Date.now(), bytes });
    enforceCap(topic, partition);
    log.notify();
    return { kind: 'ok', partition, offset: String(offset) };
  }

  function enforceCap(topic: Topic, partition: number): void {
    const log = topic.partitions[partition]!;
    let dropped = 0;
    while (log.bytes > retainBytes && log.messages.length > 1) dropped += log.trimTo(log.start + 1n);
    if (dropped > 0) {
      topic.droppedUnconsumed += dropped;
      logger?.error({ topic: topic.name, partition, dropped, retainBytes }, 'in-memory bus full: dropped the oldest unconsumed messages (is a consumer stalled?)');
    }
  }

  /** Drops what every group reading the topic has committed past. */
  function trim(topic: Topic, partition: number): void {
    const readers = [...groups.values()].filter((g) => g.members.some((m) => m.topics.includes(topic.name)));
    if (readers.length === 0) return;
    let low: bigint | undefined;
    for (const g of readers) {
      const c = g.committed.get(`${topic.name}/${partition}`);
      if (c === undefined) return;
      if (low === undefined || c < low) low = c;
    }
    if (low !== undefined) topic.partitions[partition]!.trimTo(low);
  }

  function rebalance(group: Group): void {
    group.generation++;
    const assignment = new Map<Member, Map<string, number[]>>(group.members.map((m) => [m, new Map()]));
    const names = [...new Set(group.members.flatMap((m) => m.topics))].sort();
    for (const name of names) {
      const eligible = group.members.filter((m) => m.topics.includes(name));
      const t = topicOf(name);
      for (let p = 0; p < t.partitions.length; p++) {
        const owner = eligible[p % eligible.length]!;
        const a = assignment.get(owner)!;
        a.set(name, [...(a.get(name) ?? []), p]);
      }
    }
    for (const m of group.members) {
      m.generation = group.generation;
      m.assigned = assignment.get(m)!;
      m.core.resetAll();
      m.wake();
      for (const [name, partitions] of m.assigned) for (const p of partitions) startWorker(group, m, name, p, group.generation);
    }
  }

  function startWorker(group: Group, member: Member, name: string, partition: number, generation: number): void {
    const w = runPartition(group, member, name, partition, generation).catch((e: unknown) => {
      member.core.stats.lastError = `partition worker ${name}/${partition}: ${(e as Error).message}`;
      logger?.error({ topic: name, partition, err: e }, 'in-memory partition worker failed');
    });
    member.workers.add(w);
    void w.finally(() => member.workers.delete(w));
  }

  async function runPartition(group: Group, member: Member, name: string, partition: number, generation: number): Promise<void> {
    const tp = `${name}/${partition}`;
    const release = await group.lock(tp);
    try {
      const topic = topicOf(name);
      const log = topic.partitions[partition]!;
      const current = () => member.running && member.generation === generation && !member.core.abort.signal.aborted;
      if (!current()) return;
      member.core.resetPartition(name, partition);
      let position = group.committed.get(tp) ?? (member.fromBeginning ? log.start : log.end);
      let lastCommitted: bigint | undefined = position; // committing where we start changes nothing
      while (current()) {
        if (position < log.start) {
          member.core.recordGap(name, partition, position, log.start);
          position = log.start;
        }
        const raw = log.read(position, maxBatch);
        if (raw.length === 0) {
          await log.waitForAppend(member.wakers);
          continue;
        }
        const r = await member.core.processBatch(name, partition, generation, raw);
        if (r.aborted) return;
        if (r.commitOffset !== null && r.commitOffset !== lastCommitted) {
          // The previous owner finishing its batch after a rebalance still commits: it holds
          // the partition lock, so the next owner reads the committed offset after it.
          group.committed.set(tp, r.commitOffset);
          store?.commit(group.id, tp, r.commitOffset);
          lastCommitted = r.commitOffset;
          member.core.recordCommit(name, partition, r.commitOffset);
          trim(topic, partition);
        }
        position = r.nextOffset;
        if (r.backoffMs > 0) await sleep(r.backoffMs, member.core.abort.signal);
      }
    } finally {
      release();
    }
  }

  function leave(group: Group, member: Member): void {
    group.members = group.members.filter((m) => m !== member);
    rebalance(group);
  }

  const bus: MemoryBus = {
    kind: 'memory',
    maxMessageBytes,
    createTopic(name, partitions) {
      createTopic(name, partitions);
    },
    droppedUnconsumed() {
      return Object.fromEntries([...topics.values()].map((t) => [t.name, t.droppedUnconsumed]));
    },
    async publish(topic, key, value, headers) {
      return (await bus.publishBatch(topic, [{ key, value, ...(headers ? { headers } : {}) }]))[0]!;
    },
    async publishBatch(topic, messages) {
      if (closed) return messages.map(() => ({ kind: 'drop', reason: 'bus is closed' }));
      const t = topicOf(topic);
      // Keyless messages of one call share a partition (a chunk set must stay together).
      const counter = t.counter++;
      const outcomes = messages.map((m) => append(t, m, counter));
      if (store) {
        try {
          await store.sync();
        } catch (e) {
          // Consumers in this process still get the messages; only crash safety is lost.
          logger?.error({ err: e, topic }, 'in-memory bus: fsync of the partition log failed');
        }
      }
      return outcomes;
    },
    async publishRecord(topic, key, serialized, recordId) {
      if (serialized.length + (keyBuffer(key)?.length ?? 0) <= maxMessageBytes) return bus.publish(topic, key, serialized);
      const outcomes = await bus.publishBatch(topic, chunkMessages(key, serialized, maxMessageBytes, recordId));
      return combine(outcomes);
    },
    async subscribe(so: SubscribeOptions): Promise<Subscription> {
      if (closed) throw new Error('bus is closed');
      for (const name of so.topics) topicOf(name);
      const core = new ConsumerCore(so, (t, k, v) => bus.publishRecord(t, k, v), logger);
      const member = new Member(nextMemberId++, [...so.topics], core, so.fromBeginning ?? true);
      let group = groups.get(so.groupId);
      if (!group) {
        groups.set(so.groupId, (group = new Group(so.groupId)));
        if (store) for (const [tp, offset] of store.committed(so.groupId)) group.committed.set(tp, offset);
      }
      const g = group;
      g.members.push(member);
      rebalance(g);
      let left = false;
      const finish = async (how: 'stop' | 'abort') => {
        if (left) return;
        left = true;
        member.running = false;
        if (how === 'abort') core.abort.abort();
        member.wake();
        await Promise.allSettled([...member.workers]);
        leave(g, member);
      };
      return {
        groupId: so.groupId,
        assignment: () => Object.fromEntries([...member.assigned].map(([t, ps]) => [t, [...ps]])),
        stats: () => ({ ...core.stats, committed: { ...core.stats.committed } }),
        stop: () => finish('stop'),
        abort: () => finish('abort'),
      };
    },
    async close() {
      closed = true;
      store?.close();
      for (const g of groups.values()) {
        for (const m of [...g.members]) {
          m.running = false;
          m.wake();
        }
      }
    },
  };
  return bus;
}

/** One outcome for a record published as several messages: ok only if every part is. */
export function combine(outcomes: readonly PublishOutcome[]): PublishOutcome {
  const bad = outcomes.find((o) => o.kind === 'drop') ?? outcomes.find((o) => o.kind === 'retry');
  if (bad) return bad;
  const last = outcomes[outcomes.length - 1];
  if (!last) return { kind: 'drop', reason: 'nothing to publish' };
  return last;
}

