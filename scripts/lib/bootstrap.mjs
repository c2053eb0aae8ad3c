// Makes a fresh clone runnable with nothing but Node 20 and npm: fetches the pinned
// pnpm into .tools/ (never a global install), installs the workspace when the lockfile
// or any manifest changed, and builds the TypeScript project references.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const rootManifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const pnpmVersion = rootManifest.packageManager.split('@')[1];
const toolsDir = join(root, '.tools');
const localPnpm = join(toolsDir, 'node_modules', 'pnpm', 'bin', 'pnpm.cjs');

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', cwd: root, ...opts });
  if (r.error) throw r.error;
  if (r.status !== 0) {
    console.error(`[glitch] command failed (${r.status}): ${cmd} ${args.join(' ')}`);
    process.exit(r.status ?? 1);
  }
}

function checkNode() {
  const major = Number(process.versions.node.split('.')[0]);
  if (major !== 20) {
    console.error(`[glitch] Node ${process.versions.node} found; Glitch pins Node 20 (see .nvmrc). Continuing, but this is untested.`);
  }
}

/** Returns argv prefix that runs the pinned pnpm. */
export function pnpmCommand() {
  if (!existsSync(localPnpm)) {
    mkdirSync(toolsDir, { recursive: true });
    writeFileSync(join(toolsDir, 'package.json'), '{"private":true}\n');
    console.error(`[glitch] fetching pnpm@${pnpmVersion} from the npm registry into .tools/`);
    // Under `npm test` the environment carries the outer npm's npm_config_* (its prefix among
    // them); drop them so this install lands in .tools/ and nowhere else.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)));
    run('npm', ['install', '--prefix', toolsDir, '--no-audit', '--no-fund', '--loglevel=error', `pnpm@${pnpmVersion}`], { env });
  }
  return [process.execPath, localPnpm];
}

function manifestFingerprint() {
  const h = createHash('sha256');
  const files = ['package.json', 'pnpm-lock.yaml', 'pnpm-workspace.yaml'];
  for (const group of ['packages', 'services']) {
    const dir = join(root, group);
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir).sort()) files.push(join(group, name, 'package.json'));
  }
  files.push('infra/local/package.json', 'test/package.json');
  // Patched dependencies (pnpm-workspace.yaml patchedDependencies): a changed patch reinstalls.
  const patches = join(root, 'patches');
  if (existsSync(patches)) for (const name of readdirSync(patches).sort()) files.push(join('patches', name));
  for (const f of files) {
    const p = join(root, f);
    h.update(f);
    if (existsSync(p)) h.update(readFileSync(p));
  }
  return h.digest('hex');
}

export function ensureInstalled() {
  checkNode();
  const stamp = join(root, 'node_modules', '.glitch-install-stamp');
  const want = manifestFingerprint();
  if (existsSync(stamp) && readFileSync(stamp, 'utf8') === want) return;
  const [node, pnpm] = pnpmCommand();
  const frozen = process.env.CI ? ['--frozen-lockfile'] : [];
  console.error('[glitch] installing workspace dependencies (pnpm install)');
  run(node, [pnpm, 'install', '--reporter=append-only', ...frozen]);
  writeFileSync(stamp, want); // the fingerprint from before install: edits made meanwhile trigger another
}

export function build() {
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  run(process.execPath, [tsc, '-b', 'tsconfig.json']);
}
