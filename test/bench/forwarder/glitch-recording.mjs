// Bench entry: the compiled forwarder started like services/forwarder/src/main.ts (same
// GLITCH_* env), plus a Recorder that only counts. The `+ recorder` rows of the bench use it,
// so they include what capturing costs: body copies, the hand-over from relay threads and the
// completion of every exchange (usage, SSE reassembly) in the main thread.
import { loadKeysFile, startForwarder } from '../../../services/forwarder/dist/index.js';

const env = process.env;
let recorded = 0;
const forwarder = await startForwarder({
  host: env.GLITCH_HOST,
  port: Number(env.GLITCH_PORT),
  adminHost: env.GLITCH_ADMIN_HOST,
  adminPort: Number(env.GLITCH_ADMIN_PORT),
  upstreamUrl: env.GLITCH_UPSTREAM_URL,
  threads: Number(env.GLITCH_FORWARDER_THREADS ?? 1),
  keys: loadKeysFile(env.GLITCH_KEYS_FILE),
  // Equal priorities: under wrk's saturation an idle-priority recording side would fall
  // behind and refuse requests (503 record_backlog_full), and this row measures capture cost.
  recordingPriority: 'normal',
  recorder: {
    record() {
      recorded++;
    },
  },
});
console.log(`glitch forwarder (bench, recording) listening on ${forwarder.url}`);
process.on('SIGTERM', () => {
  void forwarder.stop(2_000).then(() => {
    console.log(`recorded ${recorded} exchanges`);
    process.exit(0);
  });
});
