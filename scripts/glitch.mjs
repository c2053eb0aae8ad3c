// `npm start` / `npm run glitch -- <command>`: bootstrap, build, then the glitch CLI.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { build, ensureInstalled, root } from './lib/bootstrap.mjs';

ensureInstalled();
build();
// The forwarder's node flags, as in main.js's shebang (services/forwarder/src/thread-priority.ts
// says why each; docs/operations.md, "Threads").
const { FORWARDER_NODE_FLAGS } = await import(pathToFileURL(join(root, 'services', 'forwarder', 'dist', 'thread-priority.js')).href);
const child = spawn(process.execPath, [...FORWARDER_NODE_FLAGS, join(root, 'packages', 'cli', 'dist', 'main.js'), ...process.argv.slice(2)], { stdio: 'inherit' });
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
