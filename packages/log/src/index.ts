// Structured logging (pino) with secrets scrubbed before anything reaches a sink.
import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';

export type { Logger };

export const REDACTED = '[REDACTED]';

/** Header names whose values are credentials. Compared lower-case. */
export const SECRET_HEADERS: ReadonlySet<string> = new Set([
  'authorization',
  'proxy-authorization',
  'x-api-key',
  'x-glitch-key',
  'cookie',
  'set-cookie',
  'x-amz-security-token',
]);

// Token shapes that must never appear in logs even when they leak into free text
// (an error message echoing a header, a URL with a key in it).
const SECRET_VALUE_PATTERNS: readonly RegExp[] = [
  /\bsk-ant-[A-Za-z0-9_-]{8,}/g, // Anthropic API keys and OAuth tokens (sk-ant-api03-, sk-ant-oat01-)
  /\bglitch_(?:sk|tk)_[A-Za-z0-9_-]{6,}/g, // Glitch tenant keys and short-lived tokens
  /\bBearer\s+[A-Za-z0-9._~+/=-]{8,}/g,
  /\b(?:AKIA|ASIA)[A-Z0-9]{16}\b/g, // AWS access key ids
];

/** Replaces every credential-looking substring with [REDACTED]. */
export function redactText(text: string): string {
  let out = text;
  for (const re of SECRET_VALUE_PATTERNS) out = out.replace(re, REDACTED);
  return out;
}

type HeaderValue = string | readonly string[] | undefined;

/** Copy of `headers` with secret header values replaced; names keep their original case. */
export function redactHeaders(headers: Readonly<Record<string, HeaderValue>>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    if (SECRET_HEADERS.has(name.toLowerCase())) out[name] = REDACTED;
    else out[name] = typeof value === 'string' ? redactText(value) : value.map(redactText);
  }
  return out;
}

function scrubDeep(value: unknown, depth: number): unknown {
  if (typeof value === 'string') return redactText(value);
  if (depth > 6 || value === null || typeof value !== 'object') return value;
  if (value instanceof Error) {
    return { type: value.name, message: redactText(value.message), stack: value.stack ? redactText(value.stack) : undefined, code: (value as { code?: unknown }).code };
  }
  if (Array.isArray(value)) return value.map((v) => scrubDeep(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    out[k] = SECRET_HEADERS.has(k.toLowerCase()) || /^(api_?key|secret|password|token)$/i.test(k) ? REDACTED : scrubDeep(v, depth + 1);
  }
  return out;
}

export interface LogOptions {
  name: string;
  level?: LoggerOptions['level'];
  /** Defaults to stdout; tests pass a stream to capture output. */
  destination?: DestinationStream;
  base?: Record<string, unknown>;
}

/**
 * Creates a logger whose every object and message is scrubbed: secret header names at
 * any depth become [REDACTED], and token-shaped substrings in any string are replaced.
 */
export function createLogger(opts: LogOptions): Logger {
  const options: LoggerOptions = {
    name: opts.name,
    level: opts.level ?? 'info',
    base: { pid: process.pid, ...opts.base },
    formatters: {
      log: (obj) => scrubDeep(obj, 0) as Record<string, unknown>,
    },
    hooks: {
      logMethod(args, method) {
        const scrubbed = args.map((a) => (typeof a === 'string' ? redactText(a) : a)) as Parameters<typeof method>;
        method.apply(this, scrubbed);
      },
    },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return opts.destination ? pino(options, opts.destination) : pino(options);
}
