// `npm test` lands here (after install, build and type-check): starts the shared real
// components once, runs every *.test.ts with node's test runner, stops the components,
// and ends with one plain line `Tests: N passed, N failed` that CI reads.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startSharedClickHouse } from './harness/clickhouse.js';
import { startSharedKafka } from './harness/kafka.js';
import { startSharedRedis } from './harness/redis.js';

const root = resolve(fileURLToPath(import.meta.url), '..', '..');
const SEARCH_DIRS = ['packages', 'services', 'infra', 'test'];
// Files in these folders load the whole machine (CLI processes, 1,000 streams, broker
// outages, memory measurements), so they run one at a time after the rest.
const SERIAL_DIRS = ['test/e2e', 'test/fault'];

function findTests(dir: string, out: string[]): void {
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name === 'dist' || name === 'bench' || name.startsWith('.')) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) findTests(p, out);
    else if (name.endsWith('.test.ts')) out.push(relative(root, p));
  }
}

interface Component {
  name: string;
  start: () => Promise<{ env: Record<string, string>; description: string; stop(): Promise<void> }>;
}

const components: Component[] = [
  { name: 'REDIS', start: startSharedRedis },
  { name: 'KAFKA', start: startSharedKafka },
  { name: 'CLICKHOUSE', start: startSharedClickHouse },
];

async function main(): Promise<number> {
  const filters = process.argv.slice(2);
  const all: string[] = [];
  for (const d of SEARCH_DIRS) findTests(join(root, d), all);
  all.sort();
  const selected = filters.length ? all.filter((f) => filters.some((x) => f.includes(x))) : all;
  if (selected.length === 0) {
    console.error(`no test files match ${filters.join(' ')}`);
    return 1;
  }

  const env: Record<string, string> = {};
  const stops: (() => Promise<void>)[] = [];
  for (const c of components) {
    try {
      const started = await c.start();
      Object.assign(env, started.env);
      stops.push(started.stop);
      console.log(`[harness] ${c.name.toLowerCase()}: ${started.description}`);
    } catch (e) {
      // Not fatal for the run: the tests that need it fail with this message.
      const reason = (e as Error).message;
      env[`GLITCH_TEST_${c.name}_UNAVAILABLE`] = reason;
      console.log(`[harness] ${c.name.toLowerCase()}: UNAVAILABLE — ${reason}`);
    }
  }

  const countsDir = mkdtempSync(join(tmpdir(), 'glitch-test-counts-'));
  const parallel = selected.filter((f) => !SERIAL_DIRS.some((d) => f.startsWith(d + '/')));
  const serial = selected.filter((f) => SERIAL_DIRS.some((d) => f.startsWith(d + '/')));
  let exitCode = 0;
  try {
    if (parallel.length) exitCode |= await runNodeTests(parallel, 2, env, join(countsDir, 'parallel.json'));
    if (serial.length) exitCode |= await runNodeTests(serial, 1, env, join(countsDir, 'serial.json'));
  } finally {
    await Promise.allSettled(stops.map((s) => s()));
  }
  let passed = 0;
  let failed = 0;
  for (const f of ['parallel.json', 'serial.json']) {
    try {
      const c = JSON.parse(readFileSync(join(countsDir, f), 'utf8')) as { passed: number; failed: number };
      passed += c.passed;
      failed += c.failed;
    } catch {
      /* that phase had no files */
    }
  }
  if (exitCode !== 0 && failed === 0) failed = 1; // a crashed runner is a failure even if no test said so
  console.log(`Tests: ${passed} passed, ${failed} failed`);
  return failed > 0 || exitCode !== 0 ? 1 : 0;
}

function runNodeTests(files: string[], concurrency: number, env: Record<string, string>, countsFile: string): Promise<number> {
  const args = [
    '--conditions=source',
    '--import',
    'tsx',
    '--import',
    join(root, 'test', 'support', 'exit-watchdog.mjs'),
    '--test',
    `--test-concurrency=${concurrency}`,
    '--test-timeout=300000',
    '--test-reporter=spec',
    '--test-reporter-destination=stdout',
    `--test-reporter=${join(root, 'test', 'support', 'count-reporter.mjs')}`,
    '--test-reporter-destination=/dev/null',
    ...files,
  ];
  return new Promise((resolvePromise) => {
    const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env, GLITCH_TEST_COUNTS_FILE: countsFile };
    // This runner is the root even when started from inside a test (the fresh-clone test).
    delete childEnv.NODE_TEST_CONTEXT;
    const child = spawn(process.execPath, args, { cwd: root, stdio: 'inherit', env: childEnv });
    child.on('exit', (code, signal) => resolvePromise(code ?? (signal ? 1 : 0)));
  });
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e);
    console.log('Tests: 0 passed, 1 failed');
    process.exit(1);
  },
);
