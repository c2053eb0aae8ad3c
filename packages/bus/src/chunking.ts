// Records larger than the broker's message limit travel as ordered RecordChunk messages under
// the record's key (so on one partition); consumers reassemble them. Chunk messages carry
// the CHUNK_HEADER so a consumer can tell them apart without parsing every value.
import { RecordChunk, SCHEMA_VERSION, decode } from '@glitch/records';
import { randomUUID } from 'node:crypto';
import type { OutgoingMessage, ReassemblyLimits } from './types.js';

export const CHUNK_HEADER = 'glitch-chunk';

// JSON envelope around a chunk's base64 data: {"schemaVersion":1,"kind":"chunk",...}.
const ENVELOPE_BYTES = 256;

/**
 * Splits `serialized` into RecordChunk messages whose encoded JSON is at most `maxBytes`
 * each (base64 grows data by 4/3, so a slice holds ≈ 3/4 of maxBytes).
 */
export function chunkRecord(serialized: Buffer, maxBytes: number, recordId: string = randomUUID()): RecordChunk[] {
  const sliceBytes = Math.floor((maxBytes - ENVELOPE_BYTES) / 4) * 3;
  if (sliceBytes <= 0) throw new Error(`chunk size ${maxBytes} is too small (minimum ${ENVELOPE_BYTES + 4})`);
  const count = Math.max(1, Math.ceil(serialized.length / sliceBytes));
  const chunks: RecordChunk[] = [];
  for (let index = 0; index < count; index++) {
    const data = serialized.subarray(index * sliceBytes, (index + 1) * sliceBytes).toString('base64');
    chunks.push({ schemaVersion: SCHEMA_VERSION, kind: 'chunk', recordId, index, count, data });
  }
  return chunks;
}

/** The broker messages for `serialized` split into chunks: same key, marked with CHUNK_HEADER. */
export function chunkMessages(key: string | Buffer | null, serialized: Buffer, maxBytes: number, recordId?: string): OutgoingMessage[] {
  return chunkRecord(serialized, maxBytes, recordId).map((c) => ({
    key,
    value: Buffer.from(JSON.stringify(c), 'utf8'),
    headers: { [CHUNK_HEADER]: `${c.index}/${c.count}` },
  }));
}

export type ChunkResult =
  | { kind: 'pending' }
  | { kind: 'complete'; value: Buffer; firstOffset: bigint; count: number; recordId: string }
  /** Not a valid RecordChunk: deliver the message as it is (its handler dead-letters it). */
  | { kind: 'invalid'; reason: string }
  /** This chunk is discarded: it belongs to no set that can still complete. */
  | { kind: 'drop'; reason: string };

export interface DroppedSet {
  partitionKey: string;
  recordId: string;
  firstOffset: bigint;
  reason: string;
}

interface PendingSet {
  partitionKey: string;
  recordId: string;
  count: number;
  parts: Buffer[];
  bytes: number;
  firstOffset: bigint;
  seq: number;
}

/**
 * Reassembles chunk sets for every partition of one subscription. Chunk sets of different
 * records may interleave on a partition; each set must arrive in order (a producer sends
 * its chunks in one ordered burst). Memory is bounded by `maxPendingBytes` across
 * partitions (the oldest set goes first) and by `maxOffsetSpan` per set; whatever is
 * dropped is returned with a reason for the caller to count and log.
 */
export class Reassembler {
  private readonly sets = new Map<string, Map<string, PendingSet>>();
  private seq = 0;
  private bytes = 0;

  constructor(private readonly limits: ReassemblyLimits) {}

  get pendingBytes(): number {
    return this.bytes;
  }

