// Faults around the forwarder: clients that vanish, upstreams that are down, hang or reset,
// slowloris, 1,000 concurrent streams, oversized and malformed requests. Most run against
// the forwarder as a child process (services/forwarder/src/main.ts) so the test can watch
// its file descriptors and RSS and see that it survives; the ones that need specific limits
// use startForwarder in-process. Every wait is bounded; nothing is retried.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { request as httpRequest } from 'node:http';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { RunningForwarder } from '@glitch/forwarder';
import { freePort, startChild, startInProcess, testKey, type ChildForwarder } from '../support/forwarder.js';
import { parseRawResponse, rawExchange, send } from '../support/http.js';
import { headerValues, reply, startMockUpstream, type MockUpstream, type ReceivedRequest } from '../support/mock-upstream.js';
import { messageEvents, sse } from '../support/sse.js';

const key = testKey('tenant-fault');
const MB = 1024 * 1024;
let up: MockUpstream;
let child: ChildForwarder;

before(async () => {
  up = await startMockUpstream({ keepRequests: 2_000 });
  child = await startChild({ upstreamUrl: up.url, keys: [key], threads: 1 });
});

after(async () => {
  await child?.stop();
  await up?.close();
});

function streamBody(tag: string): Buffer {
  return Buffer.from(JSON.stringify({ model: 'claude-sonnet-4-6', max_tokens: 64, stream: true, metadata: { user_id: tag }, messages: [{ role: 'user', content: `stream ${tag}` }] }));
}

const authed = (extra: Array<[string, string]> = []): Array<[string, string]> => [['X-Glitch-Key', key.secret], ['content-type', 'application/json'], ...extra];

function tagOf(r: ReceivedRequest): string | undefined {
  try {
    return (JSON.parse(r.body.toString('utf8')) as { metadata?: { user_id?: string } }).metadata?.user_id;
  } catch {
    return undefined;
  }
}

/** Polls `cond` every 50 ms; rejects with `what` and the last observed value after `ms`. */
async function until(cond: () => boolean, ms: number, what: () => string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Runs `total` tasks with at most `concurrency` at once. */
async function pool<T>(total: number, concurrency: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(total);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, total) }, async () => {
      while (next < total) {
        const i = next++;
        out[i] = await task(i);
      }
    }),
  );
  return out;
}

/** One streaming request that reads the first SSE bytes, then destroys its connection. */
function abortedStream(url: string, tag: string): Promise<Awaited<ReturnType<typeof send>>> {
  return send({ url: `${url}/v1/messages?beta=true`, method: 'POST', headers: authed(), body: streamBody(tag), abortAfterBytes: 1, timeoutMs: 10_000 });
}

