// `glitch ingest`: a member of the consumer group that writes Kafka's records into
// ClickHouse. Run one or more behind the forwarders; they share the topics' partitions.
import { ConfigError, ingestEnv, loadConfig } from '@glitch/config';
import { startIngest } from '@glitch/ingest';
import { createLogger } from '@glitch/log';
import { clickHouseTarget } from '@glitch/store';
import { join } from 'node:path';
import { startIngestAdmin } from './ingest-admin.js';

export async function ingest(env: Readonly<Record<string, string | undefined>>, out: (line: string) => void): Promise<() => Promise<void>> {
  const config = loadConfig(ingestEnv, env);
  if (!config.GLITCH_KAFKA_BROKERS) {
    throw new ConfigError(['GLITCH_KAFKA_BROKERS: the ingest service reads Kafka; set host:port[,host:port] (`glitch up` runs ingest in-process without Kafka) (got unset)']);
  }
  const logger = createLogger({ name: 'glitch-ingest', level: config.GLITCH_LOG_LEVEL });
  const target = clickHouseTarget(config.GLITCH_CLICKHOUSE_URL, join(config.GLITCH_DATA_DIR, 'clickhouse'));
  const running = await startIngest({
    kafka: { brokers: config.GLITCH_KAFKA_BROKERS },
    clickhouse: { target, database: config.GLITCH_CLICKHOUSE_DATABASE },
    migrate: { ttlDays: config.GLITCH_RETENTION_DAYS },
    groupId: config.GLITCH_INGEST_GROUP,
    batchRows: config.GLITCH_INGEST_BATCH_ROWS,
    batchMs: config.GLITCH_INGEST_BATCH_MS,
    batchBytes: config.GLITCH_INGEST_BATCH_BYTES,
    logger,
  });
  const admin = await startIngestAdmin(running, config.GLITCH_INGEST_ADMIN_HOST, config.GLITCH_INGEST_ADMIN_PORT);
  out(`Glitch ingest: group ${config.GLITCH_INGEST_GROUP} on Kafka ${config.GLITCH_KAFKA_BROKERS.join(',')} → ClickHouse ${target.kind === 'chdb' ? `chDB at ${target.path}` : target.url.replace(/\/\/[^@/]*@/, '//')}`);
  out(`Health and metrics: ${admin.url}/healthz  ${admin.url}/metrics`);
  const report = setInterval(() => {
    const { bus, ...s } = running.stats();
    logger.info({ ...s, commits: bus.commits, chunkSetsDropped: bus.chunkSetsDropped }, 'ingest stats');
  }, 60_000);
  report.unref();
  return async () => {
    clearInterval(report);
    await running.stop();
    await admin.close();
    const s = running.stats();
    out(`stopped: ${s.exchangesInserted} exchanges inserted, ${s.deadLettered} dead-lettered`);
  };
}
