// Messages between the main thread and relay worker threads.
import type { CaptureBatch } from './capture-batch.js';
import type { MetricsSnapshot } from './metrics.js';
import type { RefusalCode } from './relay-context.js';
import type { LogLevel } from './relay-log.js';

export type ToWorker =
  | { type: 'metrics'; id: number }
  | { type: 'stop'; graceMs: number }
  /** Admission state; the worker answers `refusal-set` with the same id once applied. */
  | { type: 'refusal'; id: number; refusal: RefusalCode | null };

export type FromWorker =
  /** `tid`: the thread's kernel id (thread-priority.ts), null off Linux. */
  | { type: 'listening'; port: number; tid: number | null }
  | { type: 'listen-failed'; message: string }
  /** The batch's ArrayBuffer arrives transferred, not copied. */
  | { type: 'captures'; batch: CaptureBatch }
  | { type: 'metrics'; id: number; snapshot: MetricsSnapshot }
  | { type: 'log'; level: LogLevel; msg: string; fields?: Record<string, unknown> }
  | { type: 'refusal-set'; id: number }
  | { type: 'stopped' };
