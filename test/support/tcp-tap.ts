// A transparent TCP relay that records every byte in each direction per connection, so a
// test can see exactly what a closed client (the Claude Code binary) put on the wire to the
// forwarder and what it got back, and compare that with what the mock upstream saw.
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

export interface TappedConnection {
  id: number;
  /** Bytes client → target. */
  up: Buffer[];
  /** Bytes target → client. */
  down: Buffer[];
  closed: boolean;
}

export class TcpTap {
  readonly connections: TappedConnection[] = [];
  private readonly sockets = new Set<Socket>();
  private server: Server;
  url = '';
  port = 0;

  constructor(private readonly targetPort: number, private readonly targetHost = '127.0.0.1') {
    this.server = createServer((client) => {
      const conn: TappedConnection = { id: this.connections.length, up: [], down: [], closed: false };
      this.connections.push(conn);
      const target = connect(this.targetPort, this.targetHost);
      this.sockets.add(client).add(target);
      client.on('data', (c: Buffer) => {
        conn.up.push(c);
        target.write(c);
      });
      target.on('data', (c: Buffer) => {
        conn.down.push(c);
        client.write(c);
      });
      const close = (): void => {
        conn.closed = true;
        client.destroy();
        target.destroy();
        this.sockets.delete(client);
        this.sockets.delete(target);
      };
      client.on('end', () => target.end());
      target.on('end', () => client.end());
      client.on('close', close);
      target.on('close', close);
      client.on('error', close);
      target.on('error', close);
    });
  }

  async listen(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', () => resolve()));
    this.port = (this.server.address() as AddressInfo).port;
    this.url = `http://127.0.0.1:${this.port}`;
    return this;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

export async function startTcpTap(targetPort: number): Promise<TcpTap> {
  return new TcpTap(targetPort).listen();
}

export interface HttpMessage {
  /** Request line or status line. */
  startLine: string;
  /** [name, value] in wire order, names as written. */
  headers: Array<[string, string]>;
  /** Decoded body (chunked framing removed). */
  body: Buffer;
  /** True when the message ended properly (full content-length or terminating chunk). */
  complete: boolean;
}

function header(h: Array<[string, string]>, name: string): string | undefined {
  return h.find(([n]) => n.toLowerCase() === name)?.[1];
}

/**
 * Splits one direction of an HTTP/1.1 connection into messages. For responses, pass the
 * request methods on that connection in order (a HEAD response has no body).
 */
export function parseHttpStream(data: Buffer, kind: 'request' | 'response', requestMethods: string[] = []): HttpMessage[] {
  const out: HttpMessage[] = [];
  let pos = 0;
  while (pos < data.length) {
    const headEnd = data.indexOf('\r\n\r\n', pos);
    if (headEnd === -1) break;
    const lines = data.subarray(pos, headEnd).toString('latin1').split('\r\n');
    const startLine = lines[0] ?? '';
    const headers: Array<[string, string]> = lines.slice(1).map((l) => {
      const i = l.indexOf(':');
      return [l.slice(0, i), l.slice(i + 1).trim()];
    });
    pos = headEnd + 4;
    const method = kind === 'response' ? requestMethods[out.length] : startLine.split(' ')[0];
    const status = kind === 'response' ? Number(startLine.split(' ')[1]) : 0;
    const noBody = kind === 'response' && (method === 'HEAD' || status === 204 || status === 304 || (status >= 100 && status < 200));
    const te = header(headers, 'transfer-encoding');
    const cl = header(headers, 'content-length');
    let body: Buffer = Buffer.alloc(0);
    let complete = true;
    if (noBody) {
      // nothing
    } else if (te && /chunked/i.test(te)) {
      const parts: Buffer[] = [];
      complete = false;
      for (;;) {
        const lineEnd = data.indexOf('\r\n', pos);
        if (lineEnd === -1) break;
        const size = parseInt(data.subarray(pos, lineEnd).toString('latin1').split(';')[0]!, 16);
        if (Number.isNaN(size)) break;
        if (size === 0) {
          const trailerEnd = data.indexOf('\r\n\r\n', lineEnd);
          pos = trailerEnd === -1 ? data.length : trailerEnd + 4;
          complete = trailerEnd !== -1;
          break;
        }
        const start = lineEnd + 2;
        parts.push(data.subarray(start, Math.min(start + size, data.length)));
        pos = start + size + 2;
        if (pos > data.length) break;
      }
      body = Buffer.concat(parts);
    } else if (cl !== undefined) {
      const n = Number(cl);
      body = data.subarray(pos, pos + n);
      complete = body.length === n;
      pos += n;
    } else if (kind === 'response') {
      body = data.subarray(pos); // read until close
      pos = data.length;
    }
    out.push({ startLine, headers, body, complete });
  }
  return out;
}

/** All request/response pairs seen on the tap, in connection then message order. */
export function tappedExchanges(tap: TcpTap): Array<{ connection: number; request: HttpMessage; response: HttpMessage | undefined }> {
  const out: Array<{ connection: number; request: HttpMessage; response: HttpMessage | undefined }> = [];
  for (const c of tap.connections) {
    const requests = parseHttpStream(Buffer.concat(c.up), 'request');
    const responses = parseHttpStream(Buffer.concat(c.down), 'response', requests.map((r) => r.startLine.split(' ')[0] ?? ''));
    requests.forEach((request, i) => out.push({ connection: c.id, request, response: responses[i] }));
  }
  return out;
}
