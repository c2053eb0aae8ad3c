// The Bus contract: what the forwarder, ingest and detectors need from Kafka, implemented
// by a kafkajs adapter and an in-memory one (embedded mode). Every hand-off has an explicit
// outcome; nothing is lost or retried silently.
import type { Logger } from '@glitch/log';

export type HeaderMap = Record<string, string>;

export interface OutgoingMessage {
  /** Messages with the same key go to the same partition, in publish order. */
  key: string | Buffer | null;
  value: Buffer;
  headers?: HeaderMap;
}

/**
 * What happened to a published message:
 * - ok: the broker has it, at `partition`/`offset` (for a chunked record: its last chunk).
 * - retry: a transient failure (broker unreachable, timeout); publishing again may succeed.
 *   The message may or may not have been written: a consumer must tolerate duplicates.
 * - drop: it can never succeed as is (too large, unknown topic); `reason` says why.
 */
export type PublishOutcome =
  | { kind: 'ok'; partition: number; offset: string }
  | { kind: 'retry'; reason: string }
  | { kind: 'drop'; reason: string };

export interface BusMessage {
  topic: string;
  partition: number;
  /** Offset of the message that completed this one (its last chunk when chunked). */
  offset: string;
  /** Offset of its first chunk; equals `offset` when it was not chunked. */
  firstOffset: string;
  key: Buffer | null;
  /** The whole value, reassembled when it was published in chunks. */
  value: Buffer;
  headers: HeaderMap;
  /** Broker timestamp (epoch ms) of the completing message. */
  timestamp: number;
  /** Number of broker messages it arrived in (1 when not chunked). */
  chunks: number;
}

/**
 * A handler's verdict on one delivered message:
 * - ok: done (the handler's write is durable); its offset may be committed.
 * - retry: not done; this message and everything after it on the partition is delivered
 *   again after a back-off. Nothing from it onwards is committed.
 * - dead_letter: cannot ever be processed (bad JSON, bad schema, unknown version): the bus
 *   publishes it to the dead-letter topic with `reason`, then treats it as done.
 * - drop: deliberately skipped, with `reason` (counted and logged), then done.
 */
export type Outcome =
  | { kind: 'ok' }
  | { kind: 'retry'; reason: string }
  | { kind: 'dead_letter'; reason: string }
  | { kind: 'drop'; reason: string };

export const ok: Outcome = Object.freeze({ kind: 'ok' });
export const retry = (reason: string): Outcome => ({ kind: 'retry', reason });
export const deadLetter = (reason: string): Outcome => ({ kind: 'dead_letter', reason });
export const drop = (reason: string): Outcome => ({ kind: 'drop', reason });

export interface DeliveredBatch {
  topic: string;
  partition: number;
  /**
   * Increases every time this subscription's partition assignment changes (rebalance,
   * consumer restart). State a handler derived for a partition under an older generation
   * (e.g. "what is already stored") may be stale: another consumer may have moved it on.
   */
  generation: number;
  /** In partition order, at least one. */
  messages: readonly BusMessage[];
}

/**
 * Returns one outcome per message, in the same order, once the work is durable. `signal`
 * aborts when the subscription is aborted (the result is then ignored). A thrown error
 * counts as `retry` for the whole batch.
 */
export type BatchHandler = (batch: DeliveredBatch, signal: AbortSignal) => Promise<readonly Outcome[]>;

export interface ReassemblyLimits {
  /** Bytes of incomplete chunk sets held across all partitions; the oldest set is dropped beyond it. */
  maxPendingBytes: number;
  /** A chunk set still incomplete this many messages after its first chunk is dropped. */
  maxOffsetSpan: number;
}

export const DEFAULT_REASSEMBLY: ReassemblyLimits = { maxPendingBytes: 256 * 1024 * 1024, maxOffsetSpan: 10_000 };

export interface SubscribeOptions {
  groupId: string;
  topics: readonly string[];
  handler: BatchHandler;
  /** Where dead_letter outcomes go (DeadLetter envelopes). Default glitch.deadletter.v1. */
  deadLetterTopic?: string;
  /** Where a group with no committed offset starts. Default true (earliest). */
  fromBeginning?: boolean;
  reassembly?: Partial<ReassemblyLimits>;
  /** Back-off between redeliveries after `retry` outcomes (doubles up to maxMs). */
  retryBackoff?: { initialMs: number; maxMs: number };
}

export interface SubscriptionStats {
  /** Messages handed to the handler (reassembled records count once). */
  delivered: number;
  acked: number;
  retried: number;
  deadLettered: number;
  dropped: number;
  handlerErrors: number;
  chunkSetsCompleted: number;
  chunkSetsDropped: number;
  pendingChunkBytes: number;
  commits: number;
  commitFailures: number;
  /** Times the next batch of a partition started past where the last one ended (messages lost to retention). */
  offsetGaps: number;
  /** Last committed offset (next to read) per "topic/partition". */
  committed: Record<string, string>;
  lastDropReason: string | null;
  lastError: string | null;
}

export interface Subscription {
  readonly groupId: string;
  /** Partitions currently assigned to this member, by topic. */
  assignment(): Record<string, number[]>;
  stats(): SubscriptionStats;
  /** Graceful: lets the in-flight batch finish (and commit), then leaves the group. */
  stop(): Promise<void>;
  /** Crash-like: abandons the in-flight batch without committing it, then leaves the group. */
  abort(): Promise<void>;
}

export interface Bus {
  readonly kind: 'kafka' | 'memory';
  /** Largest message the bus sends whole; `publishRecord` chunks anything bigger. */
  readonly maxMessageBytes: number;
  publish(topic: string, key: string | Buffer | null, value: Buffer, headers?: HeaderMap): Promise<PublishOutcome>;
  /**
   * Publishes in order; messages sharing a key keep their relative order. One outcome each.
   * A later message never overtakes an earlier one that failed: once a publish gets `retry`,
   * everything published before its outcome and not yet sent gets `retry` too.
   */
  publishBatch(topic: string, messages: readonly OutgoingMessage[]): Promise<PublishOutcome[]>;
  /**
   * Publishes a serialized record, split into RecordChunk messages under the same key when
   * larger than `maxMessageBytes` (consumers of this bus reassemble them). The outcome is
   * ok only when every chunk is; a partial set is dropped by consumers with a reason.
   */
  publishRecord(topic: string, key: string | Buffer | null, serialized: Buffer, recordId?: string): Promise<PublishOutcome>;
  subscribe(opts: SubscribeOptions): Promise<Subscription>;
  close(): Promise<void>;
}

export type BusLogger = Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>;
