// kafkajs leaves a consumer stopped after an error it does not retry (the librdkafka mock
// sometimes answers SyncGroup with INVALID_REQUEST when members join at once). The Kafka bus
// starts such a consumer again after a back-off, so a process that stays up keeps consuming.
// The crash is made deterministic here: the private mock broker answers the consumer's first
// SyncGroup with INVALID_REQUEST.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createKafkaBus, ok, type BusLogger } from '@glitch/bus';
import { uniqueName } from '../../../test/harness/env.js';
import { privateKafkaMock } from '../../../test/harness/kafka.js';
import { waitFor } from './contract.js';

const SYNC_GROUP = 14; // Kafka API key
const INVALID_REQUEST = 42; // Kafka error code

test('a consumer kafkajs stopped after a non-retriable error is started again, and consumes', async (t) => {
  const mock = await privateKafkaMock();
  const warnings: { msg: string; restart: unknown }[] = [];
  const quiet = () => {};
  const logger: BusLogger = {
    debug: quiet,
    info: quiet,
    error: quiet,
    warn: ((obj: { restart?: unknown }, msg: string) => void warnings.push({ msg, restart: obj.restart })) as unknown as BusLogger['warn'],
  };
  const bus = createKafkaBus({ brokers: mock.brokers, logger, consumer: { heartbeatIntervalMs: 300, sessionTimeoutMs: 6_000, maxWaitTimeMs: 100 } });
  t.after(async () => {
    await bus.close();
    await mock.stop();
  });
  const topic = uniqueName('restart');
  await mock.createTopic(topic, 1);
  for (let i = 0; i < 5; i++) assert.equal((await bus.publish(topic, `k${i}`, Buffer.from(`v${i}`))).kind, 'ok');

  await mock.pushRequestErrors(SYNC_GROUP, [INVALID_REQUEST]);
  const seen: string[] = [];
  const sub = await bus.subscribe({
    groupId: uniqueName('restart-group'),
    topics: [topic],
    fromBeginning: true,
    handler: async (batch) => batch.messages.map((m) => (seen.push(m.value.toString()), ok)),
  });
  t.after(() => sub.stop());

  await waitFor(() => seen.length >= 5, 45_000, 'the restarted consumer to read every message');
  assert.deepEqual(seen.slice(0, 5), ['v0', 'v1', 'v2', 'v3', 'v4']);
  const crash = warnings.find((w) => w.msg === 'kafka consumer crashed');
  assert.ok(crash, `the crash was logged (warnings: ${JSON.stringify(warnings)})`);
  assert.equal(crash.restart, true, 'logged as restarting');
  assert.match(sub.stats().lastError ?? '', /consumer crashed: .*\(restarting\)/);
});
