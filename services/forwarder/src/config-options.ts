// The one mapping from the forwarder's environment config (parsed once at a composition
// root) to startForwarder's options, shared by every process that runs a forwarder.
import type { ForwarderConfig } from '@glitch/config';
import type { ForwarderOptions } from './forwarder.js';
import type { StaticKey } from './keys.js';

export function forwarderOptionsFromConfig(config: ForwarderConfig, keys: StaticKey[]): ForwarderOptions {
  return {
    host: config.GLITCH_HOST,
    port: config.GLITCH_PORT,
    adminHost: config.GLITCH_ADMIN_HOST,
    adminPort: config.GLITCH_ADMIN_PORT,
    upstreamUrl: config.GLITCH_UPSTREAM_URL,
    // 0: one per core, or per relay core when recording has CPUs of its own (startForwarder decides).
    threads: config.GLITCH_FORWARDER_THREADS,
    keys,
    bodyLimitBytes: config.GLITCH_BODY_LIMIT_BYTES,
    headerLimitBytes: config.GLITCH_HEADER_LIMIT_BYTES,
    responseCaptureLimitBytes: config.GLITCH_RESPONSE_CAPTURE_LIMIT_BYTES,
    firstByteTimeoutMs: config.GLITCH_FIRST_BYTE_TIMEOUT_MS,
    idleTimeoutMs: config.GLITCH_IDLE_TIMEOUT_MS,
    shutdownGraceMs: config.GLITCH_SHUTDOWN_GRACE_MS,
    upstreamConnections: config.GLITCH_UPSTREAM_CONNECTIONS,
    upstreamClient: config.GLITCH_UPSTREAM_CLIENT,
    recordingPriority: config.GLITCH_RECORDING_PRIORITY,
    recordingCpus: config.GLITCH_RECORDING_CPUS,
  };
}
