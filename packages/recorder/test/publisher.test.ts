// RecordPublisher: the forwarder's recorder. Publishes to the bus off the hot path, spools to
// disk while the bus refuses (or memory is over budget), replays in order, never loses a record.
// The bus here is the real in-memory adapter behind a switch that makes it refuse or stall.
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createMemoryBus, type Bus, type PublishOutcome } from '@glitch/bus';
import { createLogger } from '@glitch/log';
import { RecordPublisher, type PublisherOptions } from '@glitch/recorder';
import { bodyToBytes, ExchangeRecord, decode } from '@glitch/records';
import { DiskSpool } from '@glitch/spool';
import { capture } from './captures.js';

const logger = createLogger({ name: 'recorder-test', level: 'silent' });
const TOPIC = 'glitch.exchanges.v1';

interface Seen {
  session: string;
  seq: number;
  id: string;
}

/** The in-memory bus behind a switch: `down` refuses (retry), `hold()` stalls publishes until released. */
class SwitchBus {
  readonly inner = createMemoryBus({ logger });
  down = false;
  attempts = 0;
  refused = 0;
  readonly published: Seen[] = [];
  private gate: Promise<void> | null = null;
  private open: (() => void) | null = null;

  hold(): void {
    this.gate = new Promise((r) => (this.open = r));
  }

  release(): void {
    this.open?.();
    this.gate = null;
  }

  readonly bus: Bus = {
    kind: 'memory',
    maxMessageBytes: 900_000,
    publish: (...a) => this.inner.publish(...a),
    publishBatch: (...a) => this.inner.publishBatch(...a),
    subscribe: (o) => this.inner.subscribe(o),
    close: () => this.inner.close(),
    publishRecord: async (topic, key, serialized, recordId): Promise<PublishOutcome> => {
      this.attempts++;
      if (this.gate) await this.gate;
      if (this.down) {
        this.refused++;
        return { kind: 'retry', reason: 'broker unreachable (injected)' };
      }
      const o = await this.inner.publishRecord(topic, key, serialized, recordId);
      if (o.kind === 'ok') {
        const d = decode(ExchangeRecord, serialized);
        assert.ok(d.ok);
        const body = JSON.parse(bodyToBytes(d.value.request.body).toString()) as { seq: number };
        this.published.push({ session: d.value.sessionId!, seq: body.seq, id: d.value.id });
      }
      return o;
    },
  };
}

const SESSIONS = ['10000000-0000-4000-8000-000000000001', '10000000-0000-4000-8000-000000000002', '10000000-0000-4000-8000-000000000003'];

/** Records the next `n` exchanges, round-robin over SESSIONS, each carrying its per-session sequence number. */
function makeFeeder(pad = 0) {
  const next = new Map<string, number>();
  let i = 0;
  return async (publisher: RecordPublisher, n: number): Promise<void> => {
    for (let k = 0; k < n; k++, i++) {
      const session = SESSIONS[i % SESSIONS.length]!;
      const seq = next.get(session) ?? 0;
      next.set(session, seq + 1);
      const body = JSON.stringify({ model: 'claude-sonnet-4-6', seq, pad: 'x'.repeat(pad), messages: [{ role: 'user', content: `turn ${seq}` }] });
      publisher.record(await capture({ sessionId: session, requestBody: Buffer.from(body) }));
    }
  };
}

/** Asserts every session's records arrived exactly once and in sequence 0..n-1. */
function assertInOrder(seen: readonly Seen[], total: number): void {
  assert.equal(seen.length, total, `published ${seen.length} of ${total}`);
  assert.equal(new Set(seen.map((s) => s.id)).size, total, 'no record twice');
  const bySession = new Map<string, number[]>();
  for (const s of seen) bySession.set(s.session, [...(bySession.get(s.session) ?? []), s.seq]);
  for (const [session, seqs] of bySession) assert.deepEqual(seqs, seqs.map((_, i) => i), `session ${session} in order`);
}

async function waitFor(cond: () => boolean, ms: number, what: string, detail?: () => unknown): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}${detail ? `; state: ${JSON.stringify(detail())}` : ''}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function spoolAt(dir: string, maxBytes = 64 * 1024 * 1024, whenFull: 'refuse' | 'drop-oldest' = 'refuse'): DiskSpool {
  return new DiskSpool({ dir, maxBytes, whenFull, flushIntervalMs: 10 });
}

