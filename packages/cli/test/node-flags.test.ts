// The `glitch` command starts node with the forwarder's flags in two places that cannot
// import them: main.js's shebang and (through FORWARDER_NODE_FLAGS) scripts/glitch.mjs.
// The shebang must spell out exactly FORWARDER_NODE_FLAGS.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { FORWARDER_NODE_FLAGS } from '@glitch/forwarder';

const cliRoot = join(dirname(fileURLToPath(import.meta.url)), '..');

test("the glitch command's shebang passes node exactly the forwarder's flags", () => {
  const shebang = readFileSync(join(cliRoot, 'src', 'main.ts'), 'utf8').split('\n')[0]!;
  assert.match(shebang, /^#!\/usr\/bin\/env -S node /);
  assert.deepEqual(shebang.replace(/^#!\/usr\/bin\/env -S node /, '').split(' '), [...FORWARDER_NODE_FLAGS]);
});
