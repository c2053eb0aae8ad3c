// The Kafka bus compresses produced batches with gzip in line at level 1 (kafkajs's own
// codec runs level 6 on the libuv pool, which made compression the largest single cost of
// recording). What a consumer reads must be exactly what was published, and the batch on
// the wire must be gzip from our codec.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { createKafkaBus, ok } from '@glitch/bus';
import kafkajs from 'kafkajs';
import { uniqueName } from '../../../test/harness/env.js';
import { privateKafkaMock } from '../../../test/harness/kafka.js';
import { waitFor } from './contract.js';

test('a bus installs the in-line gzip codec: level-1 gzip that kafkajs decompresses back to the input', async () => {
  const bus = createKafkaBus({ brokers: ['127.0.0.1:1'] });
  try {
    const codec = kafkajs.CompressionCodecs[kafkajs.CompressionTypes.GZIP]() as { compress(e: { buffer: Buffer }): Promise<Buffer>; decompress(b: Buffer): Promise<Buffer> };
    const input = Buffer.from('{"body":"const x = 1; // Ünïcödé ✓\\n"}'.repeat(500));
    const compressed = await codec.compress({ buffer: input });
    assert.equal(compressed[0], 0x1f, 'gzip magic');
    assert.equal(compressed[1], 0x8b, 'gzip magic');
    // RFC 1952 XFL: 4 = "compressor used fastest algorithm" (zlib writes it for level 1).
    assert.equal(compressed[8], 4, 'level-1 gzip (ours), not kafkajs default level');
    assert.ok(compressed.length < input.length / 10, `compressed ${compressed.length} of ${input.length} bytes`);
    assert.deepEqual(gunzipSync(compressed), input);
    assert.deepEqual(await codec.decompress(compressed), input);
  } finally {
    await bus.close();
  }
});

test('records published through the broker with in-line gzip are consumed byte for byte', async (t) => {
  const mock = await privateKafkaMock();
  const bus = createKafkaBus({ brokers: mock.brokers, consumer: { maxWaitTimeMs: 100 } });
  t.after(async () => {
    await bus.close();
    await mock.stop();
  });
  const topic = uniqueName('gz');
  await mock.createTopic(topic, 2);
  // Compressible and not: text with multi-byte characters, and random bytes.
  const values = Array.from({ length: 40 }, (_, i) =>
    i % 2 === 0 ? Buffer.from(`{"seq":${i},"text":"${'Ünïcödé ✓ '.repeat(2_000)}"}`) : Buffer.from(Array.from({ length: 30_000 }, (_, j) => (j * 7919 + i * 104729) % 251)),
  );
  const outcomes = await Promise.all(values.map((v, i) => bus.publish(topic, `session-${i % 5}`, v)));
  for (const o of outcomes) assert.equal(o.kind, 'ok');

  const got = new Map<string, Buffer>();
  const sub = await bus.subscribe({
    groupId: uniqueName('gz-group'),
    topics: [topic],
    fromBeginning: true,
    handler: async (batch) => {
      for (const m of batch.messages) got.set(`${m.partition}/${m.offset}`, m.value);
      return batch.messages.map(() => ok);
    },
  });
  t.after(() => sub.stop());
  await waitFor(() => got.size >= values.length, 30_000, 'every record consumed');
  const consumed = [...got.values()].map((b) => b.toString('base64')).sort();
  const published = values.map((b) => b.toString('base64')).sort();
  assert.deepEqual(consumed, published);
});
