// The forwarder against an https upstream (as api.anthropic.com is): TLS connections read
// into the pool's shared buffer like plain ones, bodies relayed byte-exact both ways,
// connections reused, and a certificate it does not trust refused with 502.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startForwarder, type RunningForwarder, type StaticKey } from '../src/index.js';
import { send } from './helpers.js';

const KEY: StaticKey = { id: 'key-1', tenantId: 'tenant-a', secret: 'glitch_sk_test_tls_0123456789abcdef' };
const GLITCH = { 'x-glitch-key': KEY.secret! };

/** A throwaway self-signed certificate for 127.0.0.1 (openssl is on every machine this runs on). */
function selfSigned(): { key: string; cert: string } {
  const dir = mkdtempSync(join(tmpdir(), 'glitch-tls-'));
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
    return { key: readFileSync(join(dir, 'key.pem'), 'utf8'), cert: readFileSync(join(dir, 'cert.pem'), 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('https upstream', () => {
  let tls: { key: string; cert: string };
  let server: Server;
  let upstreamUrl: string;
  const seen: Buffer[] = [];
  let connections = 0;
  const responseBody = randomBytes(200_000); // spans many TLS records and reads

  before(async () => {
    tls = selfSigned();
    server = createServer({ key: tls.key, cert: tls.cert }, (req, res) => {
      const parts: Buffer[] = [];
      req.on('data', (c: Buffer) => parts.push(c));
      req.on('end', () => {
        seen.push(Buffer.concat(parts));
        if (req.url?.startsWith('/v1/messages?stream')) {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.write('event: message_start\ndata: {"type":"message_start"}\n\n');
          setTimeout(() => res.end('event: message_stop\ndata: {"type":"message_stop"}\n\n'), 20);
        } else {
          res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(responseBody.length) });
          res.end(responseBody);
        }
      });
    });
    server.on('secureConnection', () => connections++);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    upstreamUrl = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  it('relays bodies byte-exact both ways and streams SSE, reusing the TLS connection', async () => {
    const fwd: RunningForwarder = await startForwarder({ port: 0, adminPort: 0, upstreamUrl, upstreamCa: tls.cert, keys: [KEY] });
    try {
      const before = connections;
      for (let i = 0; i < 3; i++) {
        const body = randomBytes(100_000);
        const r = await send(`${fwd.url}/v1/messages`, { headers: GLITCH, body });
        assert.equal(r.status, 200);
        assert.ok(r.body.equals(responseBody), 'response bytes relayed exactly');
        assert.ok(seen.at(-1)!.equals(body), 'request bytes relayed exactly');
      }
      const s = await send(`${fwd.url}/v1/messages?stream=1`, { headers: GLITCH, body: '{"stream":true}' });
      assert.equal(s.status, 200);
      assert.equal(s.body.toString(), 'event: message_start\ndata: {"type":"message_start"}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n');
      assert.equal(connections - before, 1, 'one TLS connection, kept alive across the requests');
    } finally {
      await fwd.stop(0);
    }
  });

  it('answers 502 api_error when the upstream certificate is not trusted', async () => {
    const fwd = await startForwarder({ port: 0, adminPort: 0, upstreamUrl, keys: [KEY] });
    try {
      const r = await send(`${fwd.url}/v1/messages`, { headers: GLITCH, body: '{}' });
      assert.equal(r.status, 502);
      assert.equal(r.headers['x-glitch-error'], 'upstream_connect_failed');
      assert.equal((JSON.parse(r.body.toString()) as { error: { type: string } }).error.type, 'api_error');
    } finally {
      await fwd.stop(0);
    }
  });
});
