// Composition root of the forwarder process: config from the environment, logger, keys,
// then the relay. SIGTERM/SIGINT stop it gracefully.
import { forwarderEnv, loadConfig } from '@glitch/config';
import { createLogger } from '@glitch/log';
import { forwarderOptionsFromConfig } from './config-options.js';
import { loadKeysFile } from './keys.js';
import { describeThreads, startForwarder } from './forwarder.js';

async function main(): Promise<void> {
  const config = loadConfig(forwarderEnv, process.env);
  const logger = createLogger({ name: 'glitch-forwarder', level: config.GLITCH_LOG_LEVEL });
  // Last line of defence: log and keep serving rather than drop every open stream.
  process.on('uncaughtException', (err) => logger.error({ err }, 'uncaught exception'));
  process.on('unhandledRejection', (err) => logger.error({ err }, 'unhandled rejection'));

  if (!config.GLITCH_KEYS_FILE) throw new Error('GLITCH_KEYS_FILE is required: a JSON file {"keys":[{"id","tenantId","secretSha256"}]}');
  const keys = loadKeysFile(config.GLITCH_KEYS_FILE);
  const options = forwarderOptionsFromConfig(config, keys);
  const forwarder = await startForwarder({ ...options, logger });
  console.log(`glitch forwarder listening on ${forwarder.url} (${describeThreads(forwarder)}) -> ${config.GLITCH_UPSTREAM_URL}`);
  console.log(`admin: ${forwarder.adminUrl}/healthz ${forwarder.adminUrl}/readyz ${forwarder.adminUrl}/metrics`);

  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (++signals > 1) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    logger.info({ signal, graceMs: config.GLITCH_SHUTDOWN_GRACE_MS }, 'shutting down');
    forwarder.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

main().catch((err: unknown) => {
  console.error(`glitch forwarder: ${(err as Error).message ?? String(err)}`);
  process.exit(1);
});
