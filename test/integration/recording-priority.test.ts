// Recording priority (GLITCH_RECORDING_PRIORITY, services/forwarder/src/thread-priority.ts):
// with `idle`, a forwarder process whose relay threads are workers keeps them at SCHED_OTHER
// and lowers every other thread (recording, GC helpers, the libuv pool) to SCHED_IDLE; with
// `normal` nothing changes. Either way requests are relayed and every record is published.
// Lowered without node's --single-threaded-gc (V8's GC helpers shared with the relay
// threads), the forwarder logs a warning.
// Runs the forwarder in a child process: lowering threads of the test runner itself would
// slow every other test in it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { SCHED_IDLE, SCHED_OTHER, threadPolicy } from '@glitch/forwarder';
import { privateKafkaMock } from '../harness/kafka.js';
import { testKey } from '../support/forwarder.js';
import { reply, startMockUpstream } from '../support/mock-upstream.js';
import { messageBody, pipelineTopics, postMessage, waitFor } from '../support/pipeline.js';
import { startSensorChild, type SensorChild } from '../support/pipeline-sensor.js';

const REQUESTS = 20;

function policies(pid: number): Map<number, number | null> {
  return new Map(readdirSync(`/proc/${pid}/task`).map((t) => [Number(t), threadPolicy(pid, Number(t))]));
}

async function relayAndRecord(sensor: SensorChild, key: { secret: string }): Promise<void> {
  const session = randomUUID();
  for (let i = 0; i < REQUESTS; i++) {
    const r = await postMessage(sensor.url, key, { session, body: messageBody({ tag: `prio-${i}`, seq: i, stream: i % 2 === 0 }) });
    assert.equal(r.status, 200, `request ${i}: ${r.body.toString().slice(0, 200)}`);
  }
  await waitFor(async () => (await sensor.stats()).published >= REQUESTS, 30_000, 'every record published', () => sensor.stats());
  const stats = await sensor.stats();
  assert.equal(stats.published, REQUESTS);
  assert.deepEqual(stats.dropped, {});
}

test('recording priority: idle lowers every thread but the relay threads to SCHED_IDLE; normal leaves them; records flow either way', async (t) => {
  assert.equal(process.platform, 'linux', 'thread priorities are managed on Linux only; this test needs Linux');
  const chrt = spawnSync('chrt', ['--version']);
  assert.ok(!chrt.error, 'chrt not found: install util-linux (apt-get install -y util-linux)');

  const mock = await privateKafkaMock();
  const up = await startMockUpstream({ keepRequests: 0 });
  up.respond = () => reply.message({ content: [{ type: 'text', text: 'ok' }] });
  const key = testKey('tenant-priority');
  const sensors: SensorChild[] = [];
  t.after(async () => {
    await Promise.all(sensors.map((s) => s.stop()));
    await up.close();
    await mock.stop();
  });
  const start = async (recordingPriority: 'idle' | 'normal', singleThreadedGc = true): Promise<SensorChild> => {
    const topics = await pipelineTopics((n, p) => mock.createTopic(n, p));
    const s = await startSensorChild({
      brokers: mock.brokers,
      topic: topics.exchanges,
      upstreamUrl: up.url,
      keys: [key],
      spoolDir: mkdtempSync(join(tmpdir(), 'glitch-prio-')),
      threads: 2,
      recordingPriority,
      singleThreadedGc,
      logLevel: 'warn',
    });
    sensors.push(s);
    return s;
  };

  await t.test('idle', async () => {
    const sensor = await start('idle');
    assert.equal(sensor.relayThreadIds.length, 2, 'two relay threads reported their thread ids');
    await relayAndRecord(sensor, key);
    const seen = policies(sensor.pid);
    for (const tid of sensor.relayThreadIds) assert.equal(seen.get(tid), SCHED_OTHER, `relay thread ${tid} runs at SCHED_OTHER`);
    assert.equal(seen.get(sensor.pid), SCHED_IDLE, 'the main thread (recording) runs at SCHED_IDLE');
    const others = [...seen].filter(([tid]) => !sensor.relayThreadIds.includes(tid));
    assert.ok(others.length >= 2, `the process has more threads than its relays (${seen.size})`);
    for (const [tid, policy] of others) assert.equal(policy, SCHED_IDLE, `non-relay thread ${tid} runs at SCHED_IDLE (policies: ${JSON.stringify([...seen])})`);
    assert.doesNotMatch(sensor.output(), /without --single-threaded-gc/, 'no GC warning when node runs with --single-threaded-gc');
  });

  await t.test('idle, node without --single-threaded-gc: relays and records, and warns', async () => {
    const sensor = await start('idle', false);
    await relayAndRecord(sensor, key);
    assert.match(sensor.output(), /node runs without --single-threaded-gc/, `the GC warning is logged; output:\n${sensor.output().slice(-2000)}`);
  });

  await t.test('normal', async () => {
    const sensor = await start('normal');
    await relayAndRecord(sensor, key);
    const seen = policies(sensor.pid);
    for (const [tid, policy] of seen) assert.equal(policy, SCHED_OTHER, `thread ${tid} keeps SCHED_OTHER`);
  });
});
