// Plumbing shared by the harness providers: failures with install hints, cleanup at exit.

/**
 * test/run.ts starts shared components once; when one could not start it sets
 * GLITCH_TEST_<NAME>_UNAVAILABLE to the reason (with the install command). A test asking
 * for that component then fails with that message: never a skip.
 */
export function componentUnavailable(name: string): void {
  const reason = process.env[`GLITCH_TEST_${name}_UNAVAILABLE`];
  if (reason) throw new Error(`${name.toLowerCase()} is not available for tests: ${reason}`);
}

const cleanups: (() => Promise<void> | void)[] = [];
let hooked = false;

/** Runs `fn` once the test file is done (node:test ends the process after all tests). */
export function onProcessExit(fn: () => Promise<void> | void): void {
  cleanups.push(fn);
  if (hooked) return;
  hooked = true;
  // beforeExit fires when the event loop drains: async cleanup still works there.
  process.once('beforeExit', () => {
    const fns = cleanups.splice(0).reverse();
    void Promise.allSettled(fns.map((f) => f()));
  });
}

export function uniqueName(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
}
