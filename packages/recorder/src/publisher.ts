// The forwarder's Recorder: builds ExchangeRecords and publishes them to the bus, never on
// the hot path and never blocking it.
//
// Records flow through one ordered pipeline: memory queue → bus, or → disk spool. Order is
// what a consumer sees per session (Kafka key), so it is kept across every switch:
// - records are published in windows (many publishes share Kafka requests); the bus never
//   lets a later message overtake an earlier failed one, so a window's outcomes are
//   "ok… then retry…";
// - when the bus refuses (Kafka down) the failed part of the window and everything queued
//   behind it goes to the spool, and from then on every new record goes to the spool too;
// - when memory is over budget (the bus is slow) the queue moves to the spool and new records
//   follow it; if the window still in flight then fails, its records are kept in memory
//   (bounded by one window) and replayed before the spool, because they are older;
// - the spool is replayed in order once the window in flight has settled; new records join
//   the spool's tail meanwhile, and direct publishing resumes only when it is empty.
import type { Bus, PublishOutcome } from '@glitch/bus';
import type { AdmissionSignal, CapturedExchange, Recorder, ScalarMetric } from '@glitch/forwarder';
import type { Logger } from '@glitch/log';
import { TOPICS } from '@glitch/records';
import type { DiskSpool } from '@glitch/spool';
import { randomBytes } from 'node:crypto';
import { encodeExchangeRecord, type EncodedRecord } from './build-record.js';

export interface PublisherStats {
  captured: number;
  /** Published from memory: directly, or a failed window held in memory and sent again before the spool. */
  published: number;
  /** Appended to the disk spool (bus down, or memory over budget). */
  spooled: number;
  /** Published from the disk spool. Without drops, equal to `spooled` once the spool is empty. */
  replayed: number;
  /** Records that could not be built or published, by reason. Each is also logged. */
  dropped: Record<string, number>;
  /** Records waiting in memory for the bus (queued, in flight, or a failed window held before the spool). */
  queued: number;
  queuedBytes: number;
  spool: DiskSpool['stats'];
  mode: 'direct' | 'spooling';
  /** Times the publisher switched to spooling, by cause. */
  spoolingEpisodes: { bus: number; memory: number };
  /** Publish attempts the bus answered with `retry` (each failed window or replay attempt counts once). */
  busRefusals: number;
}

export interface PublisherOptions {
  bus: Bus;
  spool: DiskSpool;
  logger: Logger;
  topic?: string;
  /** Bytes of records held in memory (queued or in flight) before new ones go to the spool. Default 64 MiB. */
  maxQueuedBytes?: number;
  /** How often to try the bus again while it refuses. Default 1 s. */
  replayIntervalMs?: number;
  /** Records published at once (they share Kafka requests). Default 4 MiB / 1 000 records (at least one record). */
  maxWindowBytes?: number;
  maxWindowRecords?: number;
}

/** A record waiting for the bus or the spool: its key, id and serialized bytes. */
type Pending = EncodedRecord;

const KEY_LEN_BYTES = 2;

/** Spool entry: [u16 key length][u16 id length][key][id][serialized record]. */
export function spoolEntry(p: Pending): Buffer {
  const key = Buffer.from(p.key);
  const id = Buffer.from(p.id);
  const head = Buffer.allocUnsafe(KEY_LEN_BYTES * 2);
  head.writeUInt16LE(key.byteLength, 0);
  head.writeUInt16LE(id.byteLength, 2);
  return Buffer.concat([head, key, id, p.serialized]);
}

