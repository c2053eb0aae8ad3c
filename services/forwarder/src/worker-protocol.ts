// Messages between the main thread and relay worker threads.
import type { MetricsSnapshot } from './metrics.js';
import type { RefusalCode } from './relay-context.js';
import type { LogLevel } from './relay-log.js';
import type { RelayThreadOptions } from './relay.js';

/** A relay worker's workerData: its relay's options and the ring its captures go through. */
export interface RelayWorkerData extends RelayThreadOptions {
  captureRing: SharedArrayBuffer;
}

export type ToWorker =
  | { type: 'metrics'; id: number }
  | { type: 'stop'; graceMs: number }
  /** Admission state; the worker answers `refusal-set` with the same id once applied. */
  | { type: 'refusal'; id: number; refusal: RefusalCode | null };

export type FromWorker =
  /** `tid`: the thread's kernel id (thread-priority.ts), null off Linux. */
  | { type: 'listening'; port: number; tid: number | null }
  | { type: 'listen-failed'; message: string }
  /** A numbered capture batch that did not go through the ring; its ArrayBuffer arrives moved, not copied. */
  | { type: 'captures'; seq: number; batch: Uint8Array }
  /** Batches are in the ring and its reader was asleep. */
  | { type: 'captures-wake' }
  | { type: 'metrics'; id: number; snapshot: MetricsSnapshot }
  | { type: 'log'; level: LogLevel; msg: string; fields?: Record<string, unknown> }
  | { type: 'refusal-set'; id: number }
  | { type: 'stopped' };