describe('forwarder faults', () => {
  test('client disappears mid-stream: upstream sees the abort', async () => {
    up.reset();
    // Two events, then upstream stalls: only an abort from the forwarder can end this request.
    up.respond = () => reply.stream(messageEvents({ content: [{ type: 'text', text: 'x'.repeat(400) }] }), { stallAfterEvents: 2 });
    const res = await abortedStream(child.url, 'abort-one');
    assert.equal(res.status, 200);
    assert.ok(!res.complete);
    const got = await up.settled(0, 5_000);
    assert.equal(got.outcome, 'aborted', 'the forwarder must abort the upstream request when its client goes away');
  });

  test('client disappears before upstream answered: upstream sees the abort', async () => {
    up.reset();
    up.respond = () => reply.hang();
    const res = await send({ url: `${child.url}/v1/messages`, method: 'POST', headers: authed(), body: streamBody('abort-early'), timeoutMs: 500 });
    assert.match(String(res.error?.message), /timeout/);
    const got = await up.settled(0, 5_000);
    assert.equal(got.outcome, 'aborted');
  });

  test('1,000 aborted streams: every upstream request aborted, no leaked sockets or fds, RSS bounded', async () => {
    up.reset();
    up.respond = () => reply.stream(messageEvents({ content: [{ type: 'text', text: 'y'.repeat(2_000) }] }), { stallAfterEvents: 3 });
    const CONCURRENCY = 50;
    const run = async (n: number, prefix: string): Promise<void> => {
      const abortedBefore = up.outcomes.aborted;
      const results = await pool(n, CONCURRENCY, (i) => abortedStream(child.url, `${prefix}-${i}`));
      const bad = results.filter((r) => r.status !== 200);
      assert.equal(bad.length, 0, `${bad.length} streams did not start: ${bad.slice(0, 3).map((r) => `${r.status} ${r.error?.message}`).join('; ')}`);
      // Upstream stalls after 3 events: only an abort from the forwarder ends these requests.
      await up.waitFor(() => up.outcomes.aborted - abortedBefore >= n, 15_000, `${n} upstream aborts (saw ${up.outcomes.aborted - abortedBefore}, in flight ${up.inFlight})`);
    };
    // Forwarder fds other than its upstream connections (listeners, client sockets, pipes, files).
    const nonUpstreamFds = (): number => child.openFds() - up.openSockets;
    await run(100, 'warm'); // JIT, pools and buffers reach steady state
    await until(() => up.inFlight === 0, 5_000, () => `in flight ${up.inFlight}`);
    await new Promise((r) => setTimeout(r, 500));
    const base = { fds: nonUpstreamFds(), upstreamSockets: up.openSockets, connections: up.totalConnections, rss: child.rssBytes() };

    const t0 = Date.now();
    await run(1_000, 'leak');
    const elapsed = Date.now() - t0;
    // No upstream connection is left holding a request, and the forwarder's other fds (client
    // sockets) come back to what they were.
    await until(
      () => up.openConnections().every((c) => c.inFlight === 0) && nonUpstreamFds() <= base.fds + 5,
      10_000,
      () => `forwarder non-upstream fds ${nonUpstreamFds()} (baseline ${base.fds}); upstream connections with a request in flight: ${up.openConnections().filter((c) => c.inFlight > 0).length}`,
    );
    // Idle pooled upstream connections may remain: bounded by concurrency, not by the number of aborts.
    assert.ok(up.openSockets <= 2 * CONCURRENCY, `${up.openSockets} upstream connections open after 1,000 aborts at concurrency ${CONCURRENCY} (baseline ${base.upstreamSockets})`);
    const rss = child.rssBytes();
    const growth = rss - base.rss;
    const perAbort = (up.totalConnections - base.connections) / 1_000;
    console.log(
      `[faults] 1,000 aborted streams in ${elapsed} ms; forwarder non-upstream fds ${base.fds}→${nonUpstreamFds()}, open upstream connections ${base.upstreamSockets}→${up.openSockets} (all idle), ` +
        `${perAbort.toFixed(2)} new upstream connections per aborted stream, RSS ${(base.rss / MB).toFixed(1)}→${(rss / MB).toFixed(1)} MiB`,
    );
    // Coarse: V8 grows its heap toward its sizing limit before collecting (measured: RSS plateaus
    // ~30-40 MiB above the warm baseline and stays there through 10,000 aborts). The precise leak
    // check is the in-process heap-after-GC test below.
    assert.ok(growth < 64 * MB, `RSS grew ${(growth / MB).toFixed(1)} MiB over 1,000 aborted streams`);
    assert.ok(child.alive());
  });

  test('upstream resets mid-stream: client connection closed without a clean end, forwarder alive', async () => {
    for (const disconnect of ['rst', 'fin'] as const) {
      up.reset();
      up.script(reply.stream(messageEvents({ content: [{ type: 'text', text: 'partial answer '.repeat(20) }] }), { eventDelayMs: 5, destroyAfterEvents: 4, disconnect }));
      const res = await send({ url: `${child.url}/v1/messages`, method: 'POST', headers: authed(), body: streamBody(`reset-${disconnect}`), timeoutMs: 10_000 });
      const got = await up.settled(0);
      assert.equal(got.outcome, 'destroyed');
      assert.equal(res.status, 200, `${disconnect}: headers were already relayed`);
      assert.equal(res.complete, false, `${disconnect}: a truncated upstream stream must not look complete to the client (no terminating chunk)`);
      assert.ok(got.response.body.subarray(0, res.body.length).equals(res.body), `${disconnect}: what the client got is a prefix of what upstream sent`);
      assert.ok(!res.body.includes('message_stop'));
    }
    assert.ok(child.alive(), 'forwarder process survived');
    up.reset();
    const ok = await send({ url: `${child.url}/v1/messages`, method: 'POST', headers: authed(), body: streamBody('after-reset'), timeoutMs: 10_000 });
    assert.equal(ok.status, 200);
    assert.ok(ok.complete);
    assert.equal((await child.admin('/healthz')).status, 200);
  });

  test('slowloris: headers dribbled byte by byte do not block other clients, and the slow ones are timed out', async () => {
    up.reset();
    const slowRequest = `POST /v1/messages HTTP/1.1\r\nHost: glitch\r\nX-Glitch-Key: ${key.secret}\r\nContent-Type: application/json\r\nX-Padding: ${'p'.repeat(4_000)}\r\n\r\n`;
    const bytes = Array.from(Buffer.from(slowRequest)).map((b) => Buffer.from([b]));
    const slow = Array.from({ length: 50 }, () => rawExchange(child.port, bytes, { pieceDelayMs: 100, timeoutMs: 45_000 }));
    await new Promise((r) => setTimeout(r, 1_000)); // all 50 are connected and dribbling
    const latencies: number[] = [];
    for (let i = 0; i < 20; i++) {
      const res = await send({ url: `${child.url}/v1/messages`, method: 'POST', headers: authed(), body: streamBody(`fast-${i}`), timeoutMs: 5_000 });
      assert.equal(res.status, 200, `fast client ${i}: ${res.error?.message}`);
      assert.ok(res.complete);
      latencies.push(res.doneMs);
    }
    latencies.sort((a, b) => a - b);
    assert.ok(latencies.at(-1)! < 2_000, `fast clients slowed down while 50 slowloris connections were open: max ${latencies.at(-1)!.toFixed(0)} ms`);
    const results = await Promise.all(slow);
    const notClosed = results.filter((r) => !r.closedByServer).length;
    const closeTimes = results.map((r) => r.elapsedMs).sort((a, b) => a - b);
    console.log(`[faults] slowloris: fast p50 ${latencies[10]!.toFixed(1)} ms, max ${latencies.at(-1)!.toFixed(1)} ms; slow connections closed by the forwarder after ${(closeTimes[0]! / 1000).toFixed(1)}–${(closeTimes.at(-1)! / 1000).toFixed(1)} s`);
    assert.equal(notClosed, 0, `${notClosed}/50 slowloris connections were still open after 45 s (the full request would take ${(bytes.length * 0.1).toFixed(0)} s)`);
    for (const r of results) {
      const parsed = parseRawResponse(r.data);
      assert.ok(parsed === null || parsed.status === 408 || parsed.status === 400 || parsed.status === 431, `a timed-out slow client got ${parsed?.status}`);
    }
    assert.equal(up.requests.filter((r) => r.path === '/v1/messages' && !tagOf(r)?.startsWith('fast-')).length, 0, 'no slowloris request reached upstream');
  });

  test('1,000 concurrent streams: all open at once, all complete, byte-exact', async () => {
    up.reset();
    up.resetPeak();
    // Each stream lasts ~6 s upstream (~31 events, 200 ms apart), like a (short) Claude Code turn,
    // and longer than it takes this 2-core box to open all 1,000 (~1.5-3 s), so they must overlap.
    up.respond = (r) => reply.stream(sse().messageStart().text(`answer for ${tagOf(r)} `.repeat(26), 20).messageDelta().messageStop().events, { eventDelayMs: 200 });
    const N = 1_000;
    const t0 = Date.now();
    const results = await Promise.all(Array.from({ length: N }, (_, i) => send({ url: `${child.url}/v1/messages?beta=true`, method: 'POST', headers: authed(), body: streamBody(`c-${i}`), timeoutMs: 60_000 })));
    const elapsed = Date.now() - t0;
    const byTag = new Map(up.requests.map((r) => [tagOf(r), r] as const));
    let exact = 0;
    const problems: string[] = [];
    results.forEach((res, i) => {
      const got = byTag.get(`c-${i}`);
      if (res.status !== 200 || !res.complete) problems.push(`#${i}: ${res.status} complete=${res.complete} ${res.error?.message ?? ''}`);
      else if (!got) problems.push(`#${i}: never reached upstream`);
      else if (!res.body.equals(got.response.body)) problems.push(`#${i}: ${res.body.length} bytes received, upstream sent ${got.response.body.length}`);
      else exact++;
    });
    const ttfb = results.map((r) => r.headersMs ?? Infinity).sort((a, b) => a - b);
    // Time to headers is dominated by this one test process opening 1,000 connections and
    // writing 1,000 requests (it is also the mock upstream) before it reads any answer: the
    // last request reaching upstream bounds it. Queueing in the forwarder would show as
    // upstream peak concurrency below 1,000 instead.
    const lastArrival = Math.max(...up.requests.map((r) => r.receivedAt)) - t0;
    console.log(
      `[faults] 1,000 concurrent streams: ${exact} byte-exact in ${elapsed} ms; upstream peak concurrency ${up.peakInFlight}; ` +
        `last request reached upstream after ${lastArrival} ms; client time to headers p50 ${ttfb[500]!.toFixed(0)} ms, max ${ttfb.at(-1)!.toFixed(0)} ms`,
    );
    assert.equal(exact, N, `${problems.length} streams failed: ${problems.slice(0, 5).join('; ')}`);
    // Concurrent means concurrent: no stream may wait for another to finish before it starts
    // (a stream queued behind a full upstream pool waits a whole turn, minutes in real use).
    assert.equal(up.peakInFlight, N, `upstream saw at most ${up.peakInFlight} of the 1,000 streams at once: the rest queued inside the forwarder (slowest client waited ${ttfb.at(-1)!.toFixed(0)} ms for headers)`);
    assert.ok(child.alive());
  });

  test('malformed JSON to /v1/messages is relayed as is, and upstream 400 comes back', async () => {
    up.reset();
    const bad = Buffer.from('{"model":"claude-sonnet-4-6","messages":[{"role":"user","content":"unterminated');
    const res = await send({ url: `${child.url}/v1/messages`, method: 'POST', headers: authed(), body: bad, timeoutMs: 10_000 });
    const got = await up.settled(0);
    assert.ok(got.body.equals(bad), 'upstream received the malformed bytes exactly');
    assert.equal(res.status, 400);
    assert.ok(res.body.equals(got.response.body), "client received upstream's error bytes exactly");
    assert.equal((JSON.parse(res.body.toString()) as { error: { type: string } }).error.type, 'invalid_request_error');
  });

  test('bodies with invalid UTF-8 are relayed byte-exact both ways', async () => {
    up.reset();
    const reqBody = Buffer.concat([Buffer.from('{"model":"claude-sonnet-4-6","max_tokens":8,"messages":[{"role":"user","content":"'), Buffer.from([0xff, 0xfe, 0xc3, 0x28, 0xe2, 0x82, 0xed, 0xa0, 0x80]), Buffer.from('"}]}')]);
    const respBody = Buffer.concat([Buffer.from('event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"'), Buffer.from([0xc0, 0xaf, 0xf8, 0x88]), Buffer.from('"}}\n\n')]);
    up.script(reply.raw(200, [['content-type', 'text/event-stream; charset=utf-8']], [respBody.subarray(0, 90), respBody.subarray(90)]));
    const res = await send({ url: `${child.url}/v1/messages`, method: 'POST', headers: authed(), body: reqBody, timeoutMs: 10_000 });
    const got = await up.settled(0);
    assert.ok(got.body.equals(reqBody), 'request bytes relayed exactly');
    assert.equal(res.status, 200);
    assert.ok(res.body.equals(respBody), 'response bytes relayed exactly');
  });

  // Who answers what. The forwarder's HTTP/1.1 server is uWebSockets.js v20.30 (the build on
  // npm that runs on this glibc), and its request parser gives the application no hook for
  // a request head it cannot parse:
  //   - garbage request line, unknown HTTP version, header line without a colon, binary junk:
  //     uWS accepts only request lines ending in " HTTP/1.1" and treats anything else as a
  //     head still arriving. No callback runs, nothing is answered; uWS closes the connection
  //     at its fixed 10 s idle timeout (or at once when the buffered head passes its 4 KiB
  //     limit). Measured: closed after ~9-10 s, no answer. A 400 would need a newer uWS (its
  //     parser answers 400/505 itself) or a second parser in front of it on every request.
  //   - non-numeric Content-Length, Content-Length + Transfer-Encoding: uWS closes at once.
  //   - conflicting Content-Lengths, a Transfer-Encoding other than one `chunked`: they parse,
  //     so the forwarder sees them and answers an Anthropic-shaped 400 (malformed_request),
  //     then closes.
  // Either way nothing reaches upstream and the process is unaffected.
  test('bad HTTP is refused (400 or closed), never relayed, and the forwarder stays up', async () => {
    up.reset();
    const cases: Array<[string, string]> = [
      ['garbage request line', 'THIS IS NOT HTTP\r\n\r\n'],
      ['unknown HTTP version', 'GET /v1/models HTTP/9.9\r\nHost: g\r\n\r\n'],
      ['header without colon', `GET /v1/models HTTP/1.1\r\nHost: g\r\nX-Glitch-Key: ${key.secret}\r\nbroken header line\r\n\r\n`],
      ['non-numeric content-length', `POST /v1/messages HTTP/1.1\r\nHost: g\r\nX-Glitch-Key: ${key.secret}\r\nContent-Length: abc\r\n\r\n{}`],
      ['binary junk', '\x00\x01\x02\x03\xff\xfe\r\n\r\n'],
      // RFC 9112 §6.3: conflicting Content-Length values are unrecoverable framing errors.
      ['conflicting content-lengths', `POST /v1/messages HTTP/1.1\r\nHost: g\r\nX-Glitch-Key: ${key.secret}\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\n{}abc`],
      [
        'request smuggling (CL + TE)',
        `POST /v1/messages HTTP/1.1\r\nHost: g\r\nX-Glitch-Key: ${key.secret}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: g\r\nX-Glitch-Key: ${key.secret}\r\n\r\n`,
      ],
    ];
    // All at once, so the file waits for the slowest close, not the sum of them.
    const results = await Promise.all(cases.map(([, bytes]) => rawExchange(child.port, [Buffer.from(bytes, 'latin1')], { timeoutMs: 20_000 })));
    const report = cases.map(([name], i) => `${name}: ${results[i]!.closedByServer ? `closed after ${results[i]!.elapsedMs.toFixed(0)} ms` : 'still open'}, answer ${parseRawResponse(results[i]!.data)?.status ?? 'none'}`);
    console.log(`[faults] bad HTTP: ${report.join('; ')}`);
    cases.forEach(([name], i) => {
      const r = results[i]!;
      const parsed = parseRawResponse(r.data);
      assert.ok(r.closedByServer || parsed?.status === 400, `${name}: connection left open without an answer for 20 s`);
      assert.ok(parsed === null || parsed.status === 400 || parsed.status === 505, `${name}: expected 400/505 or a closed connection, got ${parsed?.status}`);
    });
    assert.deepEqual(
      up.requests.map((r) => `${r.method} ${r.url} content-length=${headerValues(r, 'content-length').join(',')} body=${JSON.stringify(r.body.toString('latin1'))}`),
      [],
      'no malformed request may reach upstream',
    );
    assert.ok(child.alive());
    assert.equal((await child.admin('/healthz')).status, 200);
  });

  // KNOWN LIMITATION, not the behaviour the issue asks for (an answer: relayed with
  // Connection: close semantics, or 400/505). uWS v20.30 parses only HTTP/1.1 request lines
  // (see the comment above the bad-HTTP test): an HTTP/1.0 request never reaches the
  // forwarder's code, so it cannot be answered; uWS closes the connection at its 10 s idle
  // timeout. What this test holds the forwarder to until uWS is upgraded: the request is not
  // relayed, the connection does not stay open, and the process is unaffected. (Claude Code
  // and the SDKs speak HTTP/1.1.)
  test('an HTTP/1.0 request is never relayed and its connection is closed (uWS v20.30 cannot answer it)', async () => {
    up.reset();
    // uWS's idle timer has a 4 s granularity: its 10 s timeout fires after 10-14 s.
    const r = await rawExchange(child.port, [`GET /v1/models HTTP/1.0\r\nHost: g\r\nX-Glitch-Key: ${key.secret}\r\n\r\n`], { timeoutMs: 20_000 });
    const parsed = parseRawResponse(r.data);
    console.log(`[faults] HTTP/1.0: ${r.closedByServer ? `closed after ${r.elapsedMs.toFixed(0)} ms` : 'still open after 20 s'}, answer ${parsed?.status ?? 'none'}`);
    assert.ok(r.closedByServer, 'an HTTP/1.0 connection was left open for 20 s');
    assert.ok(parsed === null || parsed.status === 200 || parsed.status === 400 || parsed.status === 505, `got ${parsed?.status}`);
    assert.equal(up.requests.length, parsed?.status === 200 ? 1 : 0, 'relayed only if answered');
    assert.ok(child.alive());
  });
});