export function fromSpoolEntry(b: Buffer): Pending {
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
  private readonly maxWindowBytes: number;
  private readonly maxWindowRecords: number;
  /** Waiting for the bus, oldest first. Empty while spooling. */
  private queue: Pending[] = [];
  /** Being published right now (the oldest records in memory). */
  private inflight: Pending[] = [];
  /** A window that failed after newer records were spooled: replayed before the spool. */
  private head: Pending[] = [];
  private memoryBytes = 0;
  private spooling: boolean;
  private pumping: Promise<void> | null = null;
  private replaying: Promise<void> | null = null;
  private replayTimer: NodeJS.Timeout | undefined;
  private closing = false;
  private closed = false;
  private idleWaiters: (() => void)[] = [];
  private readonly counters = { captured: 0, published: 0, spooled: 0, replayed: 0 };
  private readonly episodes = { bus: 0, memory: 0 };
  private refusals = 0;
  private readonly dropped: Record<string, number> = {};
  /** Marks where bodies go in a record's skeleton (encodeExchangeRecord); random, so no request can aim at it. */
  private readonly placeholderPrefix = `glitch_body_${randomBytes(12).toString('hex')}_`;

  constructor(private readonly opts: PublisherOptions) {
    this.topic = opts.topic ?? TOPICS.exchanges;
    this.maxQueuedBytes = opts.maxQueuedBytes ?? 64 * 1024 * 1024;
    this.replayIntervalMs = opts.replayIntervalMs ?? 1_000;
    this.maxWindowBytes = opts.maxWindowBytes ?? 4 * 1024 * 1024;
    this.maxWindowRecords = opts.maxWindowRecords ?? 1_000;
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
      pending = encodeExchangeRecord(capture, this.placeholderPrefix);
    } catch (e) {
      this.drop('invalid_record', e, capture.exchangeId);
      return;
    }
    if (this.closed) {
      this.drop('closed', new Error('record after close()'), pending.id);
      return;
    }
    if (this.spooling || this.closing) {
      this.toSpool(pending);
      return;
    }
    if (this.memoryBytes + pending.serialized.byteLength > this.maxQueuedBytes && this.memoryBytes > 0) {
      // The bus is slower than traffic: everything not yet handed to it moves to the spool
      // (in order), and this record follows.
      this.startSpooling('memory', null);
      this.moveQueueToSpool();
      this.toSpool(pending);
      this.scheduleReplay(0);
      return;
    }
    this.queue.push(pending);
    this.memoryBytes += pending.serialized.byteLength;
    this.pump();
  }

  get stats(): PublisherStats {
    return {
      ...this.counters,
      dropped: { ...this.dropped },
      queued: this.queue.length + this.inflight.length + this.head.length,
      queuedBytes: this.memoryBytes,
      spool: this.opts.spool.stats,
      mode: this.spooling ? 'spooling' : 'direct',
      spoolingEpisodes: { ...this.episodes },
      busRefusals: this.refusals,
    };
  }

  /** The forwarder refuses new requests (503) while the spool is full under the `refuse` policy. */
  get admission(): AdmissionSignal {
    const spool = this.opts.spool;
    return {
      isRefusing: () => spool.refusing,
      onChange: (cb) => spool.onRefusingChange(cb),
      isUrgent: () => spool.pressed,
      onUrgentChange: (cb) => spool.onPressedChange(cb),
    };
  }

  /** Counters for the forwarder's admin /metrics. */
  metrics(): ScalarMetric[] {
    const s = this.stats;
    const p = 'glitch_recorder_';
    const out: ScalarMetric[] = [
      { name: `${p}records_captured_total`, help: 'Exchanges the recorder received.', type: 'counter', value: s.captured },
      { name: `${p}records_published_total`, help: 'Records published to the bus from memory (directly, or a failed window retried before the spool).', type: 'counter', value: s.published },
      { name: `${p}records_spooled_total`, help: 'Records appended to the disk spool (bus down or memory over budget).', type: 'counter', value: s.spooled },
      { name: `${p}records_replayed_total`, help: 'Records published from the disk spool after the bus returned.', type: 'counter', value: s.replayed },
    ];
    const reasons = Object.entries(s.dropped);
    if (reasons.length === 0) reasons.push(['none', 0]);
    for (const [reason, value] of reasons) {
      out.push({ name: `${p}records_dropped_total`, help: 'Records lost, by reason (each is also logged).', type: 'counter', value, labels: { reason } });
    }
    out.push(
      { name: `${p}queued_records`, help: 'Records in memory waiting for the bus.', type: 'gauge', value: s.queued },
      { name: `${p}queued_bytes`, help: 'Bytes of records in memory waiting for the bus.', type: 'gauge', value: s.queuedBytes },
      { name: `${p}spooling`, help: '1 while new records go to the disk spool instead of the bus.', type: 'gauge', value: s.mode === 'spooling' ? 1 : 0 },
      { name: `${p}bus_refusals_total`, help: 'Publish attempts the bus refused (Kafka unreachable or failing).', type: 'counter', value: s.busRefusals },
      { name: `${p}spool_bytes`, help: 'Bytes in the disk spool (on disk and waiting to be flushed).', type: 'gauge', value: s.spool.bytes },
      { name: `${p}spool_entries`, help: 'Records in the disk spool.', type: 'gauge', value: s.spool.entries },
      { name: `${p}spool_full`, help: '1 while the disk spool is full (records are dropped or requests refused, per policy).', type: 'gauge', value: s.spool.full ? 1 : 0 },
      { name: `${p}spool_pressed`, help: '1 while a refuse-policy spool is at least half full: captures reach the recorder without delay.', type: 'gauge', value: this.opts.spool.pressed ? 1 : 0 },
      { name: `${p}spool_dropped_oldest_total`, help: 'Spooled records dropped to make room (policy drop-oldest).', type: 'counter', value: s.spool.droppedOldest },
      { name: `${p}spool_refused_total`, help: 'Records the full spool refused.', type: 'counter', value: s.spool.refused },
      { name: `${p}spool_torn_skipped_total`, help: 'Torn or corrupt spool entries (a crash mid-write) skipped at start.', type: 'counter', value: s.spool.tornSkipped },
    );
    return out;
  }

  /** Resolves when nothing waits in the memory queue or in flight (published, spooled or held as head). */
  async idle(): Promise<void> {
    while (this.pumping || this.queue.length > 0) {
      await new Promise<void>((r) => this.idleWaiters.push(r));
    }
  }

  /**
   * Flushes and stops: queued records are published or spooled, a replay in progress stops
   * after the entry it is sending, records held in memory go to the spool, and the spool is
   * fsynced and closed. Whatever is in the spool is replayed by the next publisher on it.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closing = true;
    if (this.replayTimer) clearTimeout(this.replayTimer);
    this.replayTimer = undefined;
    await this.idle();
    await this.replaying;
    await this.pumping;
    if (this.head.length) {
      this.opts.logger.warn(
        { records: this.head.length },
        'closing while the bus is down: records of a failed window go to the spool after newer ones (their sessions replay out of order)',
      );
      for (const p of this.head.splice(0)) {
        this.memoryBytes -= p.serialized.byteLength;
        this.appendToSpool(p);
      }
    }
    this.moveQueueToSpool();
    this.closed = true;
    this.opts.spool.close();
  }

  // ---- direct publishing -------------------------------------------------------------------

  private pump(): void {
    if (this.pumping || this.spooling) return;
    this.pumping = this.runPump().finally(() => {
      this.pumping = null;
      for (const w of this.idleWaiters.splice(0)) w();
    });
  }

  private async runPump(): Promise<void> {
    while (!this.spooling && this.queue.length) {
      const window = this.takeWindow();
      this.inflight = window;
      const outcomes = await Promise.all(window.map((p) => this.publish(p)));
      this.inflight = [];
      const failed: Pending[] = [];
      let reason = '';
      for (let i = 0; i < window.length; i++) {
        const p = window[i]!;
        const o = outcomes[i]!;
        if (o.kind === 'retry') {
          if (!failed.length) reason = o.reason;
          failed.push(p);
          continue;
        }
        this.memoryBytes -= p.serialized.byteLength;
        if (o.kind === 'ok') this.counters.published++;
        else this.drop('bus_refused', new Error(o.reason), p.id);
      }
      if (!failed.length) continue;
      this.refusals++;
      if (this.spooling) {
        // Memory overflow spooled newer records while this window was in flight: these are
        // older, so they are replayed before the spool (held in memory, one window at most).
        this.head = failed;
      } else {
        this.startSpooling('bus', reason);
        for (const p of failed) {
          this.memoryBytes -= p.serialized.byteLength;
          this.appendToSpool(p);
        }
        this.moveQueueToSpool();
      }
      this.scheduleReplay(this.replayIntervalMs);
    }
  }

  private takeWindow(): Pending[] {
    let n = 0;
    let bytes = 0;
    while (n < this.queue.length && n < this.maxWindowRecords) {
      const size = this.queue[n]!.serialized.byteLength;
      if (n > 0 && bytes + size > this.maxWindowBytes) break;
      bytes += size;
      n++;
    }
    return this.queue.splice(0, n);
  }

  private publish(p: Pending): Promise<PublishOutcome> {
    return this.opts.bus.publishRecord(this.topic, p.key, p.serialized, p.id).catch((e: unknown) => ({ kind: 'retry', reason: `publish threw: ${(e as Error).message}` }) as const);
  }

  // ---- spooling ----------------------------------------------------------------------------

  private startSpooling(cause: 'bus' | 'memory', reason: string | null): void {
    if (this.spooling) return;
    this.spooling = true;
    this.episodes[cause]++;
    if (cause === 'bus') this.opts.logger.warn({ reason }, 'bus unavailable: spooling records to disk until it returns');
    else this.opts.logger.warn({ queuedBytes: this.memoryBytes, maxQueuedBytes: this.maxQueuedBytes }, 'bus slower than traffic: records over the memory budget go to the disk spool');
  }

  private moveQueueToSpool(): void {
    for (const p of this.queue.splice(0)) {
      this.memoryBytes -= p.serialized.byteLength;
      this.appendToSpool(p);
    }
  }

  private toSpool(p: Pending): void {
    this.appendToSpool(p);
    this.scheduleReplay(this.replayIntervalMs);
  }

  private appendToSpool(p: Pending): void {
    const r = this.opts.spool.append(spoolEntry(p));
    if (r.ok) this.counters.spooled++;
    else this.drop(r.reason, new Error(`spool: ${r.reason}`), p.id);
  }

  /** Arms the replay timer unless a replay is running (it re-arms itself when it must). */
  private scheduleReplay(delayMs: number): void {
    if (this.closing || this.replaying) return;
    if (this.replayTimer) {
      if (delayMs > 0) return;
      clearTimeout(this.replayTimer); // sooner than planned
    }
    this.armReplay(delayMs);
  }

  private armReplay(delayMs: number): void {
    if (this.closing) return;
    if (this.replayTimer) clearTimeout(this.replayTimer);
    this.replayTimer = setTimeout(() => {
      this.replayTimer = undefined;
      if (this.replaying || this.closing) return;
      const run = this.replay();
      this.replaying = run;
      void run.finally(() => {
        if (this.replaying === run) this.replaying = null;
      });
    }, delayMs);
    this.replayTimer.unref();
  }

  private async replay(): Promise<void> {
    // The window in flight holds older records than the spool: let it settle first.
    await this.pumping;
    let failed = false;
    while (this.head.length && !this.closing) {
      const p = this.head[0]!;
      const o = await this.publish(p);
      if (o.kind === 'retry') {
        this.refusals++;
        failed = true;
        break;
      }
      this.head.shift();
      this.memoryBytes -= p.serialized.byteLength;
      // Never spooled: counted as published, so that `replayed` counts exactly the spool's records.
      if (o.kind === 'ok') this.counters.published++;
      else this.drop('bus_refused', new Error(o.reason), p.id);
    }
    if (!failed && !this.closing && !this.head.length) {
      // A window of spooled records at a time, published together (the bus shares requests
      // among them); only the leading run the bus accepted leaves the spool.
      await this.opts.spool.replayBatches(async (entries) => {
        if (this.closing) return 0; // stop here; the entries stay for the next run
        const pending = entries.map(fromSpoolEntry);
        const outcomes = await Promise.all(pending.map((p) => this.publish(p)));
        let delivered = 0;
        for (const [i, o] of outcomes.entries()) {
          if (o.kind === 'retry') {
            this.refusals++;
            failed = true;
            break;
          }
          if (o.kind === 'ok') this.counters.replayed++;
          else this.drop('bus_refused', new Error(o.reason), pending[i]!.id);
          delivered++;
        }
        return delivered;
      });
    }
    if (this.closing) return;
    if (failed || this.head.length || !this.opts.spool.isEmpty) {
      this.armReplay(this.replayIntervalMs);
      return;
    }
    this.spooling = false;
    this.opts.logger.info({ replayed: this.counters.replayed }, 'spool drained: publishing directly again');
    this.pump();
  }

  private drop(reason: string, error: unknown, id: string): void {
    this.dropped[reason] = (this.dropped[reason] ?? 0) + 1;
    this.opts.logger.error({ reason, exchangeId: id, err: error }, 'exchange record dropped');
  }
}
