// A git clone of this repository into an empty directory bootstraps itself with nothing
// but Node and npm: pnpm fetched into .tools/, workspace installed, built, type-checked,
// and the test runner working. (The full suite in a clone is what CI runs; here we run one
// small file so the suite does not recurse into itself.)
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = resolve(fileURLToPath(import.meta.url), '..', '..', '..');

test('git clone → npm test bootstraps and runs on a clean checkout', { timeout: 600_000 }, () => {
  const git = spawnSync('git', ['--version'], { encoding: 'utf8' });
  assert.equal(git.status, 0, 'git is required for this test: apt-get install -y git');
  const dir = mkdtempSync(join(tmpdir(), 'glitch-clone-'));
  try {
    const clone = spawnSync('git', ['clone', '--quiet', root, join(dir, 'glitch')], { encoding: 'utf8' });
    assert.equal(clone.status, 0, clone.stderr);
    const checkout = join(dir, 'glitch');
    assert.equal(existsSync(join(checkout, 'node_modules')), false);
    const env = { ...process.env };
    // The clone must not lean on this checkout's harness components or install.
    // Nor on the outer `npm test`'s npm_* variables: a fresh shell has none.
    // Nor NODE_TEST_CONTEXT, which would make the clone's test runner act as this runner's child.
    for (const k of Object.keys(env)) if (k.startsWith('GLITCH_TEST_') || /^npm_/i.test(k) || k === 'NODE_TEST_CONTEXT') delete env[k];
    const run = spawnSync('npm', ['test', '--', 'packages/records/test/records.test.ts'], {
      cwd: checkout,
      env,
      encoding: 'utf8',
      timeout: 540_000,
    });
    const output = `${run.stdout}\n${run.stderr}`;
    assert.equal(run.status, 0, output.slice(-4000));
    assert.ok(existsSync(join(checkout, '.tools', 'node_modules', 'pnpm')), 'pnpm bootstrapped into .tools/');
    const closing = /^Tests: (\d+) passed, (\d+) failed$/m.exec(output);
    assert.ok(closing, `no closing line in:\n${output.slice(-2000)}`);
    assert.ok(Number(closing[1]) > 0);
    assert.equal(closing[2], '0');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