  accept(partitionKey: string, offset: bigint, raw: Buffer): { result: ChunkResult; dropped: DroppedSet[] } {
    const decoded = decode(RecordChunk, raw);
    if (!decoded.ok) return { result: { kind: 'invalid', reason: `bad record chunk: ${decoded.reason}` }, dropped: [] };
    const chunk = decoded.value;
    const dropped: DroppedSet[] = [];
    const sets = this.partition(partitionKey);
    let set = sets.get(chunk.recordId);
    const label = `chunk ${chunk.index + 1}/${chunk.count} of record ${chunk.recordId} at offset ${offset}`;

    if (chunk.index === 0) {
      if (set) {
        dropped.push(this.remove(set, `a new chunk set for record ${set.recordId} began at offset ${offset} before the one from offset ${set.firstOffset} completed (${set.parts.length}/${set.count} chunks)`));
      }
      set = { partitionKey, recordId: chunk.recordId, count: chunk.count, parts: [], bytes: 0, firstOffset: offset, seq: this.seq++ };
      sets.set(chunk.recordId, set);
    } else if (!set) {
      // Its first chunk was before where this consumer started (a replay from a committed
      // offset inside an already-delivered record), or the producer lost it.
      return { result: { kind: 'drop', reason: `${label} without its first chunk` }, dropped };
    } else if (chunk.count !== set.count || chunk.index !== set.parts.length) {
      dropped.push(this.remove(set, `record ${set.recordId}: expected chunk ${set.parts.length + 1}/${set.count}, got ${chunk.index + 1}/${chunk.count} at offset ${offset}`));
      return { result: { kind: 'drop', reason: `${label} does not continue its set` }, dropped };
    }

    const part = Buffer.from(chunk.data, 'base64');
    set.parts.push(part);
    set.bytes += part.length;
    this.bytes += part.length;

    if (set.parts.length === set.count) {
      sets.delete(set.recordId);
      this.bytes -= set.bytes;
      return { result: { kind: 'complete', value: Buffer.concat(set.parts), firstOffset: set.firstOffset, count: set.count, recordId: set.recordId }, dropped };
    }
    // Over budget: drop the oldest sets (possibly this one) until it fits.
    while (this.bytes > this.limits.maxPendingBytes) {
      const oldest = this.oldest();
      if (!oldest) break;
      dropped.push(this.remove(oldest, `record ${oldest.recordId} dropped after ${oldest.parts.length}/${oldest.count} chunks: pending chunk sets exceed ${this.limits.maxPendingBytes} bytes`));
      if (oldest === set) return { result: { kind: 'drop', reason: `${label}: its set was dropped (reassembly budget)` }, dropped };
    }
    return { result: { kind: 'pending' }, dropped };
  }

  /** Drops sets of `partitionKey` whose first chunk is more than maxOffsetSpan before `offset`. */
  expire(partitionKey: string, offset: bigint): DroppedSet[] {
    const sets = this.sets.get(partitionKey);
    if (!sets || sets.size === 0) return [];
    const span = BigInt(this.limits.maxOffsetSpan);
    const out: DroppedSet[] = [];
    for (const set of [...sets.values()]) {
      if (offset - set.firstOffset > span) {
        out.push(this.remove(set, `record ${set.recordId} incomplete (${set.parts.length}/${set.count} chunks) ${offset - set.firstOffset} messages after its first chunk at offset ${set.firstOffset}`));
      }
    }
    return out;
  }

  /** First offset of the oldest incomplete set on the partition: nothing from it on may be committed. */
  lowestPending(partitionKey: string): bigint | undefined {
    let low: bigint | undefined;
    for (const set of this.sets.get(partitionKey)?.values() ?? []) if (low === undefined || set.firstOffset < low) low = set.firstOffset;
    return low;
  }

  /** Forgets a partition's sets (it is re-read from its committed offset), or every partition's. */
  clear(partitionKey?: string): void {
    const keys = partitionKey === undefined ? [...this.sets.keys()] : [partitionKey];
    for (const k of keys) {
      for (const set of this.sets.get(k)?.values() ?? []) this.bytes -= set.bytes;
      this.sets.delete(k);
    }
  }

  private partition(key: string): Map<string, PendingSet> {
    let sets = this.sets.get(key);
    if (!sets) this.sets.set(key, (sets = new Map()));
    return sets;
  }

  private remove(set: PendingSet, reason: string): DroppedSet {
    this.sets.get(set.partitionKey)?.delete(set.recordId);
    this.bytes -= set.bytes;
    return { partitionKey: set.partitionKey, recordId: set.recordId, firstOffset: set.firstOffset, reason };
  }

  private oldest(): PendingSet | undefined {
    let oldest: PendingSet | undefined;
    for (const sets of this.sets.values()) for (const s of sets.values()) if (!oldest || s.seq < oldest.seq) oldest = s;
    return oldest;
  }
}
