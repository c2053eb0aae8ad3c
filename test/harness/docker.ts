// Whether a Docker engine answers here. Cached: asked once per process.
import { existsSync } from 'node:fs';
import { request } from 'node:http';

let answer: Promise<boolean> | undefined;

export function dockerAvailable(): Promise<boolean> {
  answer ??= probe();
  return answer;
}

async function probe(): Promise<boolean> {
  const host = process.env.DOCKER_HOST;
  const socketPath = host?.startsWith('unix://') ? host.slice('unix://'.length) : host ? undefined : '/var/run/docker.sock';
  if (host && !socketPath) return true; // tcp:// engines: let testcontainers try
  if (!socketPath || !existsSync(socketPath)) return false;
  return await new Promise<boolean>((resolve) => {
    const req = request({ socketPath, path: '/_ping', method: 'GET', timeout: 2_000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}
