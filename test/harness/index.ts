// The test harness: real Redis, Kafka-protocol broker and ClickHouse, started once per run
// by test/run.ts and reset per test. A test file run on its own starts private ones lazily.
export * from './clickhouse.js';
export * from './docker.js';
export * from './env.js';
export * from './kafka.js';
export * from './redis.js';
