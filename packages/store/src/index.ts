export * from './client.js';
export * from './database.js';
export * from './inserters.js';
export * from './migrate.js';
export * from './query.js';
export * from './rows.js';
export * from './statements.js';
