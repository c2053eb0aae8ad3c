export { startIngest, type Ingest, type IngestOptions, type IngestStats } from './ingest.js';
