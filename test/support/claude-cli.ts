// Locates and runs the real Claude Code CLI (npm `@anthropic-ai/claude-code`, pinned in
// test/package.json) in print mode against a base URL, sealed off from the host: temp HOME,
// minimal environment (no inherited ANTHROPIC_* or proxy variables), no telemetry, no
// update checks, no error reporting, no retries, bounded time.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const CLAUDE_CODE_VERSION = '2.1.197';

const testDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const repoRoot = resolve(testDir, '..');

export const CLAUDE_INSTALL_HINT =
  `install it with: cd ${repoRoot} && node scripts/build.mjs ` +
  `(installs test/package.json's "@anthropic-ai/claude-code": "${CLAUDE_CODE_VERSION}" with pnpm; its postinstall ` +
  '`node install.cjs` copies the native binary into bin/claude.exe and must be allowed by onlyBuiltDependencies ' +
  'in pnpm-workspace.yaml; if bin/claude.exe is still a stub, run: cd node_modules/.pnpm/@anthropic-ai+claude-code@' +
  `${CLAUDE_CODE_VERSION}/node_modules/@anthropic-ai/claude-code && node install.cjs)`;

/** Absolute path of the native `claude` binary; throws with the install command when missing. */
export function findClaudeBinary(): string {
  const require = createRequire(join(testDir, 'package.json'));
  let pkgJson: string;
  try {
    pkgJson = require.resolve('@anthropic-ai/claude-code/package.json');
  } catch {
    throw new Error(`Claude Code CLI (@anthropic-ai/claude-code) is not installed; ${CLAUDE_INSTALL_HINT}`);
  }
  const bin = join(dirname(pkgJson), 'bin', 'claude.exe');
  // Before install.cjs runs, bin/claude.exe is a small placeholder stub; the native binary is >100 MB.
  if (!existsSync(bin) || statSync(bin).size < 1_000_000) {
    throw new Error(`Claude Code CLI binary missing or still the placeholder stub at ${bin} (postinstall did not run); ${CLAUDE_INSTALL_HINT}`);
  }
  return bin;
}

/** The JSON object `claude -p … --output-format json` prints. */
export interface ClaudeResult {
  type: 'result';
  subtype: string;
  is_error: boolean;
  result?: string;
  session_id: string;
  num_turns: number;
  stop_reason?: string | null;
  api_error_status?: number | null;
  duration_ms?: number;
  [k: string]: unknown;
}

export interface RunClaudeOptions {
  /** ANTHROPIC_BASE_URL: the forwarder (or the mock directly). */
  baseUrl: string;
  prompt: string;
  /** Upstream credential the CLI sends as x-api-key. */
  apiKey?: string;
  /** Sent through ANTHROPIC_CUSTOM_HEADERS as `X-Glitch-Key: …`; null = send no custom header. */
  glitchKey?: string | null;
  /** Tools the CLI may run without asking (`--allowedTools`), e.g. ['Bash']. */
  allowedTools?: string[];
  /** Extra CLI arguments. */
  args?: string[];
  /** Extra environment (wins over defaults). */
  env?: Record<string, string>;
  /** Kill the CLI after this long (default 60 s). */
  timeoutMs?: number;
  /** CLAUDE_CODE_MAX_RETRIES (default 0: a failure shows at once instead of after backoff). */
  maxRetries?: number;
  /** Keep the temp HOME after the run (default: removed). */
  keepHome?: boolean;
}

export interface ClaudeRun {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
  /** Parsed stdout when it is the result JSON, else null. */
  result: ClaudeResult | null;
  durationMs: number;
  /** The exact argv and the environment the CLI ran with (secrets included: test values only). */
  argv: string[];
  env: Record<string, string>;
}

/** Environment that keeps the CLI off the network except for ANTHROPIC_BASE_URL. */
export function claudeEnv(home: string, opts: RunClaudeOptions): Record<string, string> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
    HOME: home,
    CLAUDE_CONFIG_DIR: join(home, '.claude'),
    TMPDIR: join(home, 'tmp'),
    LANG: 'C.UTF-8',
    TERM: 'dumb',
    NO_COLOR: '1',
    DISABLE_TELEMETRY: '1',
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
    DISABLE_AUTOUPDATER: '1',
    DISABLE_UPDATES: '1',
    DISABLE_ERROR_REPORTING: '1',
    DISABLE_GROWTHBOOK: '1',
    DISABLE_INSTALLATION_CHECKS: '1',
    CLAUDE_CODE_MAX_RETRIES: String(opts.maxRetries ?? 0),
    API_TIMEOUT_MS: String(opts.timeoutMs ?? 60_000),
    ANTHROPIC_BASE_URL: opts.baseUrl,
    ANTHROPIC_API_KEY: opts.apiKey ?? 'sk-ant-test-00000000000000000000000000000000',
  };
  if (opts.glitchKey !== null) env.ANTHROPIC_CUSTOM_HEADERS = `X-Glitch-Key: ${opts.glitchKey ?? 'glitch_sk_test_0000000000000000'}`;
  return { ...env, ...opts.env };
}

/**
 * Runs `claude -p <prompt> --output-format json` in a fresh temp HOME (also its cwd) and
 * resolves when it exits or is killed after `timeoutMs`. Never rejects for a CLI failure:
 * the test asserts on exitCode/result/stderr.
 */
export async function runClaude(opts: RunClaudeOptions): Promise<ClaudeRun> {
  const bin = findClaudeBinary();
  const home = mkdtempSync(join(tmpdir(), 'glitch-claude-home-'));
  mkdirSync(join(home, 'tmp')); // TMPDIR must exist
  const env = claudeEnv(home, opts);
  const argv = ['-p', opts.prompt, '--output-format', 'json', ...(opts.allowedTools?.length ? ['--allowedTools', opts.allowedTools.join(',')] : []), ...(opts.args ?? [])];
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const started = Date.now();
  const child = spawn(bin, argv, { cwd: home, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, timeoutMs);
  const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolvePromise, reject) => {
    child.once('error', reject);
    child.once('close', (c, s) => resolvePromise({ code: c, signal: s }));
  }).finally(() => clearTimeout(timer));
  if (!opts.keepHome) rmSync(home, { recursive: true, force: true });
  let result: ClaudeResult | null = null;
  try {
    const parsed = JSON.parse(stdout.trim()) as unknown;
    if (parsed && typeof parsed === 'object' && (parsed as { type?: unknown }).type === 'result') result = parsed as ClaudeResult;
  } catch {
    /* not JSON: left null, the test reports stdout */
  }
  return { exitCode: code, signal, timedOut, stdout, stderr, result, durationMs: Date.now() - started, argv, env };
}

/** One-line description of a run for assertion messages. */
export function describeRun(run: ClaudeRun): string {
  return `claude exited ${run.exitCode ?? run.signal}${run.timedOut ? ' (killed: timeout)' : ''} after ${run.durationMs} ms; stdout: ${run.stdout.slice(0, 1500) || '(empty)'}; stderr: ${run.stderr.slice(0, 1500) || '(empty)'}`;
}
