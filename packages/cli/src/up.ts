// `glitch up` (what `npm start` runs): the all-in-one sensor. One process: the forwarder,
// the recorder (bus + disk spool), and ingest into ClickHouse. Embedded defaults: an
// in-memory bus persisted under the data dir (a crash loses nothing published) and chDB;
// GLITCH_KAFKA_BROKERS and GLITCH_CLICKHOUSE_URL switch to the real ones.
import { createKafkaBus, createMemoryBus, type Bus } from '@glitch/bus';
import { loadConfig, upEnv } from '@glitch/config';
import { startIngest } from '@glitch/ingest';
import { createLogger } from '@glitch/log';
import { clickHouseTarget, insertedWatermarks, migrate, openDatabase, type ClickHouseClient } from '@glitch/store';
import { TOPICS } from '@glitch/records';
import { join, resolve } from 'node:path';
import { ensureLocalKey } from './local-key.js';
import { describeThreads } from '@glitch/forwarder';
import { startRecordingForwarder } from './recording-forwarder.js';
import { removeSensorFile, writeSensorFile } from './sensor-file.js';
import { startSqlEndpoint } from './sql-endpoint.js';

export async function up(env: Readonly<Record<string, string | undefined>>, out: (line: string) => void): Promise<() => Promise<void>> {
  const config = loadConfig(upEnv, env);
  const dataDir = resolve(config.GLITCH_DATA_DIR);
  const logger = createLogger({ name: 'glitch', level: config.GLITCH_LOG_LEVEL });
  const local = config.GLITCH_KEYS_FILE ? undefined : ensureLocalKey(dataDir);

  const brokers = config.GLITCH_KAFKA_BROKERS;
  const target = clickHouseTarget(config.GLITCH_CLICKHOUSE_URL, join(dataDir, 'clickhouse'));
  const clickhouse = await openDatabase(target, config.GLITCH_CLICKHOUSE_DATABASE, { create: true });
  await migrate(clickhouse, { ttlDays: config.GLITCH_RETENTION_DAYS });
  const bus: Bus = brokers ? createKafkaBus({ brokers, logger }) : createMemoryBus({ logger, persistDir: join(dataDir, 'bus'), firstOffset: await offsetsAfterStored(clickhouse) });
  const ingest = await startIngest({
    bus,
    clickhouse: { client: clickhouse },
    migrate: false,
    groupId: 'glitch-ingest',
    batchRows: config.GLITCH_INGEST_BATCH_ROWS,
    batchMs: config.GLITCH_INGEST_BATCH_MS,
    logger,
  });
  const { forwarder, recorder, stop: stopForwarder } = await startRecordingForwarder(config, config.GLITCH_KEYS_FILE ?? local!.keyFile, bus, logger);
  const sqlEndpoint = await startSqlEndpoint(clickhouse);
  writeSensorFile(dataDir, { pid: process.pid, sqlUrl: sqlEndpoint.url, token: sqlEndpoint.token });

  const where = target.kind === 'chdb' ? `chDB at ${target.path}` : target.url.replace(/\/\/[^@/]*@/, '//');
  out(`Glitch forwarder listening on ${forwarder.url} (${describeThreads(forwarder)}), relaying to ${config.GLITCH_UPSTREAM_URL}`);
  out(`Recording every exchange: ${brokers ? `Kafka ${brokers.join(',')}` : 'in-process bus'} → ClickHouse (${where}, database ${config.GLITCH_CLICKHOUSE_DATABASE})`);
  out(`Health and metrics: ${forwarder.adminUrl}/healthz  ${forwarder.adminUrl}/metrics`);
  out(`Query what was recorded: npm run glitch -- sql "SELECT received_at, route, model, status, input_tokens, output_tokens FROM exchanges ORDER BY received_at DESC LIMIT 10"`);
  out('');
  out('Point Claude Code at it (in the shell where you run `claude`):');
  out(`  export ANTHROPIC_BASE_URL=${forwarder.url}`);
  if (local) {
    out(`  export ANTHROPIC_CUSTOM_HEADERS="X-Glitch-Key: $(cat ${local.secretFile})"`);
    if (local.created) out(`(created a tenant key for this machine in ${local.secretFile})`);
  } else {
    out('  export ANTHROPIC_CUSTOM_HEADERS="X-Glitch-Key: <a key from GLITCH_KEYS_FILE>"');
  }
  out('  claude');

  return async () => {
    // Order matters: stop taking traffic, flush records to the bus (or spool), let ingest
    // write and commit what it has, then close storage.
    await stopForwarder();
    await ingest.stop();
    await sqlEndpoint.close();
    removeSensorFile(dataDir);
    await bus.close();
    await clickhouse.close();
    const s = recorder.stats;
    out(`stopped: ${s.captured} exchanges captured, ${s.published} published, ${s.spooled} spooled, ${s.replayed} replayed, ${s.spool.entries} left in the spool for next start`);
  };
}

/**
 * The in-memory bus restarts its offsets with the process, but ingest remembers offsets in
 * ClickHouse (it skips what it already stored, and dedup tokens are made of offsets). So
 * each log continues after the highest offset stored by earlier runs: offsets never repeat.
 */
async function offsetsAfterStored(client: ClickHouseClient): Promise<(topic: string, partition: number) => bigint> {
  const stored = new Map<string, Map<number, bigint>>([
    [TOPICS.exchanges, await insertedWatermarks(client, 'exchanges', TOPICS.exchanges)],
    [TOPICS.findings, await insertedWatermarks(client, 'findings', TOPICS.findings)],
  ]);
  return (topic, partition) => {
    const last = stored.get(topic)?.get(partition);
    return last === undefined ? 0n : last + 1n;
  };
}
