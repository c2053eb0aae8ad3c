// The consumer path both adapters share: reassemble chunks, hand a batch to the handler,
// apply its outcomes in order (dead-letter publishing included), and work out what may be
// committed and where to read next. Adapters only fetch, commit and seek.
import { DeadLetter, SCHEMA_VERSION, TOPICS, encode } from '@glitch/records';
import { CHUNK_HEADER, Reassembler, type DroppedSet } from './chunking.js';
import {
  DEFAULT_REASSEMBLY,
  type BatchHandler,
  type BusLogger,
  type BusMessage,
  type HeaderMap,
  type Outcome,
  type PublishOutcome,
  type SubscribeOptions,
  type SubscriptionStats,
} from './types.js';

export interface RawMessage {
  offset: bigint;
  key: Buffer | null;
  value: Buffer;
  headers: HeaderMap;
  timestamp: number;
}

export interface BatchResult {
  /** The subscription was aborted while the handler ran: apply nothing. */
  aborted: boolean;
  /** Where to read this partition next. */
  nextOffset: bigint;
  /** Offset to commit (next to read after a restart), or null when nothing new is done. */
  commitOffset: bigint | null;
  /** Wait this long before reading again (after a retry outcome). */
  backoffMs: number;
}

type PublishRecord = (topic: string, key: Buffer | null, serialized: Buffer) => Promise<PublishOutcome>;

/** Per-subscription state and the batch procedure. One instance per subscription. */
export class ConsumerCore {
  readonly reassembler: Reassembler;
  readonly stats: SubscriptionStats = {
    delivered: 0,
    acked: 0,
    retried: 0,
    deadLettered: 0,
    dropped: 0,
    handlerErrors: 0,
    chunkSetsCompleted: 0,
    chunkSetsDropped: 0,
    pendingChunkBytes: 0,
    commits: 0,
    commitFailures: 0,
    offsetGaps: 0,
    committed: {},
    lastDropReason: null,
    lastError: null,
  };
  readonly abort = new AbortController();
  /** Consecutive retry outcomes per partition, for the back-off. */
  private readonly retries = new Map<string, number>();
  private readonly handler: BatchHandler;
  private readonly deadLetterTopic: string;
  private readonly backoff: { initialMs: number; maxMs: number };

  constructor(
    opts: SubscribeOptions,
    private readonly publishRecord: PublishRecord,
    private readonly logger: BusLogger | undefined,
  ) {
    this.handler = opts.handler;
    this.deadLetterTopic = opts.deadLetterTopic ?? TOPICS.deadLetter;
    this.backoff = opts.retryBackoff ?? { initialMs: 100, maxMs: 5_000 };
    this.reassembler = new Reassembler({ ...DEFAULT_REASSEMBLY, ...opts.reassembly });
  }

  /** A rebalance or restart: every partition is read again from its committed offset. */
  resetAll(): void {
    this.reassembler.clear();
    this.retries.clear();
    this.stats.pendingChunkBytes = this.reassembler.pendingBytes;
  }

  resetPartition(topic: string, partition: number): void {
    this.reassembler.clear(`${topic}/${partition}`);
    this.retries.delete(`${topic}/${partition}`);
    this.stats.pendingChunkBytes = this.reassembler.pendingBytes;
  }

  recordCommit(topic: string, partition: number, offset: bigint): void {
    this.stats.commits++;
    this.stats.committed[`${topic}/${partition}`] = String(offset);
  }

  /** Messages between `expected` and `got` were never delivered (deleted by retention). */
  recordGap(topic: string, partition: number, expected: bigint, got: bigint): void {
    this.stats.offsetGaps++;
    this.stats.lastError = `${topic}/${partition}: offsets ${expected}..${got - 1n} were gone before they were read (retention)`;
    this.logger?.error({ topic, partition, from: String(expected), to: String(got - 1n) }, 'messages lost: deleted by the broker before this consumer read them');
  }

  recordCommitFailure(topic: string, partition: number, error: unknown): void {
    this.stats.commitFailures++;
    this.stats.lastError = `commit ${topic}/${partition}: ${(error as Error).message}`;
    // Not fatal: the work is durable, and the next commit covers these offsets. A restart
    // before then re-delivers them, which consumers tolerate (idempotent writes).
    this.logger?.warn({ topic, partition, err: error }, 'offset commit failed; the next commit covers it');
  }

  async processBatch(topic: string, partition: number, generation: number, raw: readonly RawMessage[]): Promise<BatchResult> {
    const pk = `${topic}/${partition}`;
    const last = raw[raw.length - 1];
    if (!last) throw new Error('processBatch needs at least one message');
    const messages: BusMessage[] = [];
    for (const m of raw) {
      for (const d of this.reassembler.expire(pk, m.offset)) this.chunkSetDropped(topic, partition, d);
      if (m.headers[CHUNK_HEADER] === undefined) {
        messages.push(busMessage(topic, partition, m, m.offset, m.value, 1));
        continue;
      }
      const { result, dropped } = this.reassembler.accept(pk, m.offset, m.value);
      for (const d of dropped) this.chunkSetDropped(topic, partition, d);
      if (result.kind === 'complete') {
        this.stats.chunkSetsCompleted++;
        messages.push(busMessage(topic, partition, m, result.firstOffset, result.value, result.count));
      } else if (result.kind === 'invalid') {
        messages.push(busMessage(topic, partition, m, m.offset, m.value, 1));
      } else if (result.kind === 'drop') {
        this.noteDrop(topic, partition, m.offset, result.reason);
      }
    }
    this.stats.pendingChunkBytes = this.reassembler.pendingBytes;
    const settled = (): bigint => minOffset(last.offset + 1n, this.reassembler.lowestPending(pk));
    if (messages.length === 0) return { aborted: false, nextOffset: last.offset + 1n, commitOffset: settled(), backoffMs: 0 };

    this.stats.delivered += messages.length;
    const outcomes = await this.runHandler({ topic, partition, generation, messages });
    if (outcomes === 'aborted') return { aborted: true, nextOffset: 0n, commitOffset: null, backoffMs: 0 };

    for (let i = 0; i < messages.length; i++) {
      const m = messages[i]!;
      let o = outcomes[i]!;
      if (o.kind === 'dead_letter') {
        const published = await this.publishDeadLetter(m, o.reason);
        if (this.abort.signal.aborted) return { aborted: true, nextOffset: 0n, commitOffset: null, backoffMs: 0 };
        if (published.kind === 'ok') this.stats.deadLettered++;
        else o = { kind: 'retry', reason: `dead-letter publish to ${this.deadLetterTopic} failed (${published.kind}: ${published.reason}); original reason: ${o.reason}` };
      }
      if (o.kind === 'retry') return this.rewind(topic, partition, m, o.reason);
      if (o.kind === 'ok') this.stats.acked++;
      if (o.kind === 'drop') this.noteDrop(topic, partition, BigInt(m.offset), o.reason);
    }
    this.retries.delete(pk);
    return { aborted: false, nextOffset: last.offset + 1n, commitOffset: settled(), backoffMs: 0 };
  }

