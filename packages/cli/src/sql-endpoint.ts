// A tiny loopback HTTP endpoint on the embedded sensor: POST /sql with the run's bearer
// token, body = SQL; answers the QueryResult[] as JSON. Only for `glitch sql`.
import { runStatements, type ClickHouseClient } from '@glitch/store';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type Server } from 'node:http';

const MAX_SQL_BYTES = 1024 * 1024;

export interface SqlEndpoint {
  url: string;
  token: string;
  close(): Promise<void>;
}

export async function startSqlEndpoint(client: ClickHouseClient): Promise<SqlEndpoint> {
  const token = randomBytes(24).toString('base64url');
  const expected = Buffer.from(`Bearer ${token}`);
  const server: Server = createServer((req, res) => {
    const auth = Buffer.from(req.headers.authorization ?? '');
    if (req.method !== 'POST' || req.url !== '/sql') {
      res.writeHead(404).end();
      return;
    }
    if (auth.byteLength !== expected.byteLength || !timingSafeEqual(auth, expected)) {
      res.writeHead(401).end();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.byteLength;
      if (size > MAX_SQL_BYTES) req.destroy();
      else chunks.push(c);
    });
    req.on('end', () => {
      runStatements(client, Buffer.concat(chunks).toString('utf8')).then(
        (results) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ results })),
        (e: unknown) => res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: (e as Error).message })),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    url: `http://127.0.0.1:${port}/sql`,
    token,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
