// `npm run bench`: install + build like scripts/build.mjs, then run the forwarder bench
// (test/bench/forwarder/run.ts; needs Debian nginx and wrk). Not part of `npm test`.
// Extra arguments pass through, e.g. `npm run bench -- --duration=5 --only=glitch`.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { build, ensureInstalled, root } from './lib/bootstrap.mjs';

ensureInstalled();
build();
const r = spawnSync(process.execPath, ['--conditions=source', '--import', 'tsx', join(root, 'test', 'bench', 'forwarder', 'run.ts'), ...process.argv.slice(2)], { stdio: 'inherit', cwd: root });
process.exit(r.status ?? 1);
