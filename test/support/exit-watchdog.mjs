// Preloaded into every test file's process (test/run.ts). node's --test-force-exit would end
// a file's process right after its last test, but it can drop verdicts still on their way to
// the parent (nodejs/node#64833), so the run does not use it. Instead, once a file's tests
// are over, a process still held open by a leaked handle is ended after a grace period that
// lets the report drain, and the leak is named.
import { after } from 'node:test';

const GRACE_MS = 5_000;

// Only in the per-file child processes, never in the runner that collects their reports.
if (process.env.NODE_TEST_CONTEXT === 'child-v8') {
  after(() => {
    setTimeout(() => {
      const open = process.getActiveResourcesInfo().filter((r) => r !== 'TTYWrap');
      process.stderr.write(`[test] ${process.argv[1] ?? 'test file'}: still running ${GRACE_MS} ms after its tests ended (open handles, this watchdog's timer included: ${open.join(', ')}); exiting\n`);
      process.exit();
    }, GRACE_MS).unref();
  });
}
