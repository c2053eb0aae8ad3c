// Admission (the record spool's `refuse` policy), the upstream connection cap and the idle
// keep-alive of pooled upstream connections, on real sockets against a node:http upstream.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { startForwarder, type AdmissionSignal, type RunningForwarder, type StaticKey } from '../src/index.js';
import { eventually, send, sleep, startUpstream, type TestUpstream } from './helpers.js';

const KEY: StaticKey = { id: 'key-1', tenantId: 'tenant-a', secret: 'glitch_sk_test_admission_0123456789' };
const GLITCH = { 'x-glitch-key': KEY.secret! };

function errorOf(body: Buffer): { type: string; error: { type: string; message: string }; request_id: string } {
  return JSON.parse(body.toString('utf8'));
}

/** A settable AdmissionSignal, like the record spool's. */
function spoolSignal(initial: boolean): AdmissionSignal & { set(v: boolean): void; listeners: number } {
  let refusing = initial;
  const cbs = new Set<(r: boolean) => void>();
  return {
    isRefusing: () => refusing,
    onChange(cb) {
      cbs.add(cb);
      return () => cbs.delete(cb);
    },
    set(v) {
      refusing = v;
      for (const cb of cbs) cb(v);
    },
    get listeners() {
      return cbs.size;
    },
  };
}

/** Sends raw bytes on a new connection; resolves with what came back when the server closes (or after ms). */
function raw(port: number, bytes: string, ms = 3_000): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const sock = connect(port, '127.0.0.1', () => sock.write(Buffer.from(bytes, 'latin1')));
    let text = '';
    const t = setTimeout(() => {
      sock.destroy();
      resolve({ text, closed: false });
    }, ms);
    sock.on('data', (d: Buffer) => (text += d.toString('latin1')));
    sock.on('error', () => {});
    sock.on('close', () => {
      clearTimeout(t);
      resolve({ text, closed: true });
    });
  });
}

describe('admission: refuse while the record spool is full', () => {
  let up: TestUpstream;
  before(async () => {
    up = await startUpstream();
    up.handle((req, res) => {
      if (req.method === 'HEAD') res.writeHead(200, { 'content-length': '0' }).end();
      else res.end('{"ok":true}');
    });
  });
  after(() => up.close());

  it('setRefusing(true): authenticated requests get 503 overloaded_error without reaching upstream; false admits again', async () => {
    const recorded: string[] = [];
    const fwd = await startForwarder({ port: 0, adminPort: 0, upstreamUrl: up.url, keys: [KEY], recorder: { record: (e) => recorded.push(e.path) } });
    try {
      assert.equal(fwd.isRefusing(), false);
      await fwd.setRefusing(true);
      assert.equal(fwd.isRefusing(), true);
      const before = up.seen.length;
      for (const path of ['/v1/messages?beta=true', '/v1/messages/count_tokens', '/v1/models']) {
        const r = await send(`${fwd.url}${path}`, path === '/v1/models' ? { headers: GLITCH } : { headers: GLITCH, body: '{"model":"m"}' });
        assert.equal(r.status, 503, path);
        const e = errorOf(r.body);
        assert.equal(e.type, 'error');
        assert.equal(e.error.type, 'overloaded_error');
        assert.equal(r.headers['x-glitch-error'], 'record_spool_full');
        assert.equal(r.headers['retry-after'], '5');
        assert.equal(r.headers['request-id'], e.request_id);
      }
      assert.equal(up.seen.length, before, 'nothing went upstream while refusing');
      await sleep(100);
      assert.deepEqual(recorded, [], 'refusals are counted in metrics, not recorded: their records would only fill the full spool');
      // Auth still comes first, and Claude Code's credential-less preconnect is still relayed.
      assert.equal((await send(`${fwd.url}/v1/messages`, { body: '{}' })).status, 401);
      assert.equal((await send(`${fwd.url}/api/hello`, { method: 'HEAD' })).status, 200);
      const m = (await send(`${fwd.adminUrl}/metrics`)).body.toString();
      assert.match(m, /glitch_forwarder_admission_refusing 1\n/);
      assert.match(m, /glitch_forwarder_errors_total\{code="record_spool_full"\} 3\n/);

      await fwd.setRefusing(false);
      const ok = await send(`${fwd.url}/v1/messages`, { headers: GLITCH, body: '{}' });
      assert.equal(ok.status, 200);
      await eventually(() => recorded.length === 1, 2_000, 'the admitted exchange recorded');
      assert.match((await send(`${fwd.adminUrl}/metrics`)).body.toString(), /glitch_forwarder_admission_refusing 0\n/);
    } finally {
      await fwd.stop(500);
    }
  });

  it('follows an AdmissionSignal in every worker thread, from its state at start', async () => {
    const signal = spoolSignal(true);
    const fwd: RunningForwarder = await startForwarder({ port: 0, adminPort: 0, threads: 2, upstreamUrl: up.url, keys: [KEY], admission: signal });
    try {
      // Many connections, so both threads (SO_REUSEPORT spreads them) answer some.
      const refused = await Promise.all(Array.from({ length: 16 }, () => send(`${fwd.url}/v1/messages`, { headers: GLITCH, body: '{}' })));
      assert.deepEqual([...new Set(refused.map((r) => r.status))], [503]);
      signal.set(false);
      await eventually(() => !fwd.isRefusing(), 1_000, 'admitting');
      // setRefusing resolves once every thread applied the change.
      await fwd.setRefusing(false);
      const admitted = await Promise.all(Array.from({ length: 16 }, () => send(`${fwd.url}/v1/messages`, { headers: GLITCH, body: '{}' })));
      assert.deepEqual([...new Set(admitted.map((r) => r.status))], [200]);
      signal.set(true);
      await fwd.setRefusing(true);
      const again = await Promise.all(Array.from({ length: 16 }, () => send(`${fwd.url}/v1/messages`, { headers: GLITCH, body: '{}' })));
      assert.deepEqual([...new Set(again.map((r) => r.status))], [503]);
    } finally {
      await fwd.stop(500);
    }
    assert.equal(signal.listeners, 0, 'stop() unsubscribed');
  });
});

