// Kafka through the harness broker (testcontainers Kafka where Docker answers, otherwise
// librdkafka's mock cluster): what the bus adapter relies on — gzip batches, consumer
// groups sharing partitions, committed offsets surviving a consumer restart — plus the
// mock's outage controls (broker down/up, restart on a fixed port).
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { before, test } from 'node:test';
import {
  CompressionTypes,
  Kafka,
  Partitioners,
  logLevel,
  type Consumer,
  type ConsumerConfig,
  type EachMessagePayload,
  type KafkaConfig,
  type logCreator,
  type Producer,
} from 'kafkajs';
import { kafka, privateKafkaMock, type KafkaEnv } from '../harness/kafka.js';
import { uniqueName } from '../harness/env.js';

let env: KafkaEnv;

before(async () => {
  env = await kafka();
  console.log(`[kafka.test] broker: ${env.kind} — ${env.description}`);
});

// kafkajs logs at ERROR level, minus the heartbeat replies that announce a rebalance:
// those are the expected way members learn that the group changed.
const quietLogs: logCreator = () => (entry) => {
  if (/rebalancing/i.test(String(entry.log.error ?? ''))) return;
  console.error(`[kafkajs] ${entry.label} ${entry.namespace} ${JSON.stringify(entry.log)}`);
};

function client(brokers: string[], extra: Partial<KafkaConfig> = {}): Kafka {
  return new Kafka({ clientId: uniqueName('kt'), brokers, logLevel: logLevel.ERROR, logCreator: quietLogs, ...extra });
}

// Short session timeout (6 s is real Kafka's minimum): the mock waits session.timeout - 1 s
// for members to (re)join after a membership change, so this keeps joins around 5 s.
const GROUP_TIMING: Partial<ConsumerConfig> = { sessionTimeout: 6_000, heartbeatInterval: 500, maxWaitTimeInMs: 200 };

function producerOf(k: Kafka, opts: Parameters<Kafka['producer']>[0] = {}): Producer {
  // The mock has no controller, so topics are never auto-created and never idempotent.
  return k.producer({ createPartitioner: Partitioners.DefaultPartitioner, allowAutoTopicCreation: false, ...opts });
}

/** Resolves when `cond()` holds; rejects after `ms` with `what` (bounded: no hanging tests). */
async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface Seen {
  partition: number;
  offset: number;
  value: string;
}

function collector(into: Seen[]): (p: EachMessagePayload) => Promise<void> {
  return async ({ partition, message }) => {
    into.push({ partition, offset: Number(message.offset), value: message.value?.toString() ?? '' });
  };
}

