#!/usr/bin/env node
// Composition root of the ingest service (production: one process per group member).
// Embedded mode runs ingest inside `glitch up` on the in-memory bus instead.
import { ConfigError, ingestEnv, loadConfig } from '@glitch/config';
import { createLogger } from '@glitch/log';
import { clickHouseTarget } from '@glitch/store';
import { join } from 'node:path';
import { startIngest } from './ingest.js';

async function main(): Promise<void> {
  const config = loadConfig(ingestEnv, process.env);
  if (!config.GLITCH_KAFKA_BROKERS) {
    throw new ConfigError(['GLITCH_KAFKA_BROKERS: the ingest service reads Kafka; set host:port[,host:port] (embedded mode runs ingest inside `glitch up`) (got unset)']);
  }
  const logger = createLogger({ name: 'ingest', level: config.GLITCH_LOG_LEVEL });
  const ingest = await startIngest({
    kafka: { brokers: config.GLITCH_KAFKA_BROKERS },
    clickhouse: {
      target: clickHouseTarget(config.GLITCH_CLICKHOUSE_URL, join(config.GLITCH_DATA_DIR, 'clickhouse')),
      database: config.GLITCH_CLICKHOUSE_DATABASE,
    },
    migrate: { ttlDays: config.GLITCH_RETENTION_DAYS },
    groupId: config.GLITCH_INGEST_GROUP,
    batchRows: config.GLITCH_INGEST_BATCH_ROWS,
    batchMs: config.GLITCH_INGEST_BATCH_MS,
    batchBytes: config.GLITCH_INGEST_BATCH_BYTES,
    logger,
  });
  const report = setInterval(() => {
    const { bus, ...s } = ingest.stats();
    logger.info({ ...s, commits: bus.commits, chunkSetsDropped: bus.chunkSetsDropped }, 'ingest stats');
  }, 60_000);
  report.unref();
  await new Promise<void>((resolve) => {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => resolve());
  });
  clearInterval(report);
  await ingest.stop();
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(e instanceof ConfigError ? `${e.message}\n` : `ingest: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  },
);
