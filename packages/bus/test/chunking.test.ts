// Record chunking and reassembly (pure): sizes stay under the limit, interleaved sets on one
// partition reassemble in completion order, and incomplete sets are dropped with a reason
// within bounded memory. Plus partitioner parity with kafkajs.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { Partitioners } from 'kafkajs';
import { CHUNK_HEADER, Reassembler, chunkMessages, chunkRecord, partitionFor, type ChunkResult } from '@glitch/bus';
import { RecordChunk, encode } from '@glitch/records';

const ID_A = '0193a1b2-0000-7000-8000-00000000000a';
const ID_B = '0193a1b2-0000-7000-8000-00000000000b';

test('chunkRecord: every encoded chunk fits maxBytes and the data concatenates back', () => {
  const serialized = randomBytes(5 * 1024 * 1024 + 17);
  const max = 900 * 1024;
  const messages = chunkMessages('session-1', serialized, max, ID_A);
  assert.equal(messages.length, Math.ceil(serialized.length / (Math.floor((max - 256) / 4) * 3)));
  assert.ok(messages.length >= 7, `5 MiB at 900 KiB is at least 7 chunks, got ${messages.length}`);
  for (const [i, m] of messages.entries()) {
    assert.ok(m.value.length <= max, `chunk ${i} is ${m.value.length} bytes > ${max}`);
    assert.equal(m.key, 'session-1');
    assert.equal(m.headers?.[CHUNK_HEADER], `${i}/${messages.length}`);
    const c = RecordChunk.parse(JSON.parse(m.value.toString('utf8')));
    assert.deepEqual([c.recordId, c.index, c.count], [ID_A, i, messages.length]);
  }
  const back = Buffer.concat(chunkRecord(serialized, max, ID_A).map((c) => Buffer.from(c.data, 'base64')));
  assert.ok(back.equals(serialized));
  assert.equal(chunkRecord(Buffer.alloc(0), max).length, 1, 'an empty record is one empty chunk');
  assert.throws(() => chunkRecord(serialized, 100), /too small/);
});

function feed(r: Reassembler, pk: string, offset: number, chunk: RecordChunk) {
  return r.accept(pk, BigInt(offset), Buffer.from(encode(RecordChunk, chunk)));
}
// 496-byte messages hold 180 data bytes each.
const chunksOf = (value: Buffer, id: string, max = 496) => chunkRecord(value, max, id);

test('Reassembler: interleaved sets on one partition complete in order, with their first offsets', () => {
  const r = new Reassembler({ maxPendingBytes: 1 << 20, maxOffsetSpan: 100 });
  const a = randomBytes(500);
  const b = randomBytes(400);
  const ca = chunksOf(a, ID_A);
  const cb = chunksOf(b, ID_B);
  assert.equal(ca.length, 3);
  assert.equal(cb.length, 3);
  // a0 b0 a1 b1 a2 b2 at offsets 10..15
  const order = [ca[0]!, cb[0]!, ca[1]!, cb[1]!, ca[2]!, cb[2]!];
  const results: ChunkResult[] = order.slice(0, 4).map((c, i) => feed(r, 'p0', 10 + i, c).result);
  assert.deepEqual(results.map((x) => x.kind), ['pending', 'pending', 'pending', 'pending']);
  assert.equal(r.lowestPending('p0'), 10n, 'nothing from the first pending chunk on may be committed');
  results.push(feed(r, 'p0', 14, order[4]!).result);
  assert.equal(r.lowestPending('p0'), 11n, 'b is still pending from its first chunk');
  results.push(feed(r, 'p0', 15, order[5]!).result);
  const doneA = results[4]!;
  const doneB = results[5]!;
  assert.ok(doneA.kind === 'complete' && doneA.value.equals(a) && doneA.firstOffset === 10n && doneA.count === 3);
  assert.ok(doneB.kind === 'complete' && doneB.value.equals(b) && doneB.firstOffset === 11n);
  assert.equal(r.lowestPending('p0'), undefined);
  assert.equal(r.pendingBytes, 0);
});

