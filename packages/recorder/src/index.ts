export { buildExchangeRecord, requestFacts } from './build-record.js';
export { RecordPublisher, type PublisherOptions, type PublisherStats } from './publisher.js';
