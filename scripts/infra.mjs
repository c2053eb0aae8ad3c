// `npm run infra:up` / `npm run infra:down`: local Redis + Kafka mock for hand development.
import { spawnSync } from 'node:child_process';
import { build, ensureInstalled, root } from './lib/bootstrap.mjs';

ensureInstalled();
build();
const r = spawnSync(process.execPath, ['--conditions=source', '--import', 'tsx', 'infra/local/src/cli.ts', ...process.argv.slice(2)], { cwd: root, stdio: 'inherit' });
process.exit(r.status ?? 1);
