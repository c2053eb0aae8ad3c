// `glitch forwarder`: the production edge process. Relays, and publishes every exchange to
// Kafka (spooling to disk while Kafka is unreachable); run as many as traffic needs, with
// `glitch ingest` (services/ingest) consuming behind them.
import { createKafkaBus } from '@glitch/bus';
import { ConfigError, forwarderEnv, loadConfig } from '@glitch/config';
import { createLogger } from '@glitch/log';
import { describeThreads } from '@glitch/forwarder';
import { startRecordingForwarder } from './recording-forwarder.js';

export async function forwarder(env: Readonly<Record<string, string | undefined>>, out: (line: string) => void): Promise<() => Promise<void>> {
  const config = loadConfig(forwarderEnv, env);
  const missing: string[] = [];
  if (!config.GLITCH_KAFKA_BROKERS) missing.push('GLITCH_KAFKA_BROKERS: the forwarder publishes records to Kafka; set host:port[,host:port] (`glitch up` runs without Kafka) (got unset)');
  if (!config.GLITCH_KEYS_FILE) missing.push('GLITCH_KEYS_FILE: a JSON key store {"keys":[{"id","tenantId","secretSha256"}]} (got unset)');
  if (missing.length) throw new ConfigError(missing);
  const logger = createLogger({ name: 'glitch-forwarder', level: config.GLITCH_LOG_LEVEL });
  const bus = createKafkaBus({ brokers: config.GLITCH_KAFKA_BROKERS!, logger });
  const running = await startRecordingForwarder(config, config.GLITCH_KEYS_FILE!, bus, logger);
  out(`Glitch forwarder listening on ${running.forwarder.url} (${describeThreads(running.forwarder)}), relaying to ${config.GLITCH_UPSTREAM_URL}`);
  out(`Recording every exchange to Kafka ${config.GLITCH_KAFKA_BROKERS!.join(',')} (spool: ${config.GLITCH_DATA_DIR}/spool)`);
  out(`Health and metrics: ${running.forwarder.adminUrl}/healthz  ${running.forwarder.adminUrl}/readyz  ${running.forwarder.adminUrl}/metrics`);
  return async () => {
    await running.stop();
    await bus.close();
    const s = running.recorder.stats;
    out(`stopped: ${s.captured} exchanges captured, ${s.published} published, ${s.spooled} spooled, ${s.spool.entries} left in the spool for next start`);
  };
}
