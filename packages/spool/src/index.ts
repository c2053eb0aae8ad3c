export * from './spool.js';
export * from './frames.js';
