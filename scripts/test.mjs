// `npm test`: install (first run), build, type-check the tests, then test/run.ts.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { build, ensureInstalled, root } from './lib/bootstrap.mjs';

ensureInstalled();
build();
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
const typecheck = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.tests.json'], { cwd: root, stdio: 'inherit' });
if (typecheck.status !== 0) {
  console.error('[glitch] test files do not type-check');
  console.log('Tests: 0 passed, 1 failed');
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--conditions=source', '--import', 'tsx', 'test/run.ts', ...process.argv.slice(2)], {
  cwd: root,
  stdio: 'inherit',
});
process.exit(r.status ?? 1);
