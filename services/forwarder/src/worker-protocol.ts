// Messages between the main thread and relay worker threads.
import type { RawCapture } from './capture.js';
import type { MetricsSnapshot } from './metrics.js';
import type { LogLevel } from './relay-log.js';

export type ToWorker =
  | { type: 'metrics'; id: number }
  | { type: 'stop'; graceMs: number }
  /** Admission state; the worker answers `refusing-set` with the same id once applied. */
  | { type: 'refusing'; id: number; refusing: boolean };

export type FromWorker =
  | { type: 'listening'; port: number }
  | { type: 'listen-failed'; message: string }
  /** Body buffers arrive transferred, not copied. */
  | { type: 'captures'; batch: RawCapture[] }
  | { type: 'metrics'; id: number; snapshot: MetricsSnapshot }
  | { type: 'log'; level: LogLevel; msg: string; fields?: Record<string, unknown> }
  | { type: 'refusing-set'; id: number }
  | { type: 'stopped' };
