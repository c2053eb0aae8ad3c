// What an Exchange needs from the relay thread that owns it.
import type { Exchange } from './exchange.js';
import type { KeyStore } from './keys.js';
import type { RelayMetrics } from './metrics.js';
import type { RelayLog } from './relay-log.js';
import type { UpstreamClient } from './upstream.js';

/** Per-thread settings; plain data so it can cross into a worker thread. */
export interface RelaySettings {
  bodyLimitBytes: number;
  headerLimitBytes: number;
  firstByteTimeoutMs: number;
  idleTimeoutMs: number;
  /**
   * Most response body bytes copied into a capture. Past it the body is still relayed in full
   * and counted, but no longer kept: the capture says it was truncated.
   */
  responseCaptureLimitBytes: number;
}

/** Why new requests are refused: the record spool is full, or recording cannot keep up. */
export type RefusalCode = 'record_spool_full' | 'record_backlog_full';

export interface RelayContext {
  readonly opts: RelaySettings;
  readonly keys: KeyStore;
  readonly upstream: UpstreamClient;
  /** Path prefix of the upstream URL ('' for `https://api.anthropic.com`). */
  readonly basePath: string;
  readonly metrics: RelayMetrics;
  readonly inFlight: Set<Exchange>;
  /** Whether exchanges build captures (a Recorder is configured). */
  readonly recording: boolean;
  /** Admission: while set, new authenticated requests are refused (503) with this code. */
  readonly refusal: RefusalCode | null;
  readonly log: RelayLog;
  /** A recorded exchange finished: hand its capture over (soon, with others; its buffers are released after). */
  captured(ex: Exchange): void;
  /** Any exchange finished (shutdown waits on this). */
  exchangeDone(): void;
}
