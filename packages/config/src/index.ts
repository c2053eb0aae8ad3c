// Environment parsing for every Glitch process. A composition root calls `loadConfig`
// once with its schema; nothing else reads process.env.
import { z } from 'zod';
import { parseCpuList } from './cpu-list.js';

export { z };
export { formatCpuList, parseCpuList } from './cpu-list.js';

export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

type Env = Readonly<Record<string, string | undefined>>;

/**
 * Parses `env` with `schema` and either returns typed config or throws a ConfigError that
 * lists every bad variable at once (never just the first), so an operator fixes them in one go.
 * Empty strings count as unset: `FOO=` in a compose file means "use the default".
 */
export function loadConfig<S extends z.ZodType>(schema: S, env: Env): z.output<S> {
  const cleaned: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && v !== '') cleaned[k] = v;
  const result = schema.safeParse(cleaned);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => {
    // The variable is the first path element; deeper elements (a list item) go in the text.
    const name = issue.path.length ? String(issue.path[0]) : '(environment)';
    const detail = issue.path.length > 1 ? ` [item ${issue.path.slice(1).map(String).join('.')}]` : '';
    const got = issue.path.length ? cleaned[name] : undefined;
    const shown = got === undefined ? 'unset' : looksSecret(name) ? '[REDACTED]' : JSON.stringify(got);
    return `${name}: ${issue.message}${detail} (got ${shown})`;
  });
  throw new ConfigError(problems);
}

function looksSecret(name: string): boolean {
  return /KEY|SECRET|TOKEN|PASSWORD/i.test(name);
}

// ---- reusable field types -------------------------------------------------------------

export const port = (fallback: number) => z.coerce.number().int().min(0).max(65535).default(fallback);
export const positiveInt = (fallback: number) => z.coerce.number().int().positive().default(fallback);
export const boolFlag = (fallback: boolean) =>
  z
    .enum(['1', '0', 'true', 'false', 'yes', 'no', 'on', 'off'])
    .transform((v) => v === '1' || v === 'true' || v === 'yes' || v === 'on')
    .default(fallback);