/** `p`, or a rejection after `ms`; the timer is cleared so it never holds the process open. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

test('gzip-compressed batches round-trip and stay compressed on the wire', async (t) => {
  t.diagnostic(`broker: ${env.description}`);
  const topic = uniqueName('gzip');
  await env.createTopic(topic, 1);
  const k = client(env.brokers);
  const producer = producerOf(k);
  const consumer = k.consumer({ groupId: uniqueName('g-gzip'), ...GROUP_TIMING });
  try {
    await producer.connect();
    // Highly compressible: gzip shrinks it by orders of magnitude.
    const big = 'glitch exchange record '.repeat(20_000); // ~460 KB
    const small = Array.from({ length: 20 }, (_, i) => `small-${i}`);
    await producer.send({
      topic,
      compression: CompressionTypes.GZIP,
      messages: [{ key: 'big', value: big, headers: { kind: 'big' } }, ...small.map((v) => ({ key: v, value: v }))],
    });

    // The consumer's Fetch response sizes show what the broker stored and sent back.
    let fetchBytes = 0;
    consumer.on(consumer.events.REQUEST, (e) => {
      if (e.payload.apiName === 'Fetch') fetchBytes += e.payload.size;
    });
    const seen: { key: string; value: string; kind?: string }[] = [];
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        seen.push({
          key: message.key?.toString() ?? '',
          value: message.value?.toString() ?? '',
          kind: message.headers?.kind?.toString(),
        });
      },
    });
    await waitFor(() => seen.length >= 21, 20_000, '21 gzip messages');

    assert.equal(seen.length, 21);
    assert.deepEqual(seen[0], { key: 'big', value: big, kind: 'big' });
    assert.deepEqual(
      seen.slice(1).map((m) => m.value),
      small,
    );
    assert.ok(fetchBytes > 0, 'saw Fetch responses');
    assert.ok(fetchBytes < big.length / 20, `fetched ${fetchBytes} bytes for a ${big.length}-byte value: batch was not gzip-compressed`);
  } finally {
    await consumer.disconnect();
    await producer.disconnect();
  }
});

test('two consumers in one group share the partitions and consume every message exactly once', async (t) => {
  t.diagnostic(`broker: ${env.description}`);
  const topic = uniqueName('group');
  const partitions = 4;
  const groupId = uniqueName('g-share');
  await env.createTopic(topic, partitions);
  const k = client(env.brokers);
  const producer = producerOf(k);
  let crashes = 0;
  const members: { name: string; consumer: Consumer; assignment: number[]; seen: Seen[] }[] = ['a', 'b'].map((name) => ({
    name,
    consumer: k.consumer({ groupId, ...GROUP_TIMING }),
    assignment: [],
    seen: [],
  }));
  try {
    // One after the other: the librdkafka mock answers SyncGroup with INVALID_REQUEST now and
    // then when two members join the same generation at once (a kafkajs consumer crash).
    for (const m of members) {
      m.consumer.on(m.consumer.events.GROUP_JOIN, (e) => {
        m.assignment = [...(e.payload.memberAssignment[topic] ?? [])].sort();
      });
      const start = async () => {
        await m.consumer.connect();
        await m.consumer.subscribe({ topic, fromBeginning: true });
        await m.consumer.run({ eachMessage: collector(m.seen) });
      };
      // The librdkafka mock sometimes answers a rebalance's SyncGroup with INVALID_REQUEST,
      // which kafkajs treats as fatal (it disconnects and does not restart). Start the member
      // again, as @glitch/bus does for its consumers; the group then settles.
      m.consumer.on(m.consumer.events.CRASH, (e) => {
        if (e.payload.restart) return;
        crashes++;
        m.assignment = [];
        setTimeout(() => void start().catch(() => undefined), 1_000);
      });
      await start();
      if (m === members[0]) await waitFor(() => m.assignment.length === partitions, 30_000, 'the first consumer to hold every partition');
    }
    const [a, b] = members as [(typeof members)[0], (typeof members)[0]];
    // Produce only once the group is stable with both members, so no rebalance can
    // legitimately re-deliver anything and "exactly once" is a fair assertion.
    const stable = (): boolean =>
      a.assignment.length > 0 &&
      b.assignment.length > 0 &&
      a.assignment.length + b.assignment.length === partitions &&
      new Set([...a.assignment, ...b.assignment]).size === partitions;
    // Generous: on a loaded 2-core machine a late heartbeat costs the mock a session timeout (6 s) per round.
    await waitFor(stable, 60_000, 'both consumers to hold disjoint partition assignments');
    t.diagnostic(`assignments: a=${a.assignment.join(',')} b=${b.assignment.join(',')}; members restarted after a fatal crash: ${crashes}`);

    await producer.connect();
    const total = 40;
    await producer.send({
      topic,
      messages: Array.from({ length: total }, (_, i) => ({ partition: i % partitions, value: `m${i}` })),
    });
    await waitFor(() => a.seen.length + b.seen.length >= total, 20_000, `${total} messages across the group`);
    await new Promise((r) => setTimeout(r, 1_000)); // let any duplicate show up before judging

    const all = [...a.seen, ...b.seen].map((s) => s.value).sort();
    const expected = Array.from({ length: total }, (_, i) => `m${i}`).sort();
    assert.deepEqual(all, expected, 'every message exactly once across the two consumers');
    assert.ok(a.seen.length > 0 && b.seen.length > 0, `both consumed (a=${a.seen.length}, b=${b.seen.length})`);
    for (const m of members) {
      for (const s of m.seen) assert.ok(m.assignment.includes(s.partition), `${m.name} got partition ${s.partition} outside its assignment`);
    }
  } finally {
    await Promise.allSettled(members.map((m) => m.consumer.disconnect()));
    await producer.disconnect();
  }
});

test('committed offsets survive a consumer restart: no re-delivery of committed messages', async (t) => {
  t.diagnostic(`broker: ${env.description}`);
  const topic = uniqueName('commit');
  const groupId = uniqueName('g-commit');
  await env.createTopic(topic, 1);
  const k = client(env.brokers);
  const producer = producerOf(k);
  const admin = k.admin();
  const total = 10;
  const committedUpTo = 5; // the first consumer commits offsets 0..4 (committed offset 5)
  try {
    await producer.connect();
    await producer.send({ topic, messages: Array.from({ length: total }, (_, i) => ({ value: `m${i}` })) });

    // autoCommit off: only the explicit commits below move the group's offset.
    const first = k.consumer({ groupId, ...GROUP_TIMING });
    let commits = 0;
    await first.connect();
    await first.subscribe({ topic, fromBeginning: true });
    await first.run({
      autoCommit: false,
      eachMessage: async ({ partition, message }) => {
        const offset = Number(message.offset);
        if (offset >= committedUpTo) return; // seen, never committed
        await first.commitOffsets([{ topic, partition, offset: String(offset + 1) }]);
        commits++;
      },
    });
    await waitFor(() => commits === committedUpTo, 20_000, `${committedUpTo} commits`);
    await first.disconnect();

    await admin.connect();
    const [fetched] = await admin.fetchOffsets({ groupId, topics: [topic] });
    assert.equal(fetched?.partitions[0]?.offset, String(committedUpTo), 'group offset as committed');

    // Same group id, fromBeginning: without the commit it would start at 0.
    const second = k.consumer({ groupId, ...GROUP_TIMING });
    const seen: Seen[] = [];
    try {
      await second.connect();
      await second.subscribe({ topic, fromBeginning: true });
      await second.run({ eachMessage: collector(seen) });
      await waitFor(() => seen.length >= total - committedUpTo, 20_000, 'the uncommitted messages');
      await new Promise((r) => setTimeout(r, 1_000)); // any re-delivery would arrive by now
    } finally {
      await second.disconnect();
    }
    assert.deepEqual(
      seen.map((s) => s.offset),
      Array.from({ length: total - committedUpTo }, (_, i) => committedUpTo + i),
      'resumed at the committed offset, nothing committed re-delivered',
    );
    assert.deepEqual(
      seen.map((s) => s.value),
      Array.from({ length: total - committedUpTo }, (_, i) => `m${committedUpTo + i}`),
    );
  } finally {
    await admin.disconnect();
    await producer.disconnect();
  }
});

test('mock broker down: sends fail or wait; after up they succeed and data is kept', async (t) => {
  // A private mock: taking the shared broker down would break other test files.
  const mock = await privateKafkaMock();
  t.diagnostic(`broker: private librdkafka mock ${mock.version} at ${mock.bootstrap}`);
  const topic = uniqueName('outage');
  await mock.createTopic(topic, 1);
  // Connection errors are the point of this test: keep kafkajs quiet.
  const timeouts = { logLevel: logLevel.NOTHING, connectionTimeout: 1_000, requestTimeout: 3_000 };
  const k = client(mock.brokers, timeouts);
  // No retries at either level (client connect, producer send): fails at once while down.
  const strict = producerOf(client(mock.brokers, { ...timeouts, retry: { retries: 0 } }), { retry: { retries: 0 } });
  const patient = producerOf(k, { retry: { initialRetryTime: 100, maxRetryTime: 500, retries: 60 } });
  const consumer = k.consumer({ groupId: uniqueName('g-outage'), ...GROUP_TIMING });
  try {
    await strict.connect();
    await patient.connect();
    await patient.send({ topic, messages: [{ value: 'before' }] });

    await mock.setBrokerDown();
    await assert.rejects(strict.send({ topic, messages: [{ value: 'lost' }] }), 'a send without retries fails while the broker is down');

    let settled = false;
    const during = patient.send({ topic, messages: [{ value: 'during' }] }).finally(() => {
      settled = true;
    });
    await new Promise((r) => setTimeout(r, 1_500));
    assert.equal(settled, false, 'a retrying send is still waiting while the broker is down');

    await mock.setBrokerUp();
    const [meta] = await within(during, 15_000, 'the retried send succeeding after up');
    assert.equal(meta?.errorCode, 0);

    const seen: Seen[] = [];
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({ eachMessage: collector(seen) });
    await waitFor(() => seen.length >= 2, 20_000, 'both messages');
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(
      seen.map((s) => s.value),
      ['before', 'during'],
      'data from before the outage kept; the retried send written once',
    );
  } finally {
    await consumer.disconnect();
    await strict.disconnect();
    await patient.disconnect();
    await mock.stop();
  }
});

test('mock on a fixed port: bootstrap reports it, and a restart keeps the address (data is lost)', async (t) => {
  const port = await freePort();
  let mock = await privateKafkaMock({ port });
  t.diagnostic(`broker: private librdkafka mock ${mock.version} at ${mock.bootstrap}`);
  assert.equal(mock.bootstrap, `127.0.0.1:${port}`);
  assert.equal(mock.port, port);

  const topic = uniqueName('fixed');
  const k = client([`127.0.0.1:${port}`], { logLevel: logLevel.NOTHING, connectionTimeout: 1_000, requestTimeout: 3_000 });
  const producer = producerOf(k, { retry: { initialRetryTime: 100, maxRetryTime: 500, retries: 30 } });
  const admin = k.admin();
  try {
    await mock.createTopic(topic, 1);
    await producer.connect();
    await producer.send({ topic, messages: [{ value: 'one' }, { value: 'two' }] });

    // Stop with live client connections (TIME_WAIT on the port), restart on the same port.
    await mock.stop();
    mock = await privateKafkaMock({ port });
    assert.equal(mock.bootstrap, `127.0.0.1:${port}`, 'restarted mock has the same address');
    await mock.createTopic(topic, 1); // in-memory: the topic is gone after a restart

    // The same producer reconnects to the same address; offsets restart at 0.
    const [meta] = await producer.send({ topic, messages: [{ value: 'three' }] });
    assert.equal(meta?.baseOffset, '0', 'fresh log after restart');
    await admin.connect();
    const [offsets] = await admin.fetchTopicOffsets(topic);
    assert.equal(offsets?.high, '1');
  } finally {
    await admin.disconnect();
    await producer.disconnect();
    await mock.stop();
  }
});
