// `npm start` from a clean state, exactly as a new user runs it: the all-in-one sensor comes
// up, creates a tenant key, prints how to point Claude Code at it; the real Claude Code CLI
// goes through it to the mock Anthropic API; `npm run glitch -- sql` finds the exchange (via
// the running sensor, which owns the embedded chDB); after a restart the key and the data are
// still there, and `glitch sql` reads chDB directly once the sensor is gone.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { scanFrames } from '@glitch/spool';
import { describeRun, findClaudeBinary, runClaude } from '../support/claude-cli.js';
import { freePort, repoRoot } from '../support/forwarder.js';
import { reply, startMockUpstream, type MockUpstream } from '../support/mock-upstream.js';

const dataDir = join(mkdtempSync(join(tmpdir(), 'glitch-start-')), '.glitch');
let up: MockUpstream;
let env: Record<string, string>;

interface Sensor {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

function npmStart(extraEnv: Record<string, string> = {}): Sensor {
  // detached: its own process group, so a failing test can still take down npm's children.
  const child = spawn('npm', ['start'], { cwd: repoRoot, env: { ...env, ...extraEnv }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  // 'close', not 'exit': npm may exit on SIGTERM before the sensor it started has drained;
  // the pipes close only when every process holding them (the sensor included) is gone.
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return { child, output: () => out, exited };
}

async function waitForOutput(s: Sensor, pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = s.output().match(pattern);
    if (m) return m;
    if (s.child.exitCode !== null) assert.fail(`npm start exited (${s.child.exitCode}) before printing ${pattern}:\n${s.output()}`);
    if (Date.now() > deadline) assert.fail(`npm start did not print ${pattern} within ${timeoutMs} ms:\n${s.output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function stop(s: Sensor): Promise<void> {
  if (s.child.exitCode !== null && s.child.stdout!.closed) return;
  s.child.kill('SIGTERM'); // npm → scripts/glitch.mjs → the sensor, which drains
  const code = await Promise.race([s.exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 30_000).unref())]);
  if (code === 'timeout') {
    process.kill(-s.child.pid!, 'SIGKILL');
    assert.fail(`npm start did not stop within 30 s of SIGTERM:\n${s.output()}`);
  }
}

function glitchSql(query: string): string {
  const r = spawnSync('npm', ['run', '--silent', 'glitch', '--', 'sql', query], { cwd: repoRoot, env, encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, `glitch sql failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

let sensor: Sensor | undefined;

before(async () => {
  findClaudeBinary();
  up = await startMockUpstream();
  const [port, adminPort] = [await freePort(), await freePort()];
  env = {
    ...(process.env as Record<string, string>),
    GLITCH_DATA_DIR: dataDir,
    GLITCH_PORT: String(port),
    GLITCH_ADMIN_PORT: String(adminPort),
    GLITCH_UPSTREAM_URL: up.url,
    GLITCH_FORWARDER_THREADS: '1',
    GLITCH_LOG_LEVEL: 'warn',
  };
  // The embedded defaults only: no Kafka, ClickHouse server or keys file from the outer env.
  for (const k of Object.keys(env)) if (/^(GLITCH_(KAFKA|CLICKHOUSE|KEYS)|ANTHROPIC_)/.test(k)) delete env[k];
});

after(async () => {
  if (sensor) await stop(sensor).catch(() => process.kill(-sensor!.child.pid!, 'SIGKILL'));
  await up?.close();
});

let sessionId = '';
const answer = `Glitch sees you ${Date.now().toString(36)}`;

test('npm start on a clean state: prints how to point Claude Code at it, relays the real CLI, and records the exchange', async () => {
  assert.equal(existsSync(dataDir), false);
  sensor = npmStart();
  const base = await waitForOutput(sensor, /export ANTHROPIC_BASE_URL=(\S+)/, 180_000);
  const headers = await waitForOutput(sensor, /export ANTHROPIC_CUSTOM_HEADERS="X-Glitch-Key: \$\(cat (\S+)\)"/, 5_000);
  assert.match(sensor.output(), /created a tenant key for this machine/);
  assert.equal(base[1], `http://127.0.0.1:${env.GLITCH_PORT}`);
  const secret = readFileSync(headers[1]!, 'utf8').trim();
  assert.match(secret, /^glitch_sk_/);

  up.script(reply.stream({ content: [{ type: 'text', text: answer }] }, { eventDelayMs: 2 }));
  const run = await runClaude({ baseUrl: base[1]!, glitchKey: secret, prompt: 'Say hello to Glitch', timeoutMs: 90_000 });
  assert.equal(run.result?.result, answer, describeRun(run));
  sessionId = run.result!.session_id;
  assert.ok(up.requests.every((r) => !r.rawHeaders.join('\n').toLowerCase().includes('x-glitch-key')), 'X-Glitch-Key reached upstream');

  // Ingest batches for up to GLITCH_INGEST_BATCH_MS; poll until the row is there.
  const query = `SELECT route, status, stream, tenant_id, response_body LIKE '%${answer}%' AS has_answer FROM exchanges FINAL WHERE session_id = '${sessionId}' AND route = '/v1/messages'`;
  const deadline = Date.now() + 30_000;
  let printed = '';
  while (Date.now() < deadline) {
    printed = glitchSql(query);
    if (/\(1 row\)/.test(printed)) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.match(printed, /\(1 row\)/, `the CLI's exchange never showed up in ClickHouse:\n${printed}\n--- sensor output ---\n${sensor.output()}`);
  assert.match(printed, /\/v1\/messages\s+200\s+true\s+local\s+1/);
  assert.ok(!sensor.output().includes(secret), 'the Glitch secret was printed or logged');

  // The query the sensor printed as a first step works as printed.
  const hint = sensor.output().match(/Query what was recorded: npm run glitch -- sql "([^"]+)"/);
  assert.ok(hint, sensor.output());
  const recent = glitchSql(hint[1]!);
  assert.match(recent, /received_at\s+route\s+model\s+status/);
  assert.match(recent, /\/v1\/messages\s+\S+\s+200/);
});

test('a restart keeps the key and the data; with the sensor stopped, glitch sql reads chDB directly', async () => {
  assert.ok(sessionId, 'needs the first test');
  await stop(sensor!);
  assert.match(sensor!.output(), /stopped: \d+ exchanges captured/);
  assert.equal(existsSync(join(dataDir, 'sensor.json')), false, 'the sensor file is removed on a clean stop');

  // Stopped: glitch sql opens the embedded chDB itself.
  const direct = glitchSql(`SELECT count() AS n FROM exchanges FINAL WHERE session_id = '${sessionId}' AND route = '/v1/messages'`);
  assert.match(direct, /^\s*1$/m, direct);

  sensor = npmStart();
  await waitForOutput(sensor, /export ANTHROPIC_BASE_URL=/, 180_000);
  assert.doesNotMatch(sensor.output(), /created a tenant key/, 'the key is kept across restarts');
  const again = glitchSql(`SELECT count() AS n FROM exchanges FINAL WHERE session_id = '${sessionId}' AND route = '/v1/messages'`);
  assert.match(again, /^\s*1$/m, again);

  // New traffic after the restart is recorded too (the in-process bus starts its offsets
  // after what ClickHouse holds, so ingest neither skips nor dedups it away).
  const base = (await waitForOutput(sensor, /export ANTHROPIC_BASE_URL=(\S+)/, 1_000))[1]!;
  const secret = readFileSync(join(dataDir, 'local-key'), 'utf8').trim();
  up.script(reply.stream({ content: [{ type: 'text', text: 'after restart' }] }));
  const run = await runClaude({ baseUrl: base, glitchKey: secret, prompt: 'Again', timeoutMs: 90_000 });
  assert.equal(run.result?.result, 'after restart', describeRun(run));
  const second = run.result!.session_id;
  let printed = '';
  for (const deadline = Date.now() + 30_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 250))) {
    printed = glitchSql(`SELECT session_id FROM exchanges FINAL WHERE route = '/v1/messages' ORDER BY received_at`);
    if (printed.includes(second)) break;
  }
  assert.ok(printed.includes(second) && printed.includes(sessionId) && /\(2 rows\)/.test(printed), `both sessions, once each:\n${printed}`);
});

/** How many messages in the embedded bus's exchanges log on disk contain `marker`. */
function busMessagesContaining(marker: string): number {
  const dir = join(dataDir, 'bus', 'glitch.exchanges.v1', '0');
  if (!existsSync(dir)) return 0;
  let n = 0;
  for (const f of readdirSync(dir)) for (const p of scanFrames(readFileSync(join(dir, f))).payloads) if (p.includes(marker)) n++;
  return n;
}

test('a crash (kill -9 of the whole sensor) before ingest ran loses nothing: the restarted sensor stores every exchange once', async () => {
  await stop(sensor!);
  // Ingest batches for a minute in this run, so every record is still only in the bus when the sensor dies.
  sensor = npmStart({ GLITCH_INGEST_BATCH_MS: '60000' });
  const base = (await waitForOutput(sensor, /export ANTHROPIC_BASE_URL=(\S+)/, 180_000))[1]!;
  const secret = readFileSync(join(dataDir, 'local-key'), 'utf8').trim();
  const marker = `crash-${Date.now().toString(36)}`;
  const N = 20;
  await Promise.all(
    Array.from({ length: N }, async (_, i) => {
      const stream = i % 2 === 1;
      const r = await fetch(`${base}/v1/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': 'sk-ant-test-crash', 'x-glitch-key': secret, 'x-claude-code-session-id': `${marker}-${i}` },
        body: JSON.stringify({ model: 'claude-glitch-test-1', max_tokens: 16, stream, messages: [{ role: 'user', content: `crash test ${i}` }] }),
      });
      assert.equal(r.status, 200);
      await r.arrayBuffer();
    }),
  );
  const deadline = Date.now() + 10_000;
  while (busMessagesContaining(marker) < N && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.equal(busMessagesContaining(marker), N, 'every record reached the bus log on disk');

  process.kill(-sensor!.child.pid!, 'SIGKILL'); // npm, the launcher and the sensor: like a power cut
  await sensor!.exited;
  assert.doesNotMatch(sensor!.output(), /stopped:/, 'it did not get to drain');

  sensor = npmStart();
  await waitForOutput(sensor, /export ANTHROPIC_BASE_URL=/, 180_000);
  const query = `SELECT count() AS rows, uniqExact(id) AS ids, uniqExact(session_id) AS sessions FROM exchanges WHERE session_id LIKE '${marker}-%'`;
  let printed = '';
  for (const until = Date.now() + 30_000; Date.now() < until; await new Promise((r) => setTimeout(r, 250))) {
    printed = glitchSql(query);
    if (new RegExp(`^\\s*${N}\\s+${N}\\s+${N}\\s*$`, 'm').test(printed)) break;
  }
  // Not FINAL: exactly N rows even before any merge, so nothing was inserted twice.
  assert.match(printed, new RegExp(`^\\s*${N}\\s+${N}\\s+${N}\\s*$`, 'm'), printed);
});
