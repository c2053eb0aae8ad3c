// `npm start` / `npm run glitch -- <command>`: bootstrap, build, then the glitch CLI.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { build, ensureInstalled, root } from './lib/bootstrap.mjs';

ensureInstalled();
build();
// --single-threaded-gc as in main.js's shebang: V8's GC helper threads are shared by the
// relay and recording isolates (docs/operations.md, "Threads").
const child = spawn(process.execPath, ['--single-threaded-gc', join(root, 'packages', 'cli', 'dist', 'main.js'), ...process.argv.slice(2)], { stdio: 'inherit' });
// Forward stop signals so `kill <npm start pid>` drains the sensor instead of orphaning it.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => child.kill(signal));
// npm answers SIGTERM by killing its `sh -c` and exiting, and sh does not pass it on: we are
// orphaned (reparented) with the sensor still running. Treat that as a stop request.
const parent = process.ppid;
const orphanWatch = setInterval(() => {
  if (process.ppid !== parent) {
    clearInterval(orphanWatch);
    child.kill('SIGTERM');
  }
}, 200);
orphanWatch.unref();
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
