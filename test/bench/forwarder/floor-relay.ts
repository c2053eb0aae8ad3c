// The floor of Glitch's stack, for the forwarder bench: the least a relay built on
// uWebSockets.js (client side) and node:net (upstream side) can do per request. It copies
// the request body out of uWS, writes head + body to a pooled keep-alive upstream socket
// (reads through net's `onread` into one reused buffer), and answers with upstream's status,
// headers and body. No authentication, no validation, no limits, no timeouts, no metrics,
// no streaming, no error handling: only responses with a content-length (the bench
// upstream's `mode=json`). It is not a product; it shows how close Glitch's relay is to
// what this stack allows, and that gap against nginx is the stack's, not the relay's.
// Usage: node --import tsx floor-relay.ts <upstream-url> → prints "LISTENING <port>".
import { connect, type Socket } from 'node:net';
import uWS from 'uWebSockets.js';
import type { HttpResponse } from 'uWebSockets.js';

const upstream = new URL(process.argv[2] ?? 'http://127.0.0.1:8080');
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'content-length', 'transfer-encoding', 'date']);
const readBuffer = Buffer.allocUnsafe(64 * 1024);

interface Pending {
  res: HttpResponse;
  gone: boolean;
}

class Connection {
  private readonly socket: Socket;
  private current: Pending | null = null;
  /** Response bytes so far (a response may span reads). */
  private got: Buffer[] = [];
  private gotBytes = 0;

  constructor() {
    this.socket = connect({ host: upstream.hostname, port: Number(upstream.port), noDelay: true, onread: { buffer: readBuffer, callback: (n) => this.onRead(n) } });
  }

  send(p: Pending, head: string, body: Buffer): void {
    this.current = p;
    this.socket.cork();
    this.socket.write(head, 'latin1');
    this.socket.write(body);
    this.socket.uncork();
  }

  private onRead(n: number): boolean {
    this.got.push(Buffer.from(readBuffer.subarray(0, n)));
    this.gotBytes += n;
    const all = this.got.length === 1 ? this.got[0]! : Buffer.concat(this.got, this.gotBytes);
    const headEnd = all.indexOf('\r\n\r\n');
    if (headEnd === -1) return true;
    const lines = all.toString('latin1', 0, headEnd).split('\r\n');
    const headers: Array<[string, string]> = [];
    let length = 0;
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      const name = line.slice(0, colon);
      const value = line.slice(colon + 1).trim();
      const lower = name.toLowerCase();
      if (lower === 'content-length') length = Number(value);
      if (!HOP_BY_HOP.has(lower)) headers.push([name, value]);
    }
    if (all.length < headEnd + 4 + length) return true;
    const p = this.current!;
    this.current = null;
    this.got = [];
    this.gotBytes = 0;
    idle.push(this);
    if (!p.gone) {
      p.res.cork(() => {
        p.res.writeStatus(lines[0]!.slice(9));
        for (const [name, value] of headers) p.res.writeHeader(name, value);
        p.res.end(all.subarray(headEnd + 4, headEnd + 4 + length));
      });
    }
    return true;
  }
}

const idle: Connection[] = [];

uWS
  .App()
  .any('/*', (res, req) => {
    const p: Pending = { res, gone: false };
    res.onAborted(() => (p.gone = true));
    const query = req.getQuery();
    let head = `${req.getCaseSensitiveMethod()} ${req.getUrl()}${query ? `?${query}` : ''} HTTP/1.1\r\nhost: ${upstream.host}\r\n`;
    req.forEach((name, value) => {
      if (name !== 'host' && name !== 'content-length' && name !== 'x-glitch-key' && name !== 'connection') head += `${name}: ${value}\r\n`;
    });
    const body = Buffer.allocUnsafe(Number(req.getHeader('content-length') || 0));
    let at = 0;
    res.onData((chunk, last) => {
      body.set(new Uint8Array(chunk), at);
      at += chunk.byteLength;
      if (!last) return;
      (idle.pop() ?? new Connection()).send(p, `${head}content-length: ${at}\r\n\r\n`, body);
    });
  })
  .listen('127.0.0.1', 0, (socket) => {
    if (!socket) process.exit(1);
    console.log(`LISTENING ${uWS.us_socket_local_port(socket)}`);
  });
