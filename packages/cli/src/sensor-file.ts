// While `glitch up` runs it owns the embedded chDB (chDB locks its data dir per process), so
// `glitch sql` asks the running sensor instead. The sensor file says where: a loopback URL
// and a per-run token, readable only by the owner.
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

export interface SensorFile {
  pid: number;
  sqlUrl: string;
  token: string;
}

export function sensorFilePath(dataDir: string): string {
  return join(resolve(dataDir), 'sensor.json');
}

export function writeSensorFile(dataDir: string, s: SensorFile): void {
  writeFileSync(sensorFilePath(dataDir), JSON.stringify(s) + '\n', { mode: 0o600 });
}

export function removeSensorFile(dataDir: string): void {
  rmSync(sensorFilePath(dataDir), { force: true });
}

/** The running sensor's file, or undefined when none runs (a stale file is ignored). */
export function readSensorFile(dataDir: string): SensorFile | undefined {
  const p = sensorFilePath(dataDir);
  if (!existsSync(p)) return undefined;
  try {
    const s = JSON.parse(readFileSync(p, 'utf8')) as SensorFile;
    process.kill(s.pid, 0);
    return s;
  } catch {
    return undefined;
  }
}