describe('upstream connection pool', () => {
  let up: TestUpstream;
  before(async () => {
    up = await startUpstream();
  });
  after(() => up.close());

  it('refuses with 503 overloaded_error when every upstream connection stays busy past the queue timeout', async () => {
    const fwd = await startForwarder({ port: 0, adminPort: 0, upstreamUrl: up.url, keys: [KEY], upstreamConnections: 1, upstreamQueueTimeoutMs: 200 });
    try {
      up.handle((_req, res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('event: ping\ndata: {}\n\n'); // holds its connection, like a long turn
      });
      const held = send(`${fwd.url}/v1/messages`, { headers: GLITCH, body: '{"n":1}' }).catch(() => null);
      await eventually(() => up.seen.length === 1, 2_000, 'the first stream upstream');
      const t0 = Date.now();
      const r = await send(`${fwd.url}/v1/messages`, { headers: GLITCH, body: '{"n":2}' });
      const waited = Date.now() - t0;
      assert.equal(r.status, 503);
      assert.equal(errorOf(r.body).error.type, 'overloaded_error');
      assert.equal(r.headers['x-glitch-error'], 'upstream_pool_exhausted');
      assert.ok(r.headers['retry-after'] !== undefined);
      assert.ok(waited >= 200 && waited < 2_000, `refused after ${waited} ms with a 200 ms queue timeout`);
      assert.equal(up.seen.length, 1, 'the queued request never went upstream');
      void held;
    } finally {
      await fwd.stop(0);
    }
  });

  it('closes idle pooled upstream connections after the keep-alive timeout', async () => {
    const fwd = await startForwarder({ port: 0, adminPort: 0, upstreamUrl: up.url, keys: [KEY], upstreamKeepAliveMs: 200 });
    try {
      up.handle((_req, res) => res.end('{}'));
      const opened = up.totalConnections();
      await Promise.all(Array.from({ length: 4 }, () => send(`${fwd.url}/v1/messages`, { headers: GLITCH, body: '{}' })));
      assert.ok(up.totalConnections() > opened);
      // Reused while warm: a request right after another takes an idle connection.
      const warm = up.totalConnections();
      await send(`${fwd.url}/v1/messages`, { headers: GLITCH, body: '{}' });
      assert.equal(up.totalConnections(), warm, 'a pooled connection was reused');
      const t0 = Date.now();
      await eventually(() => up.openConnections() === 0, 2_000, 'idle upstream connections closed');
      const idleFor = Date.now() - t0;
      assert.ok(idleFor < 1_000, `closed after ${idleFor} ms idle with a 200 ms keep-alive`);
      await sleep(10);
    } finally {
      await fwd.stop(0);
    }
  });
});

describe('request framing', () => {
  let up: TestUpstream;
  let fwd: RunningForwarder;
  before(async () => {
    up = await startUpstream();
    fwd = await startForwarder({ port: 0, adminPort: 0, upstreamUrl: up.url, keys: [KEY] });
  });
  after(async () => {
    await fwd.stop(0);
    await up.close();
  });

  it('refuses Transfer-Encoding other than a single chunked, and CL + TE, with 400 and closes; nothing goes upstream', async () => {
    const head = `POST /v1/messages HTTP/1.1\r\nHost: g\r\nX-Glitch-Key: ${KEY.secret}\r\n`;
    const cases = [
      `${head}Transfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n`,
      `${head}Transfer-Encoding: identity\r\n\r\n2\r\n{}\r\n0\r\n\r\n`,
      `${head}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n`,
      `${head}Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}x`,
    ];
    for (const c of cases) {
      const r = await raw(fwd.port, c);
      // uWS itself closes some of these without an answer; whatever answers is Glitch's 400.
      if (r.text !== '') {
        assert.match(r.text, /^HTTP\/1\.1 400 /, c);
        assert.match(r.text, /"type":"invalid_request_error"/);
        assert.match(r.text, /x-glitch-error: malformed_request/i);
      }
      assert.ok(r.closed, `connection closed: ${JSON.stringify(c.slice(head.length, head.length + 40))}`);
    }
    assert.equal(up.seen.length, 0);
  });
});
