// The admin port: liveness, readiness and Prometheus metrics, kept off the relay port so
// probes and scrapes never compete with (or get mistaken for) relayed traffic.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { RelayLog } from './relay-log.js';

export interface AdminHandlers {
  ready(): boolean;
  metrics(): Promise<string>;
}

export interface AdminServer {
  port: number;
  close(): Promise<void>;
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(body);
}

export function startAdmin(host: string, port: number, handlers: AdminHandlers, log: RelayLog): Promise<AdminServer> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?', 1)[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'text/plain', 'method not allowed\n');
    switch (path) {
      case '/healthz':
        return send(res, 200, 'application/json', '{"status":"ok"}\n');
      case '/readyz':
        return handlers.ready()
          ? send(res, 200, 'application/json', '{"status":"ready"}\n')
          : send(res, 503, 'application/json', '{"status":"not ready"}\n');
      case '/metrics':
        handlers.metrics().then(
          (text) => send(res, 200, 'text/plain; version=0.0.4; charset=utf-8', text),
          (err: unknown) => {
            log('error', 'metrics collection failed', { err });
            send(res, 500, 'text/plain', 'metrics unavailable\n');
          },
        );
        return;
      default:
        return send(res, 404, 'text/plain', 'not found\n');
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(new Error(`cannot listen on admin ${host}:${port}: ${e.code ?? e.message}`)));
    server.listen({ host, port }, () => {
      const addr = server.address();
      resolve({
        port: typeof addr === 'object' && addr !== null ? addr.port : port,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}
