// The Bus contract, as one suite any adapter must pass (bus-contract.test.ts runs it for the
// in-memory bus and for Kafka through the harness broker).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { chunkMessages, deadLetter, ok, partitionFor, retry, type Bus, type BusMessage, type Outcome, type SubscribeOptions, type Subscription } from '@glitch/bus';
import { DeadLetter, decode } from '@glitch/records';
import { uniqueName } from '../../../test/harness/env.js';

export interface AdapterUnderTest {
  name: string;
  /** A fresh bus and a way to create topics on whatever is behind it. */
  open(): Promise<{ bus: Bus; createTopic(name: string, partitions: number): Promise<void>; description: string }>;
}

/** Resolves when `cond()` holds; rejects after `ms` naming `what` (no hanging tests). */
export async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Seen {
  partition: number;
  offset: number;
  key: string;
  value: string;
  message: BusMessage;
}

/**
 * Subscribes with a handler that records every delivery and, separately, what the bus will
 * treat as acknowledged (outcomes before the first retry of a batch).
 */
async function consume(
  bus: Bus,
  opts: Omit<SubscribeOptions, 'handler'>,
  decide: (m: BusMessage, attempt: number) => Outcome | 'hang' = () => ok,
) {
  const delivered: Seen[] = [];
  const acked: Seen[] = [];
  const attempts = new Map<string, number>();
  const sub: Subscription = await bus.subscribe({
    ...opts,
    handler: async (batch) => {
      const outcomes: Outcome[] = [];
      let retried = false;
      for (const m of batch.messages) {
        const id = `${m.partition}/${m.offset}`;
        const attempt = (attempts.get(id) ?? 0) + 1;
        attempts.set(id, attempt);
        const seen = { partition: m.partition, offset: Number(m.offset), key: m.key?.toString() ?? '', value: m.value.toString(), message: m };
        delivered.push(seen);
        const o = decide(m, attempt);
        if (o === 'hang') return new Promise<never>(() => {});
        outcomes.push(o);
        if (o.kind === 'retry') retried = true;
        if (!retried && o.kind === 'ok') acked.push(seen);
      }
      return outcomes;
    },
  });
  return { sub, delivered, acked };
}

const values = (xs: readonly Seen[]) => xs.map((x) => x.value);