  private async runHandler(batch: { topic: string; partition: number; generation: number; messages: BusMessage[] }): Promise<readonly Outcome[] | 'aborted'> {
    const signal = this.abort.signal;
    if (signal.aborted) return 'aborted';
    let outcomes: readonly Outcome[];
    let onAbort = (): void => {};
    const aborted = new Promise<'aborted'>((resolve) => {
      onAbort = () => resolve('aborted');
      signal.addEventListener('abort', onAbort, { once: true });
    });
    try {
      const r = await Promise.race([this.handler(batch, signal), aborted]);
      if (r === 'aborted') return r;
      outcomes = r;
    } catch (e) {
      if (signal.aborted) return 'aborted';
      this.stats.handlerErrors++;
      this.stats.lastError = `handler threw on ${batch.topic}/${batch.partition}: ${(e as Error).message}`;
      this.logger?.error({ topic: batch.topic, partition: batch.partition, err: e }, 'batch handler threw; the batch will be retried');
      return batch.messages.map(() => ({ kind: 'retry', reason: `handler threw: ${(e as Error).message}` }));
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
    if (signal.aborted) return 'aborted';
    if (outcomes.length !== batch.messages.length) {
      this.stats.handlerErrors++;
      const reason = `handler returned ${outcomes.length} outcomes for ${batch.messages.length} messages`;
      this.stats.lastError = reason;
      this.logger?.error({ topic: batch.topic, partition: batch.partition }, reason);
      return batch.messages.map(() => ({ kind: 'retry', reason }));
    }
    return outcomes;
  }

  /**
   * Everything before `m` is done; `m` and what follows are read again, from the first chunk
   * of `m` or of any set still incomplete (whichever is earlier), after a back-off.
   */
  private rewind(topic: string, partition: number, m: BusMessage, reason: string): BatchResult {
    const pk = `${topic}/${partition}`;
    const from = minOffset(BigInt(m.firstOffset), this.reassembler.lowestPending(pk));
    this.reassembler.clear(pk);
    this.stats.pendingChunkBytes = this.reassembler.pendingBytes;
    this.stats.retried++;
    const n = (this.retries.get(pk) ?? 0) + 1;
    this.retries.set(pk, n);
    const backoffMs = Math.min(this.backoff.maxMs, this.backoff.initialMs * 2 ** (n - 1));
    this.logger?.debug({ topic, partition, offset: m.offset, reason, backoffMs }, 'retry outcome: redelivering');
    return { aborted: false, nextOffset: from, commitOffset: from, backoffMs };
  }

  private async publishDeadLetter(m: BusMessage, reason: string): Promise<PublishOutcome> {
    const letter = encode(DeadLetter, {
      schemaVersion: SCHEMA_VERSION,
      kind: 'dead_letter',
      sourceTopic: m.topic,
      partition: m.partition,
      offset: m.offset,
      reason,
      payload: m.value.toString('base64'),
      at: Date.now(),
    });
    const outcome = await this.publishRecord(this.deadLetterTopic, m.key, Buffer.from(letter, 'utf8'));
    if (outcome.kind === 'ok') this.logger?.warn({ topic: m.topic, partition: m.partition, offset: m.offset, reason }, 'message dead-lettered');
    return outcome;
  }

  private chunkSetDropped(topic: string, partition: number, d: DroppedSet): void {
    this.stats.chunkSetsDropped++;
    this.stats.lastDropReason = d.reason;
    this.logger?.warn({ topic, partition, recordId: d.recordId, firstOffset: String(d.firstOffset), reason: d.reason }, 'incomplete chunk set dropped');
  }

  private noteDrop(topic: string, partition: number, offset: bigint, reason: string): void {
    this.stats.dropped++;
    this.stats.lastDropReason = reason;
    this.logger?.warn({ topic, partition, offset: String(offset), reason }, 'message dropped');
  }
}

function busMessage(topic: string, partition: number, m: RawMessage, firstOffset: bigint, value: Buffer, chunks: number): BusMessage {
  return {
    topic,
    partition,
    offset: String(m.offset),
    firstOffset: String(firstOffset),
    key: m.key,
    value,
    headers: m.headers,
    timestamp: m.timestamp,
    chunks,
  };
}

function minOffset(a: bigint, b: bigint | undefined): bigint {
  return b !== undefined && b < a ? b : a;
}

/** Resolves after `ms`, or early when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}
