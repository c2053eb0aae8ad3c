// The forwarder's node flags give the recording (main) isolate a small young generation
// and the relay isolates V8's default (thread-priority.ts): checked on real isolates, since
// it rests on how V8 applies a flag set after start.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { FORWARDER_NODE_FLAGS, RECORDING_SEMI_SPACE_MB, RELAY_SEMI_SPACE_MB, relayIsolateFlag } from '../src/thread-priority.js';

const fixture = fileURLToPath(new URL('./fixtures/young-generation.ts', import.meta.url));

function youngGenerations(nodeFlags: readonly string[]): { main: number; relay: number } {
  const out = execFileSync(process.execPath, [...nodeFlags, '--import', 'tsx', fixture], { encoding: 'utf8', timeout: 60_000 });
  return JSON.parse(out) as { main: number; relay: number };
}

test("with the forwarder's flags the recording isolate's young generation is capped and the relay isolates' is V8's default", () => {
  const sizes = youngGenerations(FORWARDER_NODE_FLAGS);
  // A young generation is two semi-spaces.
  assert.deepEqual(sizes, { main: 2 * RECORDING_SEMI_SPACE_MB, relay: 2 * RELAY_SEMI_SPACE_MB });
  // Without the flags both isolates reach V8's default, which RELAY_SEMI_SPACE_MB is meant to match.
  assert.deepEqual(youngGenerations([]), { main: 2 * RELAY_SEMI_SPACE_MB, relay: 2 * RELAY_SEMI_SPACE_MB });
});

test('a young-generation size given by hand is left alone for the relay isolates', () => {
  assert.equal(relayIsolateFlag(['--max-semi-space-size=8']), null);
  assert.equal(relayIsolateFlag([]), null);
  assert.equal(relayIsolateFlag([...FORWARDER_NODE_FLAGS]), `--max-semi-space-size=${RELAY_SEMI_SPACE_MB}`);
});