const tmp = () => mkdtempSync(join(tmpdir(), 'glitch-recorder-'));

function publisher(sb: SwitchBus, spool: DiskSpool, extra: Partial<PublisherOptions> = {}): RecordPublisher {
  return new RecordPublisher({ bus: sb.bus, spool, logger, topic: TOPIC, replayIntervalMs: 30, ...extra });
}

test('publishes every record once, in order per session, many per window', async () => {
  const sb = new SwitchBus();
  const p = publisher(sb, spoolAt(tmp()));
  const feed = makeFeeder();
  await feed(p, 300);
  await p.idle();
  assertInOrder(sb.published, 300);
  const s = p.stats;
  assert.equal(s.captured, 300);
  assert.equal(s.published, 300);
  assert.equal(s.spooled, 0);
  assert.equal(s.queued, 0);
  assert.equal(s.queuedBytes, 0);
  assert.equal(s.mode, 'direct');
  await p.close();
});

test('bus refuses: records go to the spool, later ones queue behind it; replayed in order when it returns', async () => {
  const sb = new SwitchBus();
  const spool = spoolAt(tmp());
  const p = publisher(sb, spool);
  const feed = makeFeeder();
  await feed(p, 10);
  await p.idle();
  sb.down = true;
  await feed(p, 25);
  await waitFor(() => p.stats.spooled === 25, 5_000, 'every record while down spooled', () => p.stats);
  assert.equal(p.stats.mode, 'spooling');
  assert.equal(spool.stats.entries, 25);
  const attemptsWhileDown = sb.attempts;
  await feed(p, 10); // straight to the spool: no direct publish attempt while spooling
  assert.equal(p.stats.spooled, 35);
  assert.ok(sb.attempts - attemptsWhileDown <= 1, 'records arriving while spooling are not published ahead of the spool');

  // The bus returns; publishes are slow, so records keep arriving during the replay.
  sb.down = false;
  const during = (async () => {
    for (let i = 0; i < 6; i++) {
      await feed(p, 5);
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  await during;
  await waitFor(() => p.stats.mode === 'direct' && p.stats.queued === 0, 10_000, 'spool drained', () => p.stats);
  await feed(p, 5);
  await p.idle();
  assertInOrder(sb.published, 10 + 35 + 30 + 5);
  const s = p.stats;
  assert.equal(s.spooled, s.replayed, 'everything spooled was replayed');
  assert.ok(s.spooled >= 35);
  assert.equal(s.spoolingEpisodes.bus, 1);
  assert.deepEqual(s.dropped, {});
  assert.equal(spool.stats.entries, 0);
  await p.close();
});

test('a window that fails part-way: the failed rest goes to the spool in order, nothing overtakes it', async () => {
  const sb = new SwitchBus();
  const p = publisher(sb, spoolAt(tmp()));
  const feed = makeFeeder();
  sb.hold();
  await feed(p, 40); // one window in flight (held), the rest queued behind it
  sb.down = true;
  sb.release();
  await waitFor(() => p.stats.spooled === 40, 5_000, 'the window and the queue spooled', () => p.stats);
  sb.down = false;
  await waitFor(() => p.stats.replayed === 40, 5_000, 'replayed', () => p.stats);
  await feed(p, 9);
  await p.idle();
  assertInOrder(sb.published, 49);
  await p.close();
});

test('a publisher started on a spool holding records replays them before anything new', async () => {
  const dir = tmp();
  const sb = new SwitchBus();
  sb.down = true;
  const first = publisher(sb, spoolAt(dir));
  const feed = makeFeeder();
  await feed(first, 12);
  await waitFor(() => first.stats.spooled === 12, 5_000, 'spooled while down');
  await first.close();

  sb.down = false;
  const spool = spoolAt(dir);
  assert.equal(spool.stats.entries, 12, 'the spool survived the restart');
  const second = publisher(sb, spool);
  assert.equal(second.stats.mode, 'spooling', 'starts behind its spool');
  await feed(second, 7); // arrive before the replay ran
  await waitFor(() => second.stats.mode === 'direct' && second.stats.queued === 0, 5_000, 'spool drained', () => second.stats);
  await second.idle();
  assertInOrder(sb.published, 19);
  assert.equal(second.stats.replayed, 19);
  await second.close();
});

test('close() flushes: queued records are published while the bus works, spooled and fsynced while it refuses', async () => {
  const sb = new SwitchBus();
  const p = publisher(sb, spoolAt(tmp()));
  const feed = makeFeeder();
  sb.hold();
  await feed(p, 30);
  const closing = p.close();
  sb.release();
  await closing;
  assertInOrder(sb.published, 30);

  const dir = tmp();
  const down = new SwitchBus();
  down.down = true;
  const q = publisher(down, spoolAt(dir));
  await feed(q, 8);
  await q.close();
  const reopened = spoolAt(dir);
  assert.equal(reopened.stats.entries, 8, 'on disk after close');
  reopened.close();
  q.record(await capture());
  assert.equal(q.stats.dropped.closed, 1, 'a record after close is counted as dropped, not lost silently');
});

test('memory is bounded: past maxQueuedBytes records go to the spool and still arrive in order', async () => {
  const sb = new SwitchBus();
  const spool = spoolAt(tmp());
  const maxQueuedBytes = 40_000;
  const p = publisher(sb, spool, { maxQueuedBytes, maxWindowBytes: 10_000 });
  const feed = makeFeeder(4_000); // ≈ 5 KB records
  sb.hold(); // the bus stalls (slow broker)
  let peak = 0;
  for (let i = 0; i < 60; i++) {
    await feed(p, 1);
    peak = Math.max(peak, p.stats.queuedBytes);
  }
  assert.ok(peak <= maxQueuedBytes, `memory held ${peak} bytes, budget ${maxQueuedBytes}`);
  assert.ok(p.stats.spooled > 40, `most records spooled (${p.stats.spooled})`);
  assert.equal(p.stats.mode, 'spooling');
  assert.equal(p.stats.spoolingEpisodes.memory, 1);
  sb.release();
  await waitFor(() => p.stats.mode === 'direct' && p.stats.queued === 0, 10_000, 'drained', () => p.stats);
  assertInOrder(sb.published, 60);
  await p.close();
});

test('memory over budget, then the window in flight fails: its records go before the newer spooled ones', async () => {
  const sb = new SwitchBus();
  const p = publisher(sb, spoolAt(tmp()), { maxQueuedBytes: 30_000, maxWindowBytes: 10_000 });
  const feed = makeFeeder(4_000);
  sb.hold();
  await feed(p, 20); // window in flight, then the queue, then spooled records
  assert.equal(p.stats.mode, 'spooling');
  sb.down = true;
  sb.release(); // the window fails after newer records were spooled
  // The held window (the first record: publishing starts as soon as it arrives) fails, then
  // the first replay attempt (of that window) fails too.
  await waitFor(() => sb.refused >= 2, 5_000, 'the window and a replay attempt to fail', () => p.stats);
  assert.equal(p.stats.queued, 1, 'the failed window is held in memory, ahead of the spool');
  sb.down = false;
  await waitFor(() => p.stats.mode === 'direct' && p.stats.queued === 0, 10_000, 'drained', () => p.stats);
  await feed(p, 4);
  await p.idle();
  assertInOrder(sb.published, 24);
  const s = p.stats;
  assert.equal(s.replayed, s.spooled, 'replayed counts the spool\'s records only');
  assert.equal(s.published, 24 - s.spooled, 'the held window (sent again from memory) and the direct ones count as published');
  await p.close();
});

test('spool full under refuse: new records are counted as dropped and the publisher says it is refusing', async () => {
  const sb = new SwitchBus();
  sb.down = true;
  const p = publisher(sb, spoolAt(tmp(), 20_000, 'refuse'));
  const feed = makeFeeder(2_000);
  await feed(p, 15);
  await waitFor(() => (p.stats.dropped.spool_full ?? 0) > 0, 5_000, 'spool full', () => p.stats);
  assert.equal(p.admission.isRefusing(), true);
  assert.equal(p.stats.spooled + (p.stats.dropped.spool_full ?? 0), 15, 'every record accounted for');
  await p.close();
});
