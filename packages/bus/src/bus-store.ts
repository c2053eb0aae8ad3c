// Disk persistence for the in-memory bus (embedded mode, `glitch up`). Each partition is
// also an append-only file and consumer-group commits are saved, so a crash of the one
// process loses nothing that was published: at restart the logs reload from the lowest
// committed offset, offsets continue where they stopped, and consumers resume at their
// commits (redelivering at most what was processed but not yet committed).
//
// Layout: <dir>/<topic>/<partition>/<base offset>.log segments of frames (the spool's
// framing: length + CRC, so a torn tail is found and cut off), and <dir>/commits.json.
// Publishes are fsynced in groups: publishBatch resolves after its bytes are on disk.
import { closeSync, existsSync, fdatasync, fdatasyncSync, fstatSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, truncateSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { frameHeader, scanFrames } from '@glitch/spool';
import type { BusLogger, HeaderMap } from './types.js';

export interface PersistedMessage {
  offset: bigint;
  key: Buffer | null;
  value: Buffer;
  headers: HeaderMap;
  timestamp: number;
}

export interface LoadedPartition {
  /** Messages at or after the lowest committed offset, in offset order. */
  messages: PersistedMessage[];
  /** The offset after the last one ever persisted (0 for a new partition). */
  next: bigint;
}

export interface BusStoreOptions {
  dir: string;
  /** A partition file rolls over to a new segment beyond this size. Default 64 MiB. */
  segmentBytes?: number;
  logger?: BusLogger;
}

interface Segment {
  base: bigint;
  path: string;
  /** Last offset written to it, or base - 1 when empty. */
  last: bigint;
}

interface PartitionFile {
  dir: string;
  segments: Segment[];
  fd: number;
  bytes: number;
}

const COMMITS = 'commits.json';
// Topic names are Kafka-legal ([a-zA-Z0-9._-]), so they are safe as directory names.
const TOPIC_NAME = /^[A-Za-z0-9._-]+$/;

function encode(m: PersistedMessage): Buffer {
  const headers = Buffer.from(JSON.stringify(m.headers));
  const head = Buffer.allocUnsafe(8 + 8 + 4 + 4);
  head.writeBigInt64LE(m.offset, 0);
  head.writeDoubleLE(m.timestamp, 8);
  head.writeInt32LE(m.key ? m.key.length : -1, 16);
  head.writeUInt32LE(headers.length, 20);
  return Buffer.concat([head, m.key ?? Buffer.alloc(0), headers, m.value]);
}

function decode(p: Buffer): PersistedMessage {
  const offset = p.readBigInt64LE(0);
  const timestamp = p.readDoubleLE(8);
  const keyLen = p.readInt32LE(16);
  const headersLen = p.readUInt32LE(20);
  let at = 24;
  const key = keyLen < 0 ? null : Buffer.from(p.subarray(at, (at += keyLen)));
  const headers = JSON.parse(p.subarray(at, (at += headersLen)).toString('utf8')) as HeaderMap;
  return { offset, timestamp, key, headers, value: Buffer.from(p.subarray(at)) };
}

export class BusStore {
  private readonly segmentBytes: number;
  private readonly partitions = new Map<string, PartitionFile>();
  private readonly commits: Record<string, Record<string, string>>;
  private readonly dirty = new Set<number>();
  private syncing: Promise<void> | null = null;
  private commitTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Torn or corrupt tails cut off at load (a crash mid-write), per partition. */
  readonly tornTails: Record<string, number> = {};

  constructor(private readonly opts: BusStoreOptions) {
    this.segmentBytes = opts.segmentBytes ?? 64 * 1024 * 1024;
    mkdirSync(opts.dir, { recursive: true });
    const path = join(opts.dir, COMMITS);
    this.commits = existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as Record<string, Record<string, string>>) : {};
  }

  /** Partition count of a topic persisted earlier, if any. */
  partitionsOf(topic: string): number | undefined {
    const dir = join(this.opts.dir, topic);
    if (!TOPIC_NAME.test(topic) || !existsSync(dir)) return undefined;
    const n = readdirSync(dir).filter((d) => /^\d+$/.test(d)).length;
    return n > 0 ? n : undefined;
  }

  /** Committed offsets of a group, by "topic/partition". */
  committed(groupId: string): Map<string, bigint> {
    return new Map(Object.entries(this.commits[groupId] ?? {}).map(([tp, o]) => [tp, BigInt(o)]));
  }

  /** Reads a partition back and opens it for appends. */
  loadPartition(topic: string, partition: number): LoadedPartition {
    if (!TOPIC_NAME.test(topic)) throw new Error(`topic name ${JSON.stringify(topic)} cannot be persisted`);
    const tp = `${topic}/${partition}`;
    const dir = join(this.opts.dir, topic, String(partition));
    mkdirSync(dir, { recursive: true });
    let keepFrom: bigint | undefined;
    for (const group of Object.values(this.commits)) {
      const c = group[tp];
      if (c !== undefined && (keepFrom === undefined || BigInt(c) < keepFrom)) keepFrom = BigInt(c);
    }
    const segments: Segment[] = readdirSync(dir)
      .filter((f) => /^\d+\.log$/.test(f))
      .map((f) => ({ base: BigInt(f.slice(0, -4)), path: join(dir, f), last: BigInt(f.slice(0, -4)) - 1n }))
      .sort((a, b) => (a.base < b.base ? -1 : 1));
    const messages: PersistedMessage[] = [];
    let next = 0n;
    for (const seg of segments) {
      const data = readFileSync(seg.path);
      const scanned = scanFrames(data);
      if (scanned.torn) {
        truncateSync(seg.path, scanned.validBytes);
        this.tornTails[tp] = (this.tornTails[tp] ?? 0) + 1;
        this.opts.logger?.warn({ topic, partition, segment: seg.path, cutBytes: data.byteLength - scanned.validBytes }, 'in-memory bus log: cut a torn tail (crash mid-write)');
      }
      for (const payload of scanned.payloads) {
        const m = decode(payload);
        seg.last = m.offset;
        if (m.offset + 1n > next) next = m.offset + 1n;
        if (keepFrom === undefined || m.offset >= keepFrom) messages.push(m);
      }
    }
    let active = segments[segments.length - 1];
    if (!active) {
      active = { base: next, path: join(dir, `${String(next).padStart(20, '0')}.log`), last: next - 1n };
      segments.push(active);
    }
    const fd = openSync(active.path, 'a');
    this.partitions.set(tp, { dir, segments, fd, bytes: fstatSync(fd).size });
    return { messages, next };
  }

  /** Writes a message to its partition file (durable after the next `sync()`). */
  append(topic: string, partition: number, m: PersistedMessage): void {
    const file = this.partitions.get(`${topic}/${partition}`);
    if (!file) throw new Error(`partition ${topic}/${partition} was not loaded`);
    if (file.bytes >= this.segmentBytes) this.roll(file, m.offset);
    const payload = encode(m);
    const header = frameHeader(payload);
    writeSync(file.fd, header);
    writeSync(file.fd, payload);
    file.bytes += header.length + payload.length;
    file.segments[file.segments.length - 1]!.last = m.offset;
    this.dirty.add(file.fd);
  }

  /** Resolves once everything appended so far is on disk; concurrent callers share one fsync round. */
  sync(): Promise<void> {
    if (this.syncing) return this.syncing.then(() => (this.dirty.size > 0 ? this.sync() : undefined));
    if (this.dirty.size === 0) return Promise.resolve();
    const fds = [...this.dirty];
    this.dirty.clear();
    this.syncing = Promise.all(fds.map((fd) => new Promise<void>((resolve, reject) => fdatasync(fd, (e) => (e ? reject(e) : resolve()))))).then(
      () => {
        this.syncing = null;
      },
      (e: unknown) => {
        this.syncing = null;
        throw e;
      },
    );
    return this.syncing;
  }

  /** Saves a group's committed offset (batched: a lost commit only means a redelivery). */
  commit(groupId: string, tp: string, offset: bigint): void {
    (this.commits[groupId] ??= {})[tp] = String(offset);
    this.commitTimer ??= setTimeout(() => this.saveCommits(), 100);
  }

  /** Deletes whole segments that end before `before` (never the one being written). */
  trim(topic: string, partition: number, before: bigint): void {
    const file = this.partitions.get(`${topic}/${partition}`);
    if (!file) return;
    while (file.segments.length > 1 && file.segments[0]!.last < before) {
      unlinkSync(file.segments.shift()!.path);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.saveCommits();
    for (const f of this.partitions.values()) closeSync(f.fd);
    this.partitions.clear();
  }

  private roll(file: PartitionFile, base: bigint): void {
    fdatasyncSync(file.fd); // what the segment holds is durable before its fd goes away
    closeSync(file.fd);
    this.dirty.delete(file.fd);
    const seg: Segment = { base, path: join(file.dir, `${String(base).padStart(20, '0')}.log`), last: base - 1n };
    file.segments.push(seg);
    file.fd = openSync(seg.path, 'a');
    file.bytes = 0;
  }

  private saveCommits(): void {
    if (this.commitTimer) clearTimeout(this.commitTimer);
    this.commitTimer = undefined;
    const path = join(this.opts.dir, COMMITS);
    // write-then-rename: a crash leaves the old commits or the new ones, never half a file.
    writeFileSync(path + '.tmp', JSON.stringify(this.commits));
    renameSync(path + '.tmp', path);
  }
}