export function busContract(adapter: AdapterUnderTest): void {
  describe(`Bus contract: ${adapter.name}`, () => {
    test('messages with the same key stay on one partition, in publish order', async (t) => {
      const { bus, createTopic, description } = await adapter.open();
      t.diagnostic(description);
      const topic = uniqueName('order');
      await createTopic(topic, 3);
      const c = await consume(bus, { groupId: uniqueName('g'), topics: [topic] });
      try {
        const keys = ['alpha', 'bravo', 'charlie', 'delta', 'echo'];
        const messages = Array.from({ length: 100 }, (_, i) => ({ key: keys[i % 5]!, value: Buffer.from(`${keys[i % 5]}:${Math.floor(i / 5)}`) }));
        const outcomes = await bus.publishBatch(topic, messages);
        for (const [i, o] of outcomes.entries()) {
          assert.equal(o.kind, 'ok', JSON.stringify(o));
          if (o.kind === 'ok') assert.equal(o.partition, partitionFor(Buffer.from(messages[i]!.key), 3, 0));
        }
        await waitFor(() => c.acked.length >= 100, 30_000, '100 acked messages');
        for (const key of keys) {
          const mine = c.acked.filter((s) => s.key === key);
          assert.deepEqual(values(mine), Array.from({ length: 20 }, (_, n) => `${key}:${n}`), `order of ${key}`);
          assert.equal(new Set(mine.map((s) => s.partition)).size, 1, `${key} on one partition`);
        }
      } finally {
        await c.sub.stop();
        await bus.close();
      }
    });

    test('a consumer group of two shares the partitions; every message is handled once', async (t) => {
      const { bus, createTopic, description } = await adapter.open();
      t.diagnostic(description);
      const topic = uniqueName('group');
      const groupId = uniqueName('g');
      await createTopic(topic, 4);
      const a = await consume(bus, { groupId, topics: [topic] });
      const b = await consume(bus, { groupId, topics: [topic] });
      try {
        const parts = () => [a.sub.assignment()[topic] ?? [], b.sub.assignment()[topic] ?? []] as const;
        await waitFor(
          () => {
            const [pa, pb] = parts();
            return pa.length > 0 && pb.length > 0 && new Set([...pa, ...pb]).size === 4 && pa.length + pb.length === 4;
          },
          // The librdkafka mock settles a two-member group only after session timeouts,
          // which stretch on a loaded 2-core machine; a deadline, not a retry.
          90_000,
          'two members holding disjoint partitions',
        );
        t.diagnostic(`assignment: a=${parts()[0].join(',')} b=${parts()[1].join(',')}`);
        const total = 40;
        const outcomes = await bus.publishBatch(topic, Array.from({ length: total }, (_, i) => ({ key: `key-${i}`, value: Buffer.from(`m${i}`) })));
        assert.ok(outcomes.every((o) => o.kind === 'ok'));
        await waitFor(() => a.acked.length + b.acked.length >= total, 30_000, `${total} messages across the group`);
        await settle(500); // a duplicate would arrive by now
        assert.deepEqual(values([...a.delivered, ...b.delivered]).sort(), Array.from({ length: total }, (_, i) => `m${i}`).sort());
        assert.ok(a.acked.length > 0 && b.acked.length > 0, `both consumed (a=${a.acked.length}, b=${b.acked.length})`);
        for (const [name, member] of [['a', a], ['b', b]] as const) {
          const mine = member.sub.assignment()[topic] ?? [];
          for (const s of member.delivered) assert.ok(mine.includes(s.partition), `${name} got partition ${s.partition} outside ${mine.join(',')}`);
        }
      } finally {
        await Promise.all([a.sub.stop(), b.sub.stop()]);
        await bus.close();
      }
    });

    test('offsets are committed only after the handler acks: a replacement resumes at the first unacked message', async (t) => {
      const { bus, createTopic, description } = await adapter.open();
      t.diagnostic(description);
      const topic = uniqueName('commit');
      const groupId = uniqueName('g');
      await createTopic(topic, 1);
      let hang = false;
      const first = await consume(bus, { groupId, topics: [topic] }, () => (hang ? 'hang' : ok));
      let second: Awaited<ReturnType<typeof consume>> | undefined;
      try {
        await bus.publishBatch(topic, Array.from({ length: 5 }, (_, i) => ({ key: null, value: Buffer.from(`m${i}`) })));
        await waitFor(() => first.sub.stats().committed[`${topic}/0`] === '5', 30_000, 'offset 5 committed after 5 acks');
        hang = true; // the next batch is received but never acknowledged
        await bus.publishBatch(topic, Array.from({ length: 5 }, (_, i) => ({ key: null, value: Buffer.from(`m${5 + i}`) })));
        await waitFor(() => first.delivered.length > 5, 30_000, 'the second batch to reach the first consumer');
        await first.sub.abort();
        assert.equal(first.sub.stats().committed[`${topic}/0`], '5', 'nothing committed for the unacked batch');

        second = await consume(bus, { groupId, topics: [topic] });
        await waitFor(() => second!.acked.length >= 5, 30_000, 'the unacked messages');
        await settle(500);
        assert.deepEqual(values(second.delivered), ['m5', 'm6', 'm7', 'm8', 'm9'], 'resumed exactly after the last ack');
        assert.deepEqual(second.delivered.map((s) => s.offset), [5, 6, 7, 8, 9]);
      } finally {
        await first.sub.abort();
        await second?.sub.stop();
        await bus.close();
      }
    });

    test('a retry outcome redelivers that message and the ones after it, in order, after a back-off', async (t) => {
      const { bus, createTopic, description } = await adapter.open();
      t.diagnostic(description);
      const topic = uniqueName('retry');
      await createTopic(topic, 1);
      const c = await consume(bus, { groupId: uniqueName('g'), topics: [topic], retryBackoff: { initialMs: 200, maxMs: 1_000 } }, (m, attempt) =>
        m.value.toString() === 'm3' && attempt === 1 ? retry('downstream not ready') : ok,
      );
      try {
        await bus.publishBatch(topic, Array.from({ length: 10 }, (_, i) => ({ key: 'k', value: Buffer.from(`m${i}`) })));
        await waitFor(() => c.acked.length >= 10, 30_000, '10 acked messages');
        await settle(300);
        assert.deepEqual(values(c.acked), Array.from({ length: 10 }, (_, i) => `m${i}`), 'acked once each, in order');
        const count = (v: string) => c.delivered.filter((s) => s.value === v).length;
        assert.equal(count('m3'), 2, 'm3 delivered again');
        assert.deepEqual(['m0', 'm1', 'm2'].map(count), [1, 1, 1], 'what was acked before the retry is not redelivered');
        await waitFor(() => c.sub.stats().committed[`${topic}/0`] === '10', 10_000, 'offset 10 committed');
        assert.equal(c.sub.stats().retried, 1);
      } finally {
        await c.sub.stop();
        await bus.close();
      }
    });

    test('dead_letter publishes a DeadLetter (reason, source, payload) and consumption continues; drop is counted', async (t) => {
      const { bus, createTopic, description } = await adapter.open();
      t.diagnostic(description);
      const topic = uniqueName('dlq-src');
      const dlq = uniqueName('dlq');
      await createTopic(topic, 1);
      await createTopic(dlq, 1);
      const c = await consume(bus, { groupId: uniqueName('g'), topics: [topic], deadLetterTopic: dlq }, (m) => {
        const v = m.value.toString();
        return v === 'poison' ? deadLetter('not an ExchangeRecord: bad thing') : v === 'skip-me' ? { kind: 'drop', reason: 'deliberately skipped' } : ok;
      });
      const letters = await consume(bus, { groupId: uniqueName('g-dlq'), topics: [dlq] });
      try {
        await bus.publishBatch(topic, ['m0', 'poison', 'skip-me', 'm3'].map((v) => ({ key: 'session-9', value: Buffer.from(v) })));
        await waitFor(() => c.acked.length >= 2 && letters.acked.length >= 1, 30_000, 'two acks and one dead letter');
        await waitFor(() => c.sub.stats().committed[`${topic}/0`] === '4', 10_000, 'offset 4 committed');
        assert.deepEqual(values(c.acked), ['m0', 'm3']);
        const stats = c.sub.stats();
        assert.deepEqual([stats.deadLettered, stats.dropped, stats.lastDropReason], [1, 1, 'deliberately skipped']);
        const [letter] = letters.acked;
        assert.equal(letter?.key, 'session-9', 'the dead letter keeps the original key');
        const d = decode(DeadLetter, letter?.message.value);
        assert.ok(d.ok, d.ok ? '' : d.reason);
        assert.deepEqual({ ...d.value, at: 0 }, {
          schemaVersion: 1,
          kind: 'dead_letter',
          sourceTopic: topic,
          partition: 0,
          offset: '1',
          reason: 'not an ExchangeRecord: bad thing',
          payload: Buffer.from('poison').toString('base64'),
          at: 0,
        });
      } finally {
        await c.sub.stop();
        await letters.sub.stop();
        await bus.close();
      }
    });

    test('large records are chunked and reassembled, including interleaved chunk sets on one partition', async (t) => {
      const { bus, createTopic, description } = await adapter.open();
      t.diagnostic(description);
      const topic = uniqueName('chunks');
      await createTopic(topic, 1);
      const c = await consume(bus, { groupId: uniqueName('g'), topics: [topic] });
      try {
        const big = randomBytes(3 * 1024 * 1024);
        const published = await bus.publishRecord(topic, 'session-1', big);
        assert.equal(published.kind, 'ok', JSON.stringify(published));
        await waitFor(() => c.acked.length >= 1, 30_000, 'the reassembled 3 MiB record');
        const got = c.acked[0]!.message;
        assert.ok(got.value.equals(big), 'byte-equal after reassembly');
        assert.ok(got.chunks >= 4, `arrived in ${got.chunks} chunks`);
        assert.equal(got.firstOffset, '0');
        assert.equal(got.offset, String(got.chunks - 1));

        // Two records' chunks interleaved with a plain message, as concurrent producers could.
        const a = randomBytes(50_000);
        const b = randomBytes(40_000);
        const ca = chunkMessages('k', a, 20_000);
        const cb = chunkMessages('k', b, 20_000);
        assert.equal(ca.length, 4);
        assert.equal(cb.length, 3);
        const base = got.chunks;
        const interleaved = [ca[0]!, cb[0]!, ca[1]!, { key: 'k', value: Buffer.from('plain') }, cb[1]!, ca[2]!, cb[2]!, ca[3]!];
        assert.ok((await bus.publishBatch(topic, interleaved)).every((o) => o.kind === 'ok'));
        await waitFor(() => c.acked.length >= 4, 30_000, 'plain message and both records');
        const [plain, recB, recA] = c.acked.slice(1).map((s) => s.message);
        assert.equal(plain?.value.toString(), 'plain');
        assert.ok(recB && recA, 'both records delivered');
        assert.ok(recB.value.equals(b) && recA.value.equals(a), 'delivered in completion order: b then a');
        assert.deepEqual([recB.firstOffset, recB.offset, recA.firstOffset, recA.offset], [base + 1, base + 6, base, base + 7].map(String));
        await waitFor(() => c.sub.stats().committed[`${topic}/0`] === String(base + 8), 10_000, 'the commit after the last chunk');
        assert.equal(c.sub.stats().chunkSetsCompleted, 3);
      } finally {
        await c.sub.stop();
        await bus.close();
      }
    });

    test('an incomplete chunk set is dropped with a reason and holds commits back only until then', async (t) => {
      const { bus, createTopic, description } = await adapter.open();
      t.diagnostic(description);
      const topic = uniqueName('orphan');
      await createTopic(topic, 1);
      const c = await consume(bus, { groupId: uniqueName('g'), topics: [topic], reassembly: { maxOffsetSpan: 4 } });
      try {
        const [first] = chunkMessages('k', randomBytes(50_000), 20_000); // the rest never arrives
        await bus.publishBatch(topic, [first!, ...['a', 'b'].map((v) => ({ key: 'k', value: Buffer.from(v) }))]);
        await waitFor(() => c.acked.length >= 2, 30_000, 'the two plain messages');
        await settle(300);
        assert.equal(c.sub.stats().committed[`${topic}/0`] ?? '0', '0', 'not past the first chunk of a pending set');
        await bus.publishBatch(topic, ['c', 'd', 'e'].map((v) => ({ key: 'k', value: Buffer.from(v) })));
        await waitFor(() => c.sub.stats().committed[`${topic}/0`] === '6', 30_000, 'commit past the dropped set');
        const stats = c.sub.stats();
        assert.equal(stats.chunkSetsDropped, 1);
        assert.match(stats.lastDropReason ?? '', /incomplete \(1\/4 chunks\) 5 messages after its first chunk at offset 0/);
        assert.equal(stats.pendingChunkBytes, 0);
        assert.deepEqual(values(c.acked), ['a', 'b', 'c', 'd', 'e']);
      } finally {
        await c.sub.stop();
        await bus.close();
      }
    });
  });
}
