// `npm run bench`: install + build like scripts/build.mjs, then run the benches. Not part of
// `npm test`.
// - forwarder (test/bench/forwarder/run.ts; needs Debian nginx and wrk)
// - pipeline  (test/bench/pipeline/run.ts: records/s forwarder → Kafka → ClickHouse, and the
//   forwarder's added latency with recording on vs off)
// - recorder  (test/bench/recorder/run.ts: CPU and garbage per record of each step the
//   recording thread takes, in process)
// `--suite=forwarder|pipeline|recorder` runs one (`npm run bench:pipeline` = `--suite=pipeline`); other
// arguments pass through to it, e.g. `npm run bench -- --suite=forwarder --duration=5 --only=glitch`.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { build, ensureInstalled, root } from './lib/bootstrap.mjs';

const argv = process.argv.slice(2);
const suiteArg = argv.find((a) => a.startsWith('--suite='));
const rest = argv.filter((a) => a !== suiteArg);
const SUITES = ['forwarder', 'pipeline', 'recorder'];
const suites = suiteArg ? [suiteArg.slice('--suite='.length)] : SUITES;
for (const s of suites) {
  if (!SUITES.includes(s)) {
    console.error(`unknown bench suite ${s} (${SUITES.join(', ')})`);
    process.exit(2);
  }
}

ensureInstalled();
build();
let status = 0;
for (const s of suites) {
  console.log(`[bench] suite: ${s}`);
  // --single-threaded-gc: the bench process is the load generator (and mock upstream); V8's
  // parallel GC helpers would otherwise take every core for ~10 ms now and then and stall
  // the target under test, which is not what the bench measures (docs/benchmarks.md).
  const r = spawnSync(process.execPath, ['--single-threaded-gc', '--conditions=source', '--import', 'tsx', join(root, 'test', 'bench', s, 'run.ts'), ...rest], { stdio: 'inherit', cwd: root });
  status ||= r.status ?? 1;
}
process.exit(status);
