// Harness Kafka: real Kafka via testcontainers when a Docker engine answers, otherwise the
// Kafka-protocol mock cluster of librdkafka (infra/local). test/run.ts starts one broker per
// run and passes its address to test processes; each test file creates its own topics.
// Tests that take brokers down start a private mock (privateKafkaMock) instead.
import {
  connectKafkaMockControl,
  startKafkaMock,
  type KafkaMockHandle,
  type KafkaMockOptions,
} from '@glitch/infra-local';
import { Kafka, logLevel } from 'kafkajs';
import { dockerAvailable } from './docker.js';
import { componentUnavailable, onProcessExit } from './env.js';

export type KafkaKind = 'librdkafka-mock' | 'testcontainers';

export interface KafkaEnv {
  kind: KafkaKind;
  /** "host:port" list for kafkajs `brokers`. */
  brokers: string[];
  /** Creates a topic (the mock has no CreateTopics API); rejects if it already exists. */
  createTopic(name: string, partitions: number): Promise<void>;
  /** Human-readable: which broker, which version, where. Tests print it. */
  description: string;
}

/** Real Kafka image for testcontainers; override with GLITCH_TEST_KAFKA_IMAGE. */
const KAFKA_IMAGE = process.env.GLITCH_TEST_KAFKA_IMAGE ?? 'confluentinc/cp-kafka:7.9.0';
const KAFKA_CONTAINER_PORT = 9093; // @testcontainers/kafka's PLAINTEXT listener

interface Started {
  kind: KafkaKind;
  brokers: string[];
  controlAddress?: string;
  description: string;
  createTopic(name: string, partitions: number): Promise<void>;
  stop(): Promise<void>;
}

function log(line: string): void {
  console.log(`[harness] kafka: ${line}`);
}

/**
 * Used by test/run.ts: one broker for the whole run, described to test processes through
 * env. The runner prints `description` ("[harness] kafka: …"), so this does not log it again.
 */
export async function startSharedKafka(): Promise<{ env: Record<string, string>; stop(): Promise<void>; description: string }> {
  const s = await startProvider();
  const env: Record<string, string> = {
    GLITCH_TEST_KAFKA_KIND: s.kind,
    GLITCH_TEST_KAFKA_BROKERS: s.brokers.join(','),
    GLITCH_TEST_KAFKA_DESCRIPTION: s.description,
  };
  if (s.controlAddress) env.GLITCH_TEST_KAFKA_CONTROL = s.controlAddress;
  return { env, stop: () => s.stop(), description: s.description };
}

let cached: Promise<KafkaEnv> | undefined;

/**
 * The run's broker (GLITCH_TEST_KAFKA_* from test/run.ts), or, for a test file run on its
 * own, a private one started on first use and stopped when the process is done.
 */
export function kafka(): Promise<KafkaEnv> {
  cached ??= resolveKafka();
  return cached;
}

/**
 * A mock cluster owned by the calling test process, for tests that take brokers down/up
 * or restart the broker on a fixed port. Always the librdkafka mock: a testcontainers
 * broker cannot be taken down and up while keeping its data in the same way.
 */
export async function privateKafkaMock(opts: KafkaMockOptions = {}): Promise<KafkaMockHandle> {
  const h = await startMock(opts);
  onProcessExit(() => h.stop());
  log(`${mockDescription(h)} (private, pid ${h.pid})`);
  return h;
}

async function resolveKafka(): Promise<KafkaEnv> {
  componentUnavailable('KAFKA');
  const brokersEnv = process.env.GLITCH_TEST_KAFKA_BROKERS;
  if (!brokersEnv) {
    const s = await startProvider();
    onProcessExit(() => s.stop());
    log(`${s.description} (private to this test process)`);
    return { kind: s.kind, brokers: s.brokers, createTopic: s.createTopic, description: s.description };
  }

  const brokers = brokersEnv.split(',').filter((b) => b.length > 0);
  const control = process.env.GLITCH_TEST_KAFKA_CONTROL;
  const kind = process.env.GLITCH_TEST_KAFKA_KIND ?? (control ? 'librdkafka-mock' : 'testcontainers');
  if (kind === 'librdkafka-mock') {
    if (!control) throw new Error('GLITCH_TEST_KAFKA_KIND=librdkafka-mock needs GLITCH_TEST_KAFKA_CONTROL (host:port)');
    const ctl = await connectKafkaMockControl(control);
    const description =
      process.env.GLITCH_TEST_KAFKA_DESCRIPTION ??
      `librdkafka mock cluster (librdkafka ${await ctl.librdkafkaVersion()}) at ${brokers.join(',')}`;
    return { kind, brokers, createTopic: (name, partitions) => ctl.createTopic(name, partitions), description };
  }
  if (kind === 'testcontainers') {
    return {
      kind,
      brokers,
      createTopic: (name, partitions) => adminCreateTopic(brokers, name, partitions),
      description: process.env.GLITCH_TEST_KAFKA_DESCRIPTION ?? `testcontainers Kafka at ${brokers.join(',')}`,
    };
  }
  throw new Error(`GLITCH_TEST_KAFKA_KIND=${kind}: want librdkafka-mock or testcontainers`);
}

