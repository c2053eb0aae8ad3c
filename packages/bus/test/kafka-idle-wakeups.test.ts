// kafkajs 2.2.4 re-checks its request queue every millisecond per broker connection once a
// request has completed, forever, busy or idle (kafkajs#1556, #1704): a recording
// forwarder's main thread woke ~900 times a second doing nothing, and on a VM every wake-up
// costs CPU on the recording core. patches/kafkajs@2.2.4.patch (pnpm patchedDependencies)
// stops the re-check when nothing is pending. This counts the thread's wake-ups directly.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { createKafkaBus } from '@glitch/bus';
import { uniqueName } from '../../../test/harness/env.js';
import { privateKafkaMock } from '../../../test/harness/kafka.js';

/** Times this thread gave up the CPU by itself (slept in epoll, mostly): one per wake-up. */
function voluntarySwitches(): number {
  const m = /^voluntary_ctxt_switches:\s*(\d+)$/m.exec(readFileSync('/proc/thread-self/status', 'utf8'));
  assert.ok(m, 'voluntary_ctxt_switches in /proc/thread-self/status (Linux)');
  return Number(m[1]);
}

test('a connected, idle Kafka producer lets its thread sleep, and publishes again afterwards', async (t) => {
  const mock = await privateKafkaMock();
  const bus = createKafkaBus({ brokers: mock.brokers, lingerMs: 5 });
  t.after(async () => {
    await bus.close();
    await mock.stop();
  });
  const topic = uniqueName('idle');
  await mock.createTopic(topic, 2);
  // Requests completed on the broker connections: with kafkajs unpatched, the loop runs from here.
  for (let i = 0; i < 20; i++) assert.equal((await bus.publish(topic, `session-${i % 3}`, Buffer.from(`record ${i}`))).kind, 'ok');

  const before = voluntarySwitches();
  await new Promise((r) => setTimeout(r, 1_000));
  const wakeups = voluntarySwitches() - before;
  // Unpatched: ~1,000 (one per millisecond). Patched: the 100 ms request-timeout sweep per
  // connection, this timer, and whatever else the runtime does: a few dozen.
  assert.ok(wakeups < 200, `the main thread woke ${wakeups} times in an idle second (kafkajs's 1 ms re-check loop is back?)`);

  // Nothing was left waiting for a re-check that no longer runs.
  const again = await Promise.all(Array.from({ length: 20 }, (_, i) => bus.publish(topic, `session-${i % 3}`, Buffer.from(`after ${i}`))));
  for (const o of again) assert.equal(o.kind, 'ok');
});