export const httpUrl = (fallback?: string) => {
  const s = z.string().refine((u) => /^https?:\/\//.test(u) && URL.canParse(u), 'must be an http(s) URL');
  return fallback === undefined ? s : s.default(fallback);
};
export const logLevel = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info');
/** Comma-separated `host:port` list, as Kafka clients take it. */
export const brokerList = z
  .string()
  .transform((s) => s.split(',').map((b) => b.trim()).filter(Boolean))
  .pipe(z.array(z.string().regex(/^[^\s:]+:\d+$/, 'each broker must be host:port')).min(1));

// ---- per-service schemas -------------------------------------------------------------

export const commonEnv = z.object({
  GLITCH_LOG_LEVEL: logLevel,
  GLITCH_DATA_DIR: z.string().default('.glitch'),
});

/** GLITCH_RECORDING_CPUS, parsed: `auto`, `off`, or the recording CPUs (sorted, unique). */
export type RecordingCpus = 'auto' | 'off' | readonly number[];

export const forwarderEnv = commonEnv.extend({
  GLITCH_HOST: z.string().default('127.0.0.1'),
  GLITCH_PORT: port(8787),
  GLITCH_ADMIN_HOST: z.string().default('127.0.0.1'),
  GLITCH_ADMIN_PORT: port(8788),
  GLITCH_UPSTREAM_URL: httpUrl('https://api.anthropic.com'),
  GLITCH_FORWARDER_THREADS: z.coerce.number().int().min(0).max(256).default(0), // 0 = one per core
  // Cap on upstream connections per process. HTTP/1.1: one per open stream, so this bounds
  // concurrent streams (queued beyond it) — keep it well above the fleet's peak.
  GLITCH_UPSTREAM_CONNECTIONS: positiveInt(8192),
  // `native`: Glitch's lean HTTP/1.1 client (default); `undici`: undici's Pool (fallback).
  GLITCH_UPSTREAM_CLIENT: z.enum(['native', 'undici']).default('native'),
  GLITCH_BODY_LIMIT_BYTES: positiveInt(32 * 1024 * 1024),
  GLITCH_HEADER_LIMIT_BYTES: positiveInt(64 * 1024),
  // Response body bytes kept in each record; the rest is relayed, counted and flagged truncated.
  GLITCH_RESPONSE_CAPTURE_LIMIT_BYTES: positiveInt(32 * 1024 * 1024),
  // Claude Code turns with extended thinking can take minutes before the first byte.
  GLITCH_FIRST_BYTE_TIMEOUT_MS: positiveInt(10 * 60_000),
  GLITCH_IDLE_TIMEOUT_MS: positiveInt(5 * 60_000),
  GLITCH_SHUTDOWN_GRACE_MS: positiveInt(30_000),
  GLITCH_KEYS_FILE: z.string().optional(),
  GLITCH_KAFKA_BROKERS: brokerList.optional(),
  GLITCH_REDIS_URL: z.string().regex(/^rediss?:\/\//, 'must be a redis:// URL').optional(),
  // Where records wait while the bus is unreachable (under GLITCH_DATA_DIR/spool), and what
  // happens when it is full: refuse new requests with 503, or drop the oldest records.
  GLITCH_SPOOL_MAX_BYTES: positiveInt(1024 * 1024 * 1024),
  GLITCH_SPOOL_WHEN_FULL: z.enum(['drop-oldest', 'refuse']).default('refuse'),
  // `idle`: every thread but the relay threads runs at SCHED_IDLE, so recording (and anything
  // else in the process) only uses CPU relaying leaves free; `normal`: all equal.
  GLITCH_RECORDING_PRIORITY: z.enum(['idle', 'normal']).default('idle'),
  // Which CPUs record, the relay threads running on the others: `auto` (the last CPU, from 2
  // CPUs on; GLITCH_FORWARDER_THREADS=0 then means one relay thread per remaining CPU), a CPU
  // list such as `3` or `6-7`, or `off` (every thread anywhere).
  GLITCH_RECORDING_CPUS: z
    .string()
    .trim()
    .transform((text, ctx): RecordingCpus => {
      if (text === 'auto' || text === 'off') return text;
      try {
        return parseCpuList(text);
      } catch {
        ctx.issues.push({ code: 'custom', input: text, message: 'must be auto, off, or a CPU list such as 3, 6-7 or 2,5 (ranges ascending)' });
        return z.NEVER;
      }
    })
    .default('auto'),
});
export type ForwarderConfig = z.output<typeof forwarderEnv>;

/** Where ClickHouse is: a server when GLITCH_CLICKHOUSE_URL is set, else chDB under the data dir. */
const clickhouseFields = {
  GLITCH_CLICKHOUSE_URL: httpUrl().optional(),
  GLITCH_CLICKHOUSE_DATABASE: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be a plain identifier').default('glitch'),
  /** Retention of raw exchanges, findings and security events (applied by migrate). */
  GLITCH_RETENTION_DAYS: positiveInt(90),
};

/** `glitch sql` and `glitch migrate`. */
export const storeEnv = commonEnv.extend(clickhouseFields);
export type StoreConfig = z.output<typeof storeEnv>;

export const ingestEnv = commonEnv.extend({
  ...clickhouseFields,
  GLITCH_KAFKA_BROKERS: brokerList.optional(),
  GLITCH_INGEST_GROUP: z.string().default('glitch-ingest'),
  GLITCH_INGEST_BATCH_ROWS: positiveInt(5_000),
  GLITCH_INGEST_BATCH_MS: positiveInt(1_000),
  GLITCH_INGEST_BATCH_BYTES: positiveInt(64 * 1024 * 1024),
  // /healthz and Prometheus /metrics of the ingest process (0 = any free port).
  GLITCH_INGEST_ADMIN_HOST: z.string().default('127.0.0.1'),
  GLITCH_INGEST_ADMIN_PORT: port(8789),
});
export type IngestConfig = z.output<typeof ingestEnv>;

/** `glitch up`: the all-in-one sensor (forwarder + recorder + ingest in one process). */
export const upEnv = forwarderEnv.extend({
  ...clickhouseFields,
  GLITCH_INGEST_BATCH_ROWS: positiveInt(5_000),
  GLITCH_INGEST_BATCH_MS: positiveInt(500),
});
export type UpConfig = z.output<typeof upEnv>;
