// The relay thread's capture hand-off: a finished exchange's capture waits up to
// captureHandoffDelayMs and goes over with every capture that finished meanwhile, in the
// order the exchanges finished; a batch that grows to 32 captures or 256 KiB goes at once;
// stopping the thread hands over whatever still waits; 0 hands each over as it finishes.
// The relay runs in this thread with a sink that keeps each batch's request bodies.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { CaptureParts } from '../src/capture-batch.js';
import { startForwarder } from '../src/index.js';
import type { StaticKey } from '../src/keys.js';
import { RelayThread } from '../src/relay.js';
import { eventually, relayThreadOptions, send, startUpstream, type TestUpstream } from './helpers.js';

const KEY: StaticKey = { id: 'key-1', tenantId: 'tenant-a', secret: 'glitch_sk_test_handoff_0123456789' };
const GLITCH = { 'x-glitch-key': KEY.secret! };

interface Relay {
  relay: RelayThread;
  url: string;
  /** Each batch handed over: its captures' request bodies (first 16 bytes), in batch order. */
  batches: string[][];
  post(body: string): Promise<void>;
}

async function startRelay(upstreamUrl: string, delayMs: number): Promise<Relay> {
  const batches: string[][] = [];
  // The parts' buffers are the relay's until this returns: read them here.
  const captures = (parts: readonly CaptureParts[]) => batches.push(parts.map((p) => Buffer.from(p.requestBody.subarray(0, 16)).toString('latin1')));
  const relay = new RelayThread(relayThreadOptions(upstreamUrl, KEY, { captureHandoffDelayMs: delayMs }), { captures, log: () => {} });
  const url = `http://127.0.0.1:${await relay.listen()}/v1/messages`;
  return {
    relay,
    url,
    batches,
    async post(body) {
      const r = await send(url, { method: 'POST', headers: GLITCH, body });
      assert.equal(r.status, 200, r.body.toString());
    },
  };
}

describe('capture hand-off', () => {
  let upstream: TestUpstream;
  before(async () => {
    upstream = await startUpstream();
    upstream.handle((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'));
  });
  after(() => upstream.close());

  it('waits the delay, then hands over the captures that finished meanwhile as one batch, in order', async () => {
    const r = await startRelay(upstream.url, 1_000);
    try {
      for (const body of ['one', 'two', 'three']) await r.post(body);
      // Three loopback exchanges take milliseconds, the delay a second: nothing went yet.
      assert.deepEqual(r.batches, [], 'captures wait for the delay');
      await eventually(() => r.batches.length > 0, 5_000, 'the delayed batch');
      assert.deepEqual(r.batches, [['one', 'two', 'three']]);
    } finally {
      await r.relay.stop(1_000);
    }
  });

  it('hands a batch over at once when it reaches 256 KiB of bodies, and at stop whatever still waits', async () => {
    const r = await startRelay(upstream.url, 1_000);
    let stopped = false;
    try {
      await r.post('small-before');
      const started = Date.now();
      await r.post(`big-${'x'.repeat(300 * 1024)}`);
      // Handed over by the exchange that crossed the bound, not by the 1 s timer.
      await eventually(() => r.batches.length > 0, 900, 'the batch that crossed 256 KiB');
      assert.ok(Date.now() - started < 1_000, 'before the delay elapsed');
      assert.deepEqual(r.batches, [['small-before', 'big-xxxxxxxxxxxx']]);

      await r.post('small-after');
      assert.equal(r.batches.length, 1, 'the next capture waits again');
      await r.relay.stop(1_000);
      stopped = true;
      assert.deepEqual(r.batches, [['small-before', 'big-xxxxxxxxxxxx'], ['small-after']], 'stop handed over the waiting capture');
    } finally {
      if (!stopped) await r.relay.stop(1_000);
    }
  });

  it('hands a batch over at once at 32 captures', async () => {
    const r = await startRelay(upstream.url, 1_000);
    try {
      const bodies = Array.from({ length: 33 }, (_, i) => `n${String(i).padStart(2, '0')}`);
      for (const body of bodies) await r.post(body);
      assert.deepEqual(r.batches, [bodies.slice(0, 32)], 'the 32nd capture sent the batch; the 33rd waits');
    } finally {
      await r.relay.stop(1_000);
    }
    assert.deepEqual(r.batches, [Array.from({ length: 32 }, (_, i) => `n${String(i).padStart(2, '0')}`), ['n32']]);
  });

  it('with a delay of 0, hands each capture over as its exchange finishes', async () => {
    const r = await startRelay(upstream.url, 0);
    try {
      await r.post('first');
      assert.deepEqual(r.batches, [['first']]);
      await r.post('second');
      assert.deepEqual(r.batches, [['first'], ['second']]);
    } finally {
      await r.relay.stop(1_000);
    }
  });

  it('refuses a delay that is not an integer from 0 to 1000 ms', async () => {
    for (const bad of [-1, 1.5, 1_001, Number.NaN]) {
      await assert.rejects(
        startForwarder({ port: 0, adminPort: 0, upstreamUrl: upstream.url, keys: [KEY], captureHandoffDelayMs: bad }),
        /captureHandoffDelayMs must be an integer from 0 to 1000/,
        String(bad),
      );
    }
  });
});
