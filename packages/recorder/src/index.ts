export { buildExchangeRecord, encodeExchangeRecord, requestFacts, type EncodedRecord } from './build-record.js';
export { RecordPublisher, type PublisherOptions, type PublisherStats } from './publisher.js';
