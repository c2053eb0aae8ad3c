export * from './chunking.js';
export { ConsumerCore, sleep, type BatchResult, type RawMessage } from './consume.js';
export * from './kafka.js';
export * from './memory.js';
export * from './partitioner.js';
export * from './types.js';
