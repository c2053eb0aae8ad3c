// The persisted in-memory bus (embedded mode): a crash of the process — the bus object
// abandoned without close(), a torn write at the end of a partition file — loses nothing
// that publish() acknowledged; a new bus on the same directory redelivers everything after
// the group's last commit, continues offsets, and drops segments everyone has consumed.
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createMemoryBus, ok, retry, type DeliveredBatch, type Outcome } from '@glitch/bus';
import { createLogger } from '@glitch/log';

const logger = createLogger({ name: 'bus-persist-test', level: 'silent' });

async function consume(bus: ReturnType<typeof createMemoryBus>, groupId: string, until: number, ack: (offset: string) => boolean = () => true): Promise<{ values: string[]; offsets: string[] }> {
  const values: string[] = [];
  const offsets: string[] = [];
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const sub = await bus.subscribe({
    groupId,
    topics: ['t'],
    handler: async (batch: DeliveredBatch): Promise<readonly Outcome[]> => {
      const out: Outcome[] = [];
      for (const m of batch.messages) {
        if (!ack(m.offset)) {
          out.push(retry('not yet'));
          continue;
        }
        values.push(m.value.toString());
        offsets.push(m.offset);
        out.push(ok);
      }
      if (values.length >= until) done();
      return out;
    },
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([finished, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`got ${values.length}/${until}: ${values.join(',')}`)), 10_000)))]);
  } finally {
    clearTimeout(timer);
  }
  await sub.stop();
  return { values, offsets };
}

test('a crash loses nothing published: a new bus redelivers after the last commit and continues offsets', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'glitch-bus-persist-'));
  const a = createMemoryBus({ logger, persistDir: dir });
  for (let i = 0; i < 10; i++) assert.equal((await a.publish('t', 'k', Buffer.from(`m${i}`))).kind, 'ok');
  // The group commits the first 4, then the process "dies": no close(), no flush.
  const first = await consume(a, 'g', 4, (o) => BigInt(o) < 4n);
  assert.deepEqual(first.values, ['m0', 'm1', 'm2', 'm3']);
  await new Promise((r) => setTimeout(r, 200)); // commits are saved in batches of 100 ms

  const b = createMemoryBus({ logger, persistDir: dir });
  const second = await consume(b, 'g', 6);
  assert.deepEqual(second.values, ['m4', 'm5', 'm6', 'm7', 'm8', 'm9']);
  const next = await b.publish('t', 'k', Buffer.from('m10'));
  assert.equal(next.kind === 'ok' && next.offset, '10', 'offsets continue after a restart');
  await b.close();
  await a.close(); // the "dead" bus's timers, stopped only now so this file's process can exit
});

test('a torn tail (crash mid-write) is cut off and counted; earlier messages survive', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'glitch-bus-torn-'));
  const a = createMemoryBus({ logger, persistDir: dir });
  for (let i = 0; i < 3; i++) await a.publish('t', null, Buffer.from(`m${i}`));
  await a.close();
  const partDir = join(dir, 't', '0');
  const [seg] = readdirSync(partDir);
  appendFileSync(join(partDir, seg!), Buffer.from([42, 0, 0, 0, 1, 2])); // half a frame header + junk

  const b = createMemoryBus({ logger, persistDir: dir });
  const got = await consume(b, 'g', 3);
  assert.deepEqual(got.values, ['m0', 'm1', 'm2']);
  const next = await b.publish('t', null, Buffer.from('m3'));
  assert.equal(next.kind === 'ok' && next.offset, '3');
  await b.close();
  const c = createMemoryBus({ logger, persistDir: dir });
  const again = await consume(c, 'g', 1);
  assert.deepEqual(again.values, ['m3'], 'the message written after the cut is readable after another restart');
  await c.close();
});

test('segments every group has consumed are deleted; the active one stays', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'glitch-bus-trim-'));
  const { BusStore } = await import('../src/bus-store.js');
  const store = new BusStore({ dir, segmentBytes: 200 });
  store.loadPartition('t', 0);
  for (let i = 0n; i < 20n; i++) store.append('t', 0, { offset: i, key: null, value: Buffer.alloc(50, 1), headers: {}, timestamp: 0 });
  await store.sync();
  const before = readdirSync(join(dir, 't', '0')).length;
  assert.ok(before > 3, `expected several segments, got ${before}`);
  store.trim('t', 0, 15n);
  const after = readdirSync(join(dir, 't', '0')).sort();
  assert.ok(after.length < before && after.length >= 1);
  store.close();
  const reopened = new BusStore({ dir });
  const loaded = reopened.loadPartition('t', 0);
  assert.equal(loaded.next, 20n);
  assert.ok(loaded.messages.every((m, i, all) => i === 0 || m.offset === all[i - 1]!.offset + 1n), 'contiguous');
  assert.equal(loaded.messages[loaded.messages.length - 1]!.offset, 19n);
  assert.ok(loaded.messages[0]!.offset <= 15n, 'nothing at or after the trim point was deleted');
  reopened.close();
});
