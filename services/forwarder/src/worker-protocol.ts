// Messages between the main thread and relay worker threads.
import type { RawCapture } from './capture.js';
import type { MetricsSnapshot } from './metrics.js';
import type { LogLevel } from './relay-log.js';

export type ToWorker = { type: 'metrics'; id: number } | { type: 'stop'; graceMs: number };

export type FromWorker =
  | { type: 'listening'; port: number }
  | { type: 'listen-failed'; message: string }
  /** Body buffers arrive transferred, not copied. */
  | { type: 'captures'; batch: RawCapture[] }
  | { type: 'metrics'; id: number; snapshot: MetricsSnapshot }
  | { type: 'log'; level: LogLevel; msg: string; fields?: Record<string, unknown> }
  | { type: 'stopped' };

/**
 * ArrayBuffers that may be transferred: only those a body fully owns. Shared ones (Node's
 * small-Buffer pool, the empty body) are copied by postMessage instead.
 */
export function transferList(batch: readonly RawCapture[]): ArrayBuffer[] {
  const out = new Set<ArrayBuffer>();
  for (const c of batch) {
    for (const b of [c.requestBody, c.responseBody]) {
      const ab = b.buffer;
      if (b.byteLength > 0 && b.byteOffset === 0 && ab.byteLength === b.byteLength && ab instanceof ArrayBuffer) out.add(ab);
    }
  }
  return [...out];
}
