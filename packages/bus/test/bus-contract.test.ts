// The shared Bus contract against both adapters: the in-memory bus (embedded mode) and
// Kafka through the harness broker (testcontainers Kafka where Docker answers, otherwise
// librdkafka's mock cluster).
import { createKafkaBus, createMemoryBus } from '@glitch/bus';
import { createLogger } from '@glitch/log';
import { kafka } from '../../../test/harness/kafka.js';
import { busContract } from './contract.js';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const logger = createLogger({ name: 'bus-test', level: 'error' });

busContract({
  name: 'in-memory',
  async open() {
    const bus = createMemoryBus({ logger });
    return {
      bus,
      description: 'in-memory bus',
      createTopic: async (name, partitions) => bus.createTopic(name, partitions),
    };
  },
});

busContract({
  name: 'in-memory, persisted to disk',
  async open() {
    const bus = createMemoryBus({ logger, persistDir: mkdtempSync(join(tmpdir(), 'glitch-bus-')) });
    return {
      bus,
      description: 'in-memory bus with partition files',
      createTopic: async (name, partitions) => bus.createTopic(name, partitions),
    };
  },
});

busContract({
  name: 'kafka',
  async open() {
    const env = await kafka();
    const bus = createKafkaBus({
      brokers: env.brokers,
      logger,
      // A short session: the librdkafka mock holds every rejoin for a whole session timeout.
      consumer: { heartbeatIntervalMs: 300, sessionTimeoutMs: 6_000, maxWaitTimeMs: 100 },
    });
    return { bus, description: `broker: ${env.kind} — ${env.description}`, createTopic: env.createTopic };
  },
});
