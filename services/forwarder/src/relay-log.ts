// Logging for code that may run in a worker thread, where the pino logger of the main
// thread is not reachable: a plain function, fed to the logger directly or via a message.
import type { Logger } from '@glitch/log';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type RelayLog = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => void;

export function logTo(logger: Logger): RelayLog {
  return (level, msg, fields) => {
    if (fields) logger[level](fields, msg);
    else logger[level](msg);
  };
}

export const noLog: RelayLog = () => {};
