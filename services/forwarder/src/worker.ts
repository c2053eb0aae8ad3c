// Entry point of a relay worker thread: runs one RelayThread and talks to the main thread,
// which owns the Recorder, the admin server and the logger.
import { parentPort, workerData } from 'node:worker_threads';
import { CaptureHandoff } from './capture-handoff.js';
import type { RefusalCode } from './relay-context.js';
import { RelayThread } from './relay.js';
import type { RelayLog } from './relay-log.js';
import { currentThreadId } from './thread-priority.js';
import type { FromWorker, RelayWorkerData, ToWorker } from './worker-protocol.js';

const port = parentPort;
if (port === null) throw new Error('worker.ts must run in a worker thread');

function post(message: FromWorker, transfer: ArrayBuffer[] = []): void {
  port!.postMessage(message, transfer);
}

const log: RelayLog = (level, msg, fields) => {
  try {
    post({ type: 'log', level, msg, ...(fields ? { fields } : {}) });
  } catch {
    // fields that cannot be cloned (functions, sockets): send them as text
    post({ type: 'log', level, msg, fields: { detail: String(fields?.err ?? JSON.stringify(fields)) } });
  }
};

// A bug in one exchange must not take the thread (and its connections) down.
process.on('uncaughtException', (err) => log('error', 'uncaught exception in relay thread', { err }));
process.on('unhandledRejection', (err) => log('error', 'unhandled rejection in relay thread', { err }));

const data = workerData as RelayWorkerData;
// Admission is the main thread's word (spool full, recording backlog) unless this thread's
// own capture ring is full.
let mainRefusal: RefusalCode | null = data.refusal;
let ringBacklogged = false;
const applyRefusal = () => {
  relay.refusal = mainRefusal ?? (ringBacklogged ? 'record_backlog_full' : null);
};
const handoff = new CaptureHandoff(data.captureRing, post, (backlogged) => {
  ringBacklogged = backlogged;
  applyRefusal();
  log(backlogged ? 'warn' : 'info', backlogged ? 'capture ring full: the recording thread is behind; refusing new requests (503 record_backlog_full)' : 'capture ring drained: admitting requests', {});
});
const relay = new RelayThread(data, { captures: (captures) => handoff.hand(captures), log });

port.on('message', (m: ToWorker) => {
  if (m.type === 'metrics') post({ type: 'metrics', id: m.id, snapshot: relay.snapshot() });
  else if (m.type === 'refusal') {
    mainRefusal = m.refusal;
    applyRefusal();
    post({ type: 'refusal-set', id: m.id });
  } else if (m.type === 'stop') {
    void relay.stop(m.graceMs).then(() => {
      handoff.stop();
      post({ type: 'stopped' });
      port.close(); // nothing else keeps the thread alive: it exits
    });
  }
});

relay.listen().then(
  (p) => post({ type: 'listening', port: p, tid: currentThreadId() }),
  (e: unknown) => post({ type: 'listen-failed', message: (e as Error).message }),
);
