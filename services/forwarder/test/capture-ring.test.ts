// The capture ring (a SharedArrayBuffer between a relay worker and the main thread) and the
// inbox that reads it: every entry comes out once, in order and byte-equal, across
// wrap-arounds, a full ring, batches that came by message, and a reader that sleeps and is
// woken by the writer. The cross-thread test runs a real worker thread against the poller.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { partsOf, unpackCaptures } from '../src/capture-batch.js';
import { CaptureHandoff } from '../src/capture-handoff.js';
import { CaptureInbox, CapturePoller } from '../src/capture-inbox.js';
import type { FromWorker } from '../src/worker-protocol.js';
import { CaptureRingReader, CaptureRingWriter, createCaptureRing } from '../src/capture-ring.js';
import { payloadFor } from './fixtures/ring-payload.js';
import { rawCapture } from './helpers.js';

const write = (w: CaptureRingWriter, seq: number, payload: Buffer) =>
  w.tryWrite(seq, payload.byteLength, (data, at) => {
    data.set(payload, at);
    return payload.byteLength;
  });

test('one thread: entries come back in order across wrap-arounds; a full ring and an oversized entry are refused', () => {
  const ring = createCaptureRing(1024);
  const writer = new CaptureRingWriter(ring);
  const reader = new CaptureRingReader(ring);
  assert.equal(writer.maxEntryBytes, 1024 / 4 - 8);
  assert.equal(write(writer, 0, Buffer.alloc(writer.maxEntryBytes + 1)), false, 'over a quarter of the ring');
  assert.equal(reader.peek(), null, 'empty');

  const model: { seq: number; payload: Buffer }[] = [];
  let seq = 0;
  let refusedFull = 0;
  for (let round = 0; round < 2_000; round++) {
    // Write a few, read a few: the indices walk round the ring many times, at every alignment.
    for (let k = 0; k < 1 + (round % 4); k++) {
      const payload = payloadFor(seq, 200);
      if (write(writer, seq, payload)) {
        model.push({ seq, payload });
        seq++;
      } else {
        refusedFull++;
        assert.ok(model.length > 0, 'an empty ring takes any entry up to maxEntryBytes');
        break;
      }
    }
    for (let k = 0; k < 1 + ((round * 7) % 3); k++) {
      const entry = reader.peek();
      const expected = model.shift();
      if (expected === undefined) {
        assert.equal(entry, null);
        break;
      }
      assert.ok(entry !== null, `entry ${expected.seq} present`);
      assert.equal(entry.seq, expected.seq);
      assert.ok(entry.payload.equals(expected.payload), `entry ${expected.seq} bytes`);
      reader.advance();
    }
  }
  for (const expected of model) {
    const entry = reader.peek();
    assert.equal(entry?.seq, expected.seq);
    assert.ok(entry.payload.equals(expected.payload));
    reader.advance();
  }
  assert.equal(reader.peek(), null);
  assert.equal(writer.usedBytes(), 0);
  assert.ok(seq > 3_000, `${seq} entries went round`);
  assert.ok(refusedFull > 0, 'the ring filled up at times');
  assert.throws(() => reader.advance(), /without an entry/);
});

test('the inbox delivers in number order whichever way a batch came, and drainFinal skips a batch that never came', () => {
  const ring = createCaptureRing(4096);
  const writer = new CaptureRingWriter(ring);
  const got: string[] = [];
  const inbox = new CaptureInbox(ring, (b) => got.push(Buffer.from(b).toString()));
  write(writer, 0, Buffer.from('a'));
  write(writer, 2, Buffer.from('c')); // 1 goes by message, later
  assert.equal(inbox.drain(), 1);
  assert.deepEqual(got, ['a'], 'c waits for b');
  inbox.received(1, Buffer.from('b'));
  assert.deepEqual(got, ['a', 'b', 'c']);
  inbox.received(4, Buffer.from('e')); // 3 never comes (its thread died)
  write(writer, 5, Buffer.from('f'));
  assert.equal(inbox.drain(), 0);
  assert.equal(inbox.drainFinal(), 1, 'one batch skipped');
  assert.deepEqual(got, ['a', 'b', 'c', 'e', 'f']);
  assert.equal(inbox.messageBatches, 2);
});