test('Reassembler: orphans, gaps, restarts and invalid chunks are reported, never merged', () => {
  const r = new Reassembler({ maxPendingBytes: 1 << 20, maxOffsetSpan: 100 });
  const ca = chunksOf(randomBytes(500), ID_A);
  const orphan = feed(r, 'p', 1, ca[1]!);
  assert.equal(orphan.result.kind, 'drop');
  assert.match((orphan.result as { reason: string }).reason, /chunk 2\/3 of record .* at offset 1 without its first chunk/);

  feed(r, 'p', 2, ca[0]!);
  const gap = feed(r, 'p', 3, ca[2]!);
  assert.equal(gap.result.kind, 'drop');
  assert.equal(gap.dropped.length, 1);
  assert.match(gap.dropped[0]!.reason, /expected chunk 2\/3, got 3\/3 at offset 3/);
  assert.equal(r.lowestPending('p'), undefined);

  feed(r, 'p', 4, ca[0]!);
  const restart = feed(r, 'p', 5, ca[0]!);
  assert.equal(restart.result.kind, 'pending');
  assert.match(restart.dropped[0]!.reason, /new chunk set .* began at offset 5 before the one from offset 4 completed/);
  assert.equal(r.lowestPending('p'), 5n);

  const invalid = r.accept('p', 6n, Buffer.from('{"kind":"chunk"}'));
  assert.equal(invalid.result.kind, 'invalid');
  assert.match((invalid.result as { reason: string }).reason, /bad record chunk/);
});

test('Reassembler: bounded memory — oldest set dropped over budget, stale sets expire by offset span', () => {
  const r = new Reassembler({ maxPendingBytes: 800, maxOffsetSpan: 5 });
  const ca = chunksOf(randomBytes(900), ID_A); // 5 chunks of ≤ 180 bytes (raw)
  const cb = chunksOf(randomBytes(900), ID_B);
  for (let i = 0; i < 4; i++) feed(r, 'p', i, ca[i]!); // 720 bytes pending; one more chunk exceeds 800
  const over = feed(r, 'p', 4, cb[0]!);
  assert.equal(r.pendingBytes, 180);
  assert.equal(over.dropped.length, 1);
  assert.equal(over.dropped[0]!.recordId, ID_A);
  assert.match(over.dropped[0]!.reason, /dropped after 4\/5 chunks: pending chunk sets exceed 800 bytes/);
  assert.equal(r.lowestPending('p'), 4n);

  assert.deepEqual(r.expire('p', 9n), [], 'span 5 not yet exceeded');
  const expired = r.expire('p', 10n);
  assert.equal(expired.length, 1);
  assert.match(expired[0]!.reason, /record .*b incomplete \(1\/5 chunks\) 6 messages after its first chunk at offset 4/);
  assert.equal(r.pendingBytes, 0);
  assert.equal(r.lowestPending('p'), undefined);
});

test('partitionFor matches kafkajs DefaultPartitioner (murmur2) for keyed messages', () => {
  const kafkajs = Partitioners.DefaultPartitioner();
  for (const n of [1, 3, 4, 16]) {
    const partitionMetadata = Array.from({ length: n }, (_, partitionId) => ({ partitionId, leader: 1, partitionErrorCode: 0, replicas: [1], isr: [1] }));
    for (let i = 0; i < 200; i++) {
      const key = i % 2 ? `session-${i}-${randomBytes(i % 7).toString('hex')}` : randomBytes(i % 13);
      const want = kafkajs({ topic: 't', partitionMetadata, message: { key, value: null } });
      assert.equal(partitionFor(typeof key === 'string' ? Buffer.from(key) : key, n, 0), want, `key ${String(key)} over ${n}`);
    }
  }
});