describe('forwarder faults with specific limits (in-process)', () => {
  let fwd: RunningForwarder;
  const LIMIT = 1 * MB;
  before(async () => {
    fwd = await startInProcess({ upstreamUrl: up.url, keys: [key], bodyLimitBytes: LIMIT, firstByteTimeoutMs: 1_000 });
  });
  after(async () => {
    await fwd?.stop();
  });

  test('1,000 aborted streams in-process: heap and buffers after GC stay flat', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    // A mock that keeps almost no history, so its own records do not count as forwarder growth.
    const lean = await startMockUpstream({ keepRequests: 10 });
    const local = await startInProcess({ upstreamUrl: lean.url, keys: [key] });
    try {
      lean.respond = () => reply.stream(messageEvents({ content: [{ type: 'text', text: 'w'.repeat(2_000) }] }), { stallAfterEvents: 3 });
      const measure = async (): Promise<number> => {
        for (let i = 0; i < 3; i++) {
          gc();
          await new Promise((r) => setTimeout(r, 50));
        }
        const m = process.memoryUsage();
        return m.heapUsed + m.arrayBuffers;
      };
      const run = async (n: number): Promise<void> => {
        const before = lean.outcomes.aborted;
        await pool(n, 50, (i) => abortedStream(local.url, `heap-${i}`));
        await lean.waitFor(() => lean.outcomes.aborted - before >= n && lean.inFlight === 0, 15_000, `${n} upstream aborts`);
      };
      await run(500); // warm: JIT, pools, first-use caches
      const base = await measure();
      await run(1_000);
      const after = await measure();
      console.log(`[faults] in-process heap+arrayBuffers after GC: ${(base / MB).toFixed(2)} → ${(after / MB).toFixed(2)} MiB over 1,000 aborted streams`);
      // Measured flat within ±1 MiB; 3 MiB = a leak of 3 KiB per aborted stream.
      assert.ok(after - base < 3 * MB, `heap grew ${((after - base) / MB).toFixed(2)} MiB over 1,000 aborted streams`);
    } finally {
      await local.stop();
      await lean.close();
    }
  });

  test('upstream down: 502 api_error in Anthropic shape, quickly', async () => {
    const deadPort = await freePort();
    const down = await startInProcess({ upstreamUrl: `http://127.0.0.1:${deadPort}`, keys: [key] });
    try {
      for (const stream of [false, true]) {
        const res = await send({ url: `${down.url}/v1/messages`, method: 'POST', headers: authed(), body: stream ? streamBody('down') : Buffer.from('{"model":"m","max_tokens":1,"messages":[]}'), timeoutMs: 10_000 });
        assert.equal(res.status, 502, `stream=${stream}: ${res.status} ${res.body.toString()}`);
        const err = JSON.parse(res.body.toString()) as { type: string; error: { type: string; message: string }; request_id: string };
        assert.equal(err.type, 'error');
        assert.equal(err.error.type, 'api_error');
        assert.equal(typeof err.request_id, 'string');
        assert.ok(res.doneMs < 5_000, `took ${res.doneMs} ms`);
      }
    } finally {
      await down.stop();
    }
  });

  test('upstream never sends a byte: 504 api_error after the first-byte timeout, upstream request aborted', async () => {
    up.reset();
    up.respond = () => reply.hang();
    const res = await send({ url: `${fwd.url}/v1/messages`, method: 'POST', headers: authed(), body: streamBody('hang'), timeoutMs: 15_000 });
    assert.equal(res.status, 504, `${res.status} ${res.error?.message ?? ''} ${res.body.toString()}`);
    assert.equal((JSON.parse(res.body.toString()) as { error: { type: string } }).error.type, 'api_error');
    assert.ok(res.doneMs >= 900 && res.doneMs < 5_000, `504 after ${res.doneMs.toFixed(0)} ms with firstByteTimeoutMs 1000`);
    const got = await up.settled(0, 5_000);
    assert.equal(got.outcome, 'aborted');
  });

  test('oversized body: 413 request_too_large, early, nothing upstream', async () => {
    up.reset();
    // Declared too large: answered from the headers, before the body is sent.
    const declared = await new Promise<{ status: number; body: string; sentBytes: number }>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port: fwd.port, method: 'POST', path: '/v1/messages', headers: { 'X-Glitch-Key': key.secret, 'content-type': 'application/json', 'content-length': String(64 * MB) } });
      let sent = 0;
      req.on('response', (res) => {
        let b = '';
        res.setEncoding('utf8').on('data', (c: string) => (b += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b, sentBytes: sent }));
        res.on('error', () => resolve({ status: res.statusCode ?? 0, body: b, sentBytes: sent }));
      });
      req.on('error', reject);
      req.write(Buffer.alloc(64 * 1024, 0x20));
      sent = 64 * 1024; // then wait: a correct forwarder answers without the remaining 63.9 MiB
      setTimeout(() => reject(new Error('no 413 within 3 s of sending the headers and 64 KiB')), 3_000).unref();
    });
    assert.equal(declared.status, 413);
    assert.equal((JSON.parse(declared.body) as { error: { type: string } }).error.type, 'request_too_large');

    // Chunked, no length: refused once the limit is crossed, long before the 8 MiB are sent.
    const piece = Buffer.alloc(256 * 1024, 0x61);
    const chunked = await new Promise<{ status: number; sentWhenAnswered: number }>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port: fwd.port, method: 'POST', path: '/v1/messages', headers: { 'X-Glitch-Key': key.secret, 'content-type': 'application/json', 'transfer-encoding': 'chunked' } });
      let sent = 0;
      let answered = false;
      const timer = setInterval(() => {
        if (answered || sent >= 8 * MB) return clearInterval(timer);
        req.write(piece);
        sent += piece.length;
      }, 10);
      req.on('response', (res) => {
        answered = true;
        clearInterval(timer);
        res.resume();
        resolve({ status: res.statusCode ?? 0, sentWhenAnswered: sent });
      });
      req.on('error', (e) => (answered ? undefined : reject(e)));
      setTimeout(() => reject(new Error('no answer to an 8 MiB chunked body within 10 s')), 10_000).unref();
    });
    assert.equal(chunked.status, 413);
    assert.ok(chunked.sentWhenAnswered < 4 * MB, `413 only after ${(chunked.sentWhenAnswered / MB).toFixed(2)} MiB of a 1 MiB limit`);
    assert.equal(up.requests.filter((r) => r.body.length > LIMIT).length, 0, 'no oversized body reached upstream');

    // Just under the limit is fine.
    const under = Buffer.from(JSON.stringify({ model: 'claude-sonnet-4-6', max_tokens: 8, messages: [{ role: 'user', content: 'z'.repeat(LIMIT - 200) }] }));
    assert.ok(under.length < LIMIT);
    const ok = await send({ url: `${fwd.url}/v1/messages`, method: 'POST', headers: authed(), body: under, timeoutMs: 10_000 });
    assert.equal(ok.status, 200);
    assert.equal(up.requests.at(-1)?.body.length, under.length);
  });
});