/**
 * Picks the broker: testcontainers when a Docker engine answers (socket ping plus
 * testcontainers' own runtime check), else the librdkafka mock.
 * GLITCH_TEST_KAFKA_PROVIDER=mock|testcontainers forces one.
 */
async function startProvider(): Promise<Started> {
  const forced = process.env.GLITCH_TEST_KAFKA_PROVIDER;
  if (forced !== undefined && forced !== 'mock' && forced !== 'testcontainers') {
    throw new Error(`GLITCH_TEST_KAFKA_PROVIDER=${forced}: want mock or testcontainers`);
  }
  if (forced !== 'mock') {
    const docker = await dockerAnswers();
    if (docker.ok) return startTestcontainersKafka();
    if (forced === 'testcontainers') throw new Error(`GLITCH_TEST_KAFKA_PROVIDER=testcontainers but ${docker.reason}`);
  }
  const h = await startMock({});
  const description = mockDescription(h);
  return {
    kind: 'librdkafka-mock',
    brokers: h.brokers,
    controlAddress: h.controlAddress,
    description,
    createTopic: (name, partitions) => h.createTopic(name, partitions),
    stop: () => h.stop(),
  };
}

async function dockerAnswers(): Promise<{ ok: boolean; reason: string }> {
  if (!(await dockerAvailable())) return { ok: false, reason: 'no Docker engine answers (/var/run/docker.sock, DOCKER_HOST)' };
  try {
    const { getContainerRuntimeClient } = await import('testcontainers');
    await withTimeout(getContainerRuntimeClient(), 30_000, 'testcontainers runtime check');
    return { ok: true, reason: '' };
  } catch (e) {
    return { ok: false, reason: `a Docker socket exists but testcontainers' runtime check failed: ${(e as Error).message}` };
  }
}

async function startTestcontainersKafka(): Promise<Started> {
  const { KafkaContainer } = await import('@testcontainers/kafka');
  const container = await new KafkaContainer(KAFKA_IMAGE).withKraft().start();
  const brokers = [`${container.getHost()}:${container.getMappedPort(KAFKA_CONTAINER_PORT)}`];
  const description = `testcontainers Kafka (${KAFKA_IMAGE}, KRaft) at ${brokers.join(',')}`;
  return {
    kind: 'testcontainers',
    brokers,
    description,
    createTopic: (name, partitions) => adminCreateTopic(brokers, name, partitions),
    stop: async () => {
      await container.stop();
    },
  };
}

async function adminCreateTopic(brokers: string[], name: string, partitions: number): Promise<void> {
  const admin = new Kafka({ clientId: 'glitch-harness', brokers, logLevel: logLevel.ERROR }).admin();
  await admin.connect();
  try {
    const created = await admin.createTopics({
      topics: [{ topic: name, numPartitions: partitions, replicationFactor: 1 }],
      waitForLeaders: true,
      timeout: 15_000,
    });
    if (!created) throw new Error(`kafka: topic ${name} already exists`);
  } finally {
    await admin.disconnect();
  }
}

async function startMock(opts: KafkaMockOptions): Promise<KafkaMockHandle> {
  try {
    // librdkafka only logs to the launcher's stderr when something is wrong: show it.
    return await startKafkaMock({ log: (line) => console.error(`[harness] kafka mock: ${line}`), ...opts });
  } catch (e) {
    throw new Error(`[harness] kafka: cannot start the librdkafka mock cluster: ${(e as Error).message}`);
  }
}

function mockDescription(h: KafkaMockHandle): string {
  const n = h.brokers.length;
  return `librdkafka mock cluster (librdkafka ${h.version}) at ${h.bootstrap}${n > 1 ? ` (${n} brokers: ${h.brokers.join(',')})` : ''}`;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
