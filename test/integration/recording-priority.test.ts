// Recording priority (GLITCH_RECORDING_PRIORITY, services/forwarder/src/thread-priority.ts):
// with `idle`, a forwarder process whose relay threads are workers keeps them at SCHED_OTHER
// and lowers every other thread (recording, GC helpers, the libuv pool) to SCHED_IDLE; with
// `normal` nothing changes. Either way requests are relayed and every record is published.
// Lowered without node's --single-threaded-gc (V8's GC helpers shared with the relay
// threads), the forwarder logs a warning. Where they run (GLITCH_RECORDING_CPUS,
// services/forwarder/src/cpu-affinity.ts): `auto` keeps the relay threads and every other
// thread on CPUs of their own, a list picks the recording CPUs, `off` moves nothing.
// Runs the forwarder in a child process: lowering threads of the test runner itself would
// slow every other test in it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { formatCpuList } from '@glitch/config';
import { allowedCpus, SCHED_IDLE, SCHED_OTHER, threadPolicy, type RecordingCpus } from '@glitch/forwarder';
import { privateKafkaMock } from '../harness/kafka.js';
import { testKey } from '../support/forwarder.js';
import { reply, startMockUpstream } from '../support/mock-upstream.js';
import { messageBody, pipelineTopics, postMessage, waitFor } from '../support/pipeline.js';
import { startSensorChild, type SensorChild } from '../support/pipeline-sensor.js';
import { threadCpuLists } from '../support/threads.js';

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

test('recording priority and CPUs: idle lowers every thread but the relay threads to SCHED_IDLE, normal leaves them; recording gets CPUs of its own; records flow either way', async (t) => {
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
  const start = async (recordingPriority: 'idle' | 'normal', withoutNodeFlags: string[] = [], placement: { threads: number; recordingCpus?: RecordingCpus } = { threads: 2 }): Promise<SensorChild> => {
    const topics = await pipelineTopics((n, p) => mock.createTopic(n, p));
    const s = await startSensorChild({
      brokers: mock.brokers,
      topic: topics.exchanges,
      upstreamUrl: up.url,
      keys: [key],
      spoolDir: mkdtempSync(join(tmpdir(), 'glitch-prio-')),
      threads: placement.threads,
      ...(placement.recordingCpus !== undefined ? { recordingCpus: placement.recordingCpus } : {}),
      recordingPriority,
      withoutNodeFlags,
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
    assert.doesNotMatch(sensor.output(), /node runs without/, 'no GC warning when node runs with the forwarder\'s flags');
  });

  await t.test('idle, node without --single-threaded-gc: relays and records, and warns', async () => {
    const sensor = await start('idle', ['--single-threaded-gc']);
    await relayAndRecord(sensor, key);
    assert.match(sensor.output(), /node runs without --single-threaded-gc/, `the GC warning is logged; output:\n${sensor.output().slice(-2000)}`);
  });

  await t.test('node without --initial-old-space-size: relays and records, and warns', async () => {
    const sensor = await start('idle', ['--initial-old-space-size']);
    await relayAndRecord(sensor, key);
    assert.match(sensor.output(), /node runs without --initial-old-space-size=64/, `the GC warning is logged; output:\n${sensor.output().slice(-2000)}`);
    assert.doesNotMatch(sensor.output(), /without --single-threaded-gc/);
  });

  const cpus = allowedCpus();
  assert.ok(cpus !== null && cpus.length >= 2, `placing recording and relay threads on CPUs of their own needs 2 CPUs or more; this test process may use ${cpus === null ? 'an unknown set' : formatCpuList(cpus)}`);
  const lastCpu = cpus[cpus.length - 1]!;
  const allCpus = formatCpuList(cpus);

  await t.test('recording CPUs auto: the relay thread on every CPU but the last, every other thread on the last', async () => {
    const sensor = await start('idle', [], { threads: 1, recordingCpus: 'auto' });
    await relayAndRecord(sensor, key);
    const placed = threadCpuLists(sensor.pid);
    assert.equal(sensor.relayThreadIds.length, 1);
    for (const tid of sensor.relayThreadIds) assert.equal(placed.get(tid), formatCpuList(cpus.slice(0, -1)), `relay thread ${tid} stays off the recording CPU`);
    for (const [tid, list] of placed) if (!sensor.relayThreadIds.includes(tid)) assert.equal(list, String(lastCpu), `thread ${tid} records on CPU ${lastCpu} (affinities: ${JSON.stringify([...placed])})`);
  });

  await t.test('recording CPUs as a list: those CPUs record, the relay threads get the rest', async () => {
    const first = cpus[0]!;
    const sensor = await start('idle', [], { threads: 1, recordingCpus: [first] });
    await relayAndRecord(sensor, key);
    const placed = threadCpuLists(sensor.pid);
    for (const tid of sensor.relayThreadIds) assert.equal(placed.get(tid), formatCpuList(cpus.slice(1)), `relay thread ${tid} off CPU ${first}`);
    assert.equal(placed.get(sensor.pid), String(first), `the main thread records on CPU ${first}`);
  });

  await t.test('recording CPUs off: every thread may run on every CPU', async () => {
    const sensor = await start('idle', [], { threads: 1, recordingCpus: 'off' });
    await relayAndRecord(sensor, key);
    for (const [tid, list] of threadCpuLists(sensor.pid)) assert.equal(list, allCpus, `thread ${tid} keeps the process's CPUs`);
  });

  await t.test('normal', async () => {
    const sensor = await start('normal');
    await relayAndRecord(sensor, key);
    const seen = policies(sensor.pid);
    for (const [tid, policy] of seen) assert.equal(policy, SCHED_OTHER, `thread ${tid} keeps SCHED_OTHER`);
  });
});
