export { migrate } from './migrate.js';
export { sql, sqlWith } from './sql.js';
export { ensureLocalKey, type LocalKey } from './local-key.js';
export { up } from './up.js';
export { forwarder } from './forwarder.js';
export { ingest } from './ingest.js';
export { startRecordingForwarder, type RecordingForwarder } from './recording-forwarder.js';
