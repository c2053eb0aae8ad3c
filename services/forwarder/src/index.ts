// @glitch/forwarder: the uWebSockets.js edge. Relays every request to the Anthropic API
// byte for byte, authenticates tenants, and hands each exchange to a Recorder.
export { KeysFileError, loadKeysFile, staticKeyStore, validateKeys } from './keys.js';
export type { KeyIdentity, KeyStore, StaticKey } from './keys.js';
export type { CapturedExchange, ExchangeTimings, HeaderPair, RawCapture, Recorder, SseCapture } from './capture.js';
export { completeCapture, completeCaptureNow, decodeBody, reassembleSse } from './capture.js';
export { describeThreads, startForwarder } from './forwarder.js';
export { DEFAULT_RESPONSE_CAPTURE_LIMIT_BYTES } from './relay.js';
export type { AdmissionSignal, ForwarderOptions, RunningForwarder } from './forwarder.js';
export type { ScalarMetric } from './metrics.js';
export { forwarderOptionsFromConfig } from './config-options.js';
export { FORWARDER_NODE_FLAGS, SCHED_IDLE, SCHED_OTHER, threadPolicy } from './thread-priority.js';
export type { RecordingPriority } from './thread-priority.js';
export { allowedCpus, planCpus } from './cpu-affinity.js';
export type { RecordingCpus } from '@glitch/config';
