// The forwarder as it runs in production and inside `glitch up`: the relay, plus the
// recorder that publishes every exchange to the bus and spools to disk while the bus is
// unreachable. One composition, shared by `glitch up` and `glitch forwarder`.
import type { Bus } from '@glitch/bus';
import type { ForwarderConfig } from '@glitch/config';
import { forwarderOptionsFromConfig, loadKeysFile, startForwarder, type RunningForwarder } from '@glitch/forwarder';
import type { Logger } from '@glitch/log';
import { RecordPublisher } from '@glitch/recorder';
import { DiskSpool } from '@glitch/spool';
import { join, resolve } from 'node:path';

export interface RecordingForwarder {
  forwarder: RunningForwarder;
  recorder: RecordPublisher;
  /** Stops taking traffic, then flushes records to the bus (or the spool). */
  stop(): Promise<void>;
}

export async function startRecordingForwarder(config: ForwarderConfig, keysFile: string, bus: Bus, logger: Logger): Promise<RecordingForwarder> {
  const keys = loadKeysFile(keysFile);
  const spool = new DiskSpool({
    dir: join(resolve(config.GLITCH_DATA_DIR), 'spool'),
    maxBytes: config.GLITCH_SPOOL_MAX_BYTES,
    whenFull: config.GLITCH_SPOOL_WHEN_FULL,
    onFull: (info) => logger.error(info, 'record spool is full'),
  });
  const recorder = new RecordPublisher({ bus, spool, logger });
  const options = forwarderOptionsFromConfig(config, keys);
  const forwarder = await startForwarder({ ...options, recorder, logger });
  return {
    forwarder,
    recorder,
    async stop() {
      await forwarder.stop();
      await recorder.close();
    },
  };
}
