// The Anthropic wire as Glitch sees it: its error shape and catalogue, header rules of
// the relay, and SSE parsing + message reassembly for records.
export * from './errors.js';
export * from './headers.js';
export * from './sse.js';
export * from './message.js';