test('a worker writes 30,000 entries while the main thread polls: each arrives once, in order, byte-equal; no wake-up is lost', async () => {
  const count = 30_000;
  const maxSize = 3_000;
  const ring = createCaptureRing(64 * 1024); // small: the writer finds it full often
  const poller = new CapturePoller();
  let next = 0;
  const mismatches: string[] = [];
  const inbox = new CaptureInbox(ring, (b) => {
    const expected = payloadFor(next, maxSize);
    if (!Buffer.from(b).equals(expected) && mismatches.length < 5) mismatches.push(`entry ${next}: ${b.byteLength} bytes, expected ${expected.byteLength}`);
    next++;
  });
  poller.add(inbox);
  // Under tsx the worker needs the loader registered before it imports TypeScript.
  const tsx = import.meta.resolve('tsx/esm/api');
  const entry = new URL('./fixtures/ring-writer.ts', import.meta.url).href;
  const worker = new Worker(`import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); });`, {
    eval: true,
    workerData: { ring, count, postEvery: 101, maxSize },
  });
  const done = await new Promise<{ full: number; wakes: number }>((resolve, reject) => {
    worker.on('message', (m: { type: string; seq: number; payload: Uint8Array; full: number; wakes: number }) => {
      if (m.type === 'message') inbox.received(m.seq, m.payload);
      else if (m.type === 'wake') poller.wake();
      else if (m.type === 'done') resolve(m);
    });
    worker.on('error', reject);
  });
  // The writer is done: whatever it wrote last is read within a poll or by its wake-up.
  const deadline = Date.now() + 10_000;
  while (next < count && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  await worker.terminate();
  poller.stop();
  assert.deepEqual(mismatches, []);
  assert.equal(next, count, `all ${count} entries delivered (writer: ring full ${done.full} times, ${done.wakes} wake-ups)`);
  assert.ok(done.full > 0, 'the ring was full at times');
  assert.ok(done.wakes > 0, 'the reader went to sleep and was woken');
  assert.equal(inbox.messageBatches, Math.floor(count / 101));
});


test('the worker side: a full ring turns into messages and a backlog signal, released once the reader drained it; every capture arrives in order', async () => {
  const ring = createCaptureRing(32 * 1024);
  const posted: { message: FromWorker; transfer: number }[] = [];
  const backlog: boolean[] = [];
  const handoff = new CaptureHandoff(ring, (message, transfer = []) => posted.push({ message, transfer: transfer.length }), (b) => backlog.push(b));
  const order: string[] = [];
  const inbox = new CaptureInbox(ring, (batch) => {
    for (const c of unpackCaptures(batch)) order.push(c.exchangeId);
  });
  try {
    // No reader yet: ~3 KB captures fill the 32 KB ring, then go by message.
    for (let i = 0; i < 20; i++) handoff.hand([partsOf(rawCapture(i, 3_000))]);
    handoff.hand([partsOf(rawCapture(20, 20_000))]); // over a quarter of the ring: by message whatever the room
    assert.deepEqual(backlog, [true], 'told once that the ring is full');
    const byMessage = posted.filter((p) => p.message.type === 'captures');
    assert.ok(byMessage.length >= 10, `${byMessage.length} batches by message`);
    assert.ok(byMessage.every((p) => p.transfer === 1), 'their bytes are moved, not copied');
    for (const p of byMessage) if (p.message.type === 'captures') inbox.received(p.message.seq, p.message.batch);
    inbox.drain();
    assert.deepEqual(order, Array.from({ length: 21 }, (_, i) => rawCapture(i, 0).exchangeId), 'ring and messages merged in order');
    const until = Date.now() + 2_000;
    while (backlog.length < 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(backlog, [true, false], 'released once the reader drained the ring');
  } finally {
    handoff.stop();
  }
});
