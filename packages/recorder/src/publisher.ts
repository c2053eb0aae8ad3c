// The forwarder's Recorder: builds ExchangeRecords and publishes them to the bus, never on
// the hot path and never blocking it. While the bus refuses (Kafka down) records go to the
// disk spool; once anything is spooled, later records queue behind it, so per-session order
// holds; the spool is replayed in order when the bus is back.
import type { Bus } from '@glitch/bus';
import type { CapturedExchange, Recorder } from '@glitch/forwarder';
import type { Logger } from '@glitch/log';
import { encode, ExchangeRecord, TOPICS } from '@glitch/records';
import type { DiskSpool } from '@glitch/spool';
import { buildExchangeRecord } from './build-record.js';

export interface PublisherStats {
  captured: number;
  published: number;
  spooled: number;
  replayed: number;
  /** Records that could not be built or published, by reason. Each is also logged. */
  dropped: Record<string, number>;
  /** Records waiting in memory for the bus. */
  queued: number;
  queuedBytes: number;
  spool: DiskSpool['stats'];
  mode: 'direct' | 'spooling';
}

export interface PublisherOptions {
  bus: Bus;
  spool: DiskSpool;
  logger: Logger;
  topic?: string;
  /** Records held in memory waiting for the bus before new ones go to the spool. */
  maxQueuedBytes?: number;
  /** How often to try the bus again while spooling. */
  replayIntervalMs?: number;
}

interface Pending {
  key: string;
  id: string;
  serialized: Buffer;
}

const KEY_LEN_BYTES = 2;

function spoolEntry(p: Pending): Buffer {
  const key = Buffer.from(p.key);
  const id = Buffer.from(p.id);
  const head = Buffer.allocUnsafe(KEY_LEN_BYTES * 2);
  head.writeUInt16LE(key.byteLength, 0);
  head.writeUInt16LE(id.byteLength, 2);
  return Buffer.concat([head, key, id, p.serialized]);
}

function fromSpoolEntry(b: Buffer): Pending {
  const keyLen = b.readUInt16LE(0);
  const idLen = b.readUInt16LE(2);
  const key = b.subarray(4, 4 + keyLen).toString();
  const id = b.subarray(4 + keyLen, 4 + keyLen + idLen).toString();
  return { key, id, serialized: b.subarray(4 + keyLen + idLen) };
}

export class RecordPublisher implements Recorder {
  private readonly topic: string;
  private readonly maxQueuedBytes: number;
  private readonly replayIntervalMs: number;
  private readonly queue: Pending[] = [];
  private queuedBytes = 0;
  private pumping = false;
  private spooling: boolean;
  private replayTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private idleWaiters: (() => void)[] = [];
  private readonly counters = { captured: 0, published: 0, spooled: 0, replayed: 0 };
  private readonly dropped: Record<string, number> = {};

  constructor(private readonly opts: PublisherOptions) {
    this.topic = opts.topic ?? TOPICS.exchanges;
    this.maxQueuedBytes = opts.maxQueuedBytes ?? 64 * 1024 * 1024;
    this.replayIntervalMs = opts.replayIntervalMs ?? 1_000;
    // Records left in the spool by a previous run (crash, Kafka down at shutdown) go first.
    this.spooling = !opts.spool.isEmpty;
    if (this.spooling) {
      opts.logger.warn({ spool: opts.spool.stats }, 'spool holds records from a previous run; replaying them before new ones');
      this.scheduleReplay(0);
    }
  }

  record(capture: CapturedExchange): void {
    this.counters.captured++;
    let pending: Pending;
    try {
      const record = buildExchangeRecord(capture);
      pending = { key: record.sessionId ?? record.id, id: record.id, serialized: Buffer.from(encode(ExchangeRecord, record)) };
    } catch (e) {
      this.drop('invalid_record', e, capture.exchangeId);
      return;
    }
    if (this.spooling || this.queuedBytes + pending.serialized.byteLength > this.maxQueuedBytes) {
      this.toSpool(pending);
      return;
    }
    this.queue.push(pending);
    this.queuedBytes += pending.serialized.byteLength;
    void this.pump();
  }

  get stats(): PublisherStats {
    return {
      ...this.counters,
      dropped: { ...this.dropped },
      queued: this.queue.length,
      queuedBytes: this.queuedBytes,
      spool: this.opts.spool.stats,
      mode: this.spooling ? 'spooling' : 'direct',
    };
  }

  /** True when the spool is full under the `refuse` policy: the forwarder should shed load. */
  get refusing(): boolean {
    return this.opts.spool.refusing;
  }

  /** Resolves when nothing is queued in memory (published or spooled). */
  async idle(): Promise<void> {
    if (!this.pumping && this.queue.length === 0) return;
    await new Promise<void>((r) => this.idleWaiters.push(r));
  }

  /** Flushes: queued records are published or spooled; the spool is fsynced and closed. */
  async close(): Promise<void> {
    await this.idle();
    this.closed = true;
    if (this.replayTimer) clearTimeout(this.replayTimer);
    this.opts.spool.close();
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.queue.length) {
        const next = this.queue[0]!;
        if (this.spooling) {
          // The bus failed meanwhile: everything still queued goes behind the spooled ones.
          this.queue.shift();
          this.queuedBytes -= next.serialized.byteLength;
          this.toSpool(next);
          continue;
        }
        const outcome = await this.opts.bus.publishRecord(this.topic, next.key, next.serialized, next.id);
        this.queue.shift();
        this.queuedBytes -= next.serialized.byteLength;
        if (outcome.kind === 'ok') this.counters.published++;
        else if (outcome.kind === 'drop') this.drop('bus_refused', new Error(outcome.reason), next.id);
        else {
          this.opts.logger.warn({ reason: outcome.reason }, 'bus unavailable: spooling records to disk until it returns');
          this.spooling = true;
          this.toSpool(next);
          this.scheduleReplay(this.replayIntervalMs);
        }
      }
    } finally {
      this.pumping = false;
      for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  private toSpool(p: Pending): void {
    const r = this.opts.spool.append(spoolEntry(p));
    if (r.ok) this.counters.spooled++;
    else this.drop(r.reason, new Error(`spool: ${r.reason}`), p.id);
    this.spooling = true;
    this.scheduleReplay(this.replayIntervalMs);
  }

  private scheduleReplay(delayMs: number): void {
    if (this.replayTimer || this.closed) return;
    this.replayTimer = setTimeout(() => {
      this.replayTimer = undefined;
      void this.replay();
    }, delayMs);
    this.replayTimer.unref();
  }

  private async replay(): Promise<void> {
    let failed = false;
    await this.opts.spool.replay(async (entry) => {
      const p = fromSpoolEntry(entry);
      const outcome = await this.opts.bus.publishRecord(this.topic, p.key, p.serialized, p.id);
      if (outcome.kind === 'retry') {
        failed = true;
        return 'retry';
      }
      if (outcome.kind === 'ok') this.counters.replayed++;
      else this.drop('bus_refused', new Error(outcome.reason), p.id);
      return 'ok';
    });
    if (failed || !this.opts.spool.isEmpty) {
      this.scheduleReplay(this.replayIntervalMs);
      return;
    }
    this.spooling = false;
    this.opts.logger.info({ replayed: this.counters.replayed }, 'spool drained: publishing directly again');
    void this.pump();
  }

  private drop(reason: string, error: unknown, id: string): void {
    this.dropped[reason] = (this.dropped[reason] ?? 0) + 1;
    this.opts.logger.error({ reason, exchangeId: id, err: error }, 'exchange record dropped');
  }
}
