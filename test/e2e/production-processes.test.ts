// The production topology as separate processes: `glitch forwarder` (relay + recorder →
// Kafka) and `glitch ingest` (Kafka → ClickHouse), on a private Kafka-protocol broker, with
// the real @anthropic-ai/sdk as the client. Every exchange reaches ClickHouse exactly once
// with the tenant, session, model and usage it had; both processes drain on SIGTERM.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import { privateKafkaMock } from '../harness/index.js';
import { freePort, repoRoot, testKey } from '../support/forwarder.js';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream.js';

const cli = join(repoRoot, 'packages', 'cli', 'dist', 'main.js');
const dir = mkdtempSync(join(tmpdir(), 'glitch-prod-'));
const key = testKey('tenant-prod');

interface Proc {
  name: string;
  child: ChildProcess;
  output: () => string;
  closed: Promise<number | null>;
}

function glitch(name: string, command: string, env: Record<string, string>): Proc {
  const child = spawn(process.execPath, [cli, command], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  const closed = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return { name, child, output: () => out, closed };
}

async function waitFor<T>(what: string, p: Proc[], check: () => T | undefined | Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    const dead = p.find((x) => x.child.exitCode !== null);
    if (dead) assert.fail(`${dead.name} exited (${dead.child.exitCode}) while waiting for ${what}:\n${dead.output()}`);
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}:\n${p.map((x) => `--- ${x.name}\n${x.output()}`).join('\n')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function stopProc(p: Proc): Promise<number | null> {
  p.child.kill('SIGTERM');
  const code = await Promise.race([p.closed, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 30_000).unref())]);
  if (code === 'timeout') {
    p.child.kill('SIGKILL');
    assert.fail(`${p.name} did not stop within 30 s of SIGTERM:\n${p.output()}`);
  }
  return code;
}

async function metric(adminUrl: string, name: string): Promise<number> {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

let kafka: Awaited<ReturnType<typeof privateKafkaMock>>;
let up: MockUpstream;
const procs: Proc[] = [];

before(async () => {
  kafka = await privateKafkaMock();
  up = await startMockUpstream();
});

after(async () => {
  for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
  await up?.close();
  await kafka?.stop();
});

test('glitch forwarder + glitch ingest as separate processes: every SDK exchange lands in ClickHouse once', async () => {
  const keysFile = join(dir, 'keys.json');
  writeFileSync(keysFile, JSON.stringify({ keys: [{ id: key.id, tenantId: key.tenantId, secretSha256: createHash('sha256').update(key.secret!).digest('hex') }] }));
  const [port, adminPort, ingestAdminPort] = [await freePort(), await freePort(), await freePort()];
  const common = { GLITCH_KAFKA_BROKERS: kafka.brokers.join(','), GLITCH_LOG_LEVEL: 'warn' };
  const fwd = glitch('forwarder', 'forwarder', {
    ...common,
    GLITCH_KEYS_FILE: keysFile,
    GLITCH_PORT: String(port),
    GLITCH_ADMIN_PORT: String(adminPort),
    GLITCH_UPSTREAM_URL: up.url,
    GLITCH_FORWARDER_THREADS: '2',
    GLITCH_DATA_DIR: join(dir, 'forwarder'),
  });
  const ing = glitch('ingest', 'ingest', {
    ...common,
    GLITCH_DATA_DIR: join(dir, 'ingest'),
    GLITCH_INGEST_ADMIN_PORT: String(ingestAdminPort),
    GLITCH_INGEST_BATCH_MS: '200',
  });
  procs.push(fwd, ing);
  await waitFor('both processes to listen', procs, () => (/listening on/.test(fwd.output()) && /Health and metrics/.test(ing.output()) ? true : undefined));

  const sdk = new Anthropic({ apiKey: 'sk-ant-test-prod', baseURL: `http://127.0.0.1:${port}`, maxRetries: 0, defaultHeaders: { 'X-Glitch-Key': key.secret! } });
  const sessions = ['s-plain', 's-stream'];
  const texts: string[] = [];
  for (let i = 0; i < 6; i++) {
    const headers = { 'X-Claude-Code-Session-Id': sessions[i % 2]! };
    const params = { model: 'claude-glitch-test-1', max_tokens: 64, messages: [{ role: 'user' as const, content: `question ${i}` }] };
    if (i % 2 === 0) {
      const m = await sdk.messages.create(params, { headers });
      texts.push(m.content.map((b) => (b.type === 'text' ? b.text : '')).join(''));
    } else {
      const m = await sdk.messages.stream(params, { headers }).finalMessage();
      texts.push(m.content.map((b) => (b.type === 'text' ? b.text : '')).join(''));
    }
  }
  assert.ok(texts.every((t) => t.length > 0), 'every call answered');

  const ingestAdmin = `http://127.0.0.1:${ingestAdminPort}`;
  await waitFor('ingest to insert 6 exchanges', procs, async () => ((await metric(ingestAdmin, 'glitch_ingest_exchanges_inserted_total')) >= 6 ? true : undefined));
  assert.equal(await stopProc(fwd), 0, fwd.output());
  assert.match(fwd.output(), /stopped: 6 exchanges captured, 6 published, 0 spooled/);
  assert.equal(await stopProc(ing), 0, ing.output());
  assert.match(ing.output(), /stopped: 6 exchanges inserted, 0 dead-lettered/);

  // ingest is gone, so `glitch sql` opens its chDB directly.
  const sql = spawnSync(
    process.execPath,
    [cli, 'sql', `SELECT session_id, count() AS n, sum(stream) AS streamed, min(tenant_id) AS tenant, min(model) AS model, sum(output_tokens) > 0 AS usage FROM exchanges FINAL GROUP BY session_id ORDER BY session_id`],
    { env: { PATH: process.env.PATH ?? '', GLITCH_DATA_DIR: join(dir, 'ingest'), GLITCH_LOG_LEVEL: 'warn' }, encoding: 'utf8' },
  );
  assert.equal(sql.status, 0, sql.stderr);
  assert.match(sql.stdout, /s-plain\s+3\s+0\s+tenant-prod\s+claude-glitch-test-1\s+(true|1)/, sql.stdout);
  assert.match(sql.stdout, /s-stream\s+3\s+3\s+tenant-prod\s+claude-glitch-test-1\s+(true|1)/, sql.stdout);
  assert.match(sql.stdout, /\(2 rows\)/);
  // X-Glitch-Key never went upstream; the Glitch secret is nowhere in either process's output.
  assert.ok(up.requests.every((r) => !r.rawHeaders.some((h) => h.toLowerCase() === 'x-glitch-key')));
  for (const p of procs) assert.ok(!p.output().includes(key.secret!), `${p.name} printed the Glitch secret`);
});

test('glitch forwarder and glitch ingest refuse to start without Kafka, naming every missing variable', async () => {
  const r = spawnSync(process.execPath, [cli, 'forwarder'], { env: { PATH: process.env.PATH ?? '' }, encoding: 'utf8' });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /GLITCH_KAFKA_BROKERS/);
  assert.match(r.stderr, /GLITCH_KEYS_FILE/);
  const i = spawnSync(process.execPath, [cli, 'ingest'], { env: { PATH: process.env.PATH ?? '' }, encoding: 'utf8' });
  assert.equal(i.status, 1);
  assert.match(i.stderr, /GLITCH_KAFKA_BROKERS/);
});
