// Recording backlog admission: when recording falls behind (its backlog of captures reaches
// its bound), the forwarder refuses new requests with 503 record_backlog_full instead of
// relaying requests whose records it would have to drop, and admits again once recording
// caught up. Nothing relayed goes unrecorded.
//
// Recording runs in this process's main thread, which the test recorder blocks on purpose;
// the upstream and the client therefore run in a child process (fixtures/backlog-driver.mjs).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { startForwarder, type StaticKey } from '../src/index.js';
import { rawCapture } from './helpers.js';
import { RecordingQueue } from '../src/recording.js';

const KEY: StaticKey = { id: 'key-1', tenantId: 'tenant-a', secret: 'glitch_sk_test_backlog_0123456789ab' };
const driver = fileURLToPath(new URL('./fixtures/backlog-driver.mjs', import.meta.url));

function busyWait(ms: number): void {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    /* the recording side is slow */
  }
}

interface Response {
  i: number;
  status: number;
  code: string | null;
  retryAfter: string | null;
}


describe('recording backlog', () => {
  it('the queue latches backlogged at the capture bound or half the byte bound, and releases under a quarter', async () => {
    const changes: boolean[] = [];
    let recorded = 0;
    const queue = new RecordingQueue({ record: () => void recorded++ }, () => {}, { maxPendingBytes: 1_000, backlogCaptures: 4 });
    queue.onBacklogChange((b) => changes.push(b));
    queue.accept([rawCapture(1, 10), rawCapture(2, 10), rawCapture(3, 10)]);
    assert.equal(queue.isBacklogged, false, '3 captures of 10 bytes: under both bounds');
    queue.accept([rawCapture(4, 10)]);
    assert.equal(queue.isBacklogged, true, '4 captures: the capture bound');
    await new Promise((r) => setImmediate(r));
    assert.equal(recorded, 4);
    assert.deepEqual(changes, [true, false], 'recorded: released');

    queue.accept([rawCapture(5, 400)]);
    assert.equal(queue.isBacklogged, false, '400 bytes: under half of 1,000');
    queue.accept([rawCapture(6, 100)]);
    assert.equal(queue.isBacklogged, true, '500 bytes: half the byte bound');
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(changes, [true, false, true, false]);
    assert.equal(recorded, 6);
  });


  it('refuses new requests with 503 record_backlog_full while recording is behind, admits again after; every relayed request is recorded', async () => {
    const child = spawn(process.execPath, [driver], { stdio: ['pipe', 'pipe', 'inherit'] });
    const lines = createInterface({ input: child.stdout! });
    const next = (prefix: string): Promise<string> =>
      new Promise((resolve, reject) => {
        const onLine = (l: string): void => {
          if (!l.startsWith(prefix)) return;
          lines.off('line', onLine);
          resolve(l.slice(prefix.length));
        };
        lines.on('line', onLine);
        child.once('exit', (code) => reject(new Error(`backlog driver exited (${code}) before printing ${prefix}`)));
      });
    const upstreamPort = Number(await next('UPSTREAM '));

    const recorded: number[] = [];
    const fwd = await startForwarder({
      port: 0,
      adminPort: 0,
      upstreamUrl: `http://127.0.0.1:${upstreamPort}`,
      keys: [KEY],
      threads: 1, // a worker thread: relaying goes on while this thread records
      recordingLimits: { backlogCaptures: 3 },
      recorder: {
        record(e) {
          // The first record takes 1 s, the next ones 150 ms: captures pile up behind them.
          busyWait(recorded.length === 0 ? 1_000 : 150);
          recorded.push(JSON.parse(Buffer.from(e.requestBody).toString('utf8')).seq as number);
        },
      },
    });
    try {
      const result = next('RESULT ');
      child.stdin!.end(`${fwd.url} ${KEY.secret}\n`);
      const responses = JSON.parse(await result) as Response[];
      const refused = responses.filter((r) => r.status !== 200);
      const admitted = responses.filter((r) => r.status === 200);
      assert.deepEqual(responses.slice(0, 6).map((r) => r.status), [200, 200, 200, 200, 200, 200], 'relaying does not wait for recording');
      assert.ok(refused.length > 0, `some requests were refused while recording was behind: ${JSON.stringify(responses)}`);
      for (const r of refused) assert.deepEqual([r.status, r.code, r.retryAfter], [503, 'record_backlog_full', '2'], JSON.stringify(r));
      assert.equal(responses.at(-1)!.status, 200, 'admitted again once recording caught up');

      const metrics = await (await fetch(`${fwd.adminUrl}/metrics`)).text();
      assert.match(metrics, /^glitch_forwarder_captures_backlog_episodes_total [1-9]/m);
      assert.match(metrics, /^glitch_forwarder_captures_backlogged 0$/m);
      assert.match(metrics, /^glitch_forwarder_captures_dropped_total 0$/m);
      assert.match(metrics, new RegExp(`^glitch_forwarder_errors_total\\{code="record_backlog_full"\\} ${refused.length}$`, 'm'));
      // Every relayed request is recorded, and nothing refused is.
      await fwd.stop(5_000);
      assert.deepEqual([...recorded].sort((a, b) => a - b), admitted.map((r) => r.i).sort((a, b) => a - b));
    } finally {
      await fwd.stop(1_000);
      child.kill();
    }
  });
});
