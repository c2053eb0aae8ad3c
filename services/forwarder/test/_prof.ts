import { startForwarder } from '@glitch/forwarder';
const fwd = await startForwarder({ port: 18787, adminPort: 0, threads: Number(process.env.THREADS ?? 1), upstreamUrl: process.env.UP!, keys: [{ id: 'k', tenantId: 't', secret: 'glitch_sk_bench_0123456789' }], ...(process.env.REC ? { recorder: { record() {} } } : {}) });
console.log('READY', fwd.url);
process.on('SIGINT', () => { void fwd.stop(100).then(() => process.exit(0)); });
