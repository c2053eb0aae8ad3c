// The uWebSockets.js alias from DESIGN.md loads on this Node and serves real sockets.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import uWS from 'uWebSockets.js';

test('uWebSockets.js (alias of @trufflesuite/uws-js-unofficial) serves HTTP on a real socket', async () => {
  const pkg = createRequire(import.meta.url)('uWebSockets.js/package.json') as { name: string; version: string };
  assert.equal(pkg.name, '@trufflesuite/uws-js-unofficial');
  const app = uWS.App().post('/echo', (res, req) => {
    const q = req.getQuery() ?? '';
    const chunks: Buffer[] = [];
    res.onAborted(() => {});
    res.onData((ab, last) => {
      chunks.push(Buffer.from(new Uint8Array(ab.slice(0))));
      if (last) res.cork(() => res.writeHeader('x-query', q).end(Buffer.concat(chunks)));
    });
  });
  const listenSocket = await new Promise<uWS.us_listen_socket>((resolve, reject) =>
    app.listen('127.0.0.1', 0, (s) => (s ? resolve(s) : reject(new Error('listen failed')))),
  );
  try {
    const port = uWS.us_socket_local_port(listenSocket);
    const r = await fetch(`http://127.0.0.1:${port}/echo?beta=true`, { method: 'POST', body: 'ping' });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-query'), 'beta=true');
    assert.equal(await r.text(), 'ping');
  } finally {
    uWS.us_listen_socket_close(listenSocket);
  }
});
