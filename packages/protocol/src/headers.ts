// Header rules of the relay. Headers pass verbatim except: hop-by-hop headers (RFC 9110
// §7.6.1, plus any named in `Connection`), Glitch's own credential, the framing headers the
// two HTTP stacks regenerate, `anthropic-version` (added only when absent) and
// `accept-encoding` (narrowed to what Node can decode, so records can hold decoded bodies).
//
// Header lists are flat arrays `[name, value, name, value, …]`, the shape both uWS
// (`forEach`) and undici (`headers: string[]`) work with, so the hot path allocates once.

export const GLITCH_KEY_HEADER = 'x-glitch-key';
export const ANTHROPIC_VERSION_HEADER = 'anthropic-version';
export const DEFAULT_ANTHROPIC_VERSION = '2023-06-01';

/** Connection-scoped headers: never forwarded in either direction. */
export const HOP_BY_HOP_HEADERS: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/**
 * Request headers the forwarder does not pass on besides hop-by-hop ones:
 * - `x-glitch-key`: Glitch's own credential, never sent upstream;
 * - `host`: names the forwarder; the upstream client sets the upstream's host;
 * - `content-length`: the upstream client recomputes it from the (identical) body bytes;
 * - `expect`: 100-continue is answered by the forwarder's own HTTP server.
 */
export const DROPPED_REQUEST_HEADERS: ReadonlySet<string> = new Set([GLITCH_KEY_HEADER, 'host', 'content-length', 'expect']);

/**
 * Response headers the forwarder does not copy besides hop-by-hop ones: the client-side
 * HTTP server writes its own `content-length` (same value) or chunked framing, and `date`.
 */
const DROPPED_RESPONSE_HEADERS: ReadonlySet<string> = new Set(['content-length', 'date']);

/** Content codings Node's zlib decodes (no zstd in Node 20). */
export const DECODABLE_ENCODINGS: ReadonlySet<string> = new Set(['gzip', 'x-gzip', 'deflate', 'br', 'identity']);

/** Header names listed in a `Connection` header value (lower-cased), e.g. `close, x-foo`. */
export function connectionTokens(value: string): string[] {
  const out: string[] = [];
  for (const part of value.split(',')) {
    const t = part.trim().toLowerCase();
    if (t) out.push(t);
  }
  return out;
}

let lastAcceptIn = '';
let lastAcceptOut = '';

/**
 * Keeps only codings the forwarder can decode for the record, in the client's order with
 * their q-values: `gzip, deflate, br, zstd` → `gzip, deflate, br`. `*` is dropped (it would
 * let upstream pick zstd). When nothing is left the answer is `identity`.
 */
export function narrowAcceptEncoding(value: string): string {
  // Every Claude Code request carries the same value: remember the last answer.
  if (value === lastAcceptIn) return lastAcceptOut;
  const kept: string[] = [];
  for (const part of value.split(',')) {
    const token = part.trim();
    if (!token) continue;
    const semi = token.indexOf(';');
    const coding = (semi === -1 ? token : token.slice(0, semi)).trim().toLowerCase();
    if (DECODABLE_ENCODINGS.has(coding)) kept.push(token);
  }
  const out = kept.length ? kept.join(', ') : 'identity';
  lastAcceptIn = value;
  lastAcceptOut = out;
  return out;
}

/** What the relay does with a request header: see {@link requestHeaderAction}. */
export const HEADER_KEEP = 0;
export const HEADER_DROP = 1;
/** `accept-encoding`: narrowed with {@link narrowAcceptEncoding}. */
export const HEADER_NARROW_ENCODING = 2;
/** `anthropic-version`: kept; its presence means no default is added. */
export const HEADER_VERSION = 3;
export type RequestHeaderAction = typeof HEADER_KEEP | typeof HEADER_DROP | typeof HEADER_NARROW_ENCODING | typeof HEADER_VERSION;

/**
 * The rule for one request header (lower-case name; `Connection`-listed names aside). The
 * hot path calls this for every header of every request: a switch on the length picks the
 * one or two names to compare, so no string is hashed.
 */
export function requestHeaderAction(lowerName: string): RequestHeaderAction {
  switch (lowerName.length) {
    case 2:
      return lowerName === 'te' ? HEADER_DROP : HEADER_KEEP;
    case 4:
      return lowerName === 'host' ? HEADER_DROP : HEADER_KEEP;
    case 6:
      return lowerName === 'expect' ? HEADER_DROP : HEADER_KEEP;
    case 7:
      return lowerName === 'trailer' || lowerName === 'upgrade' ? HEADER_DROP : HEADER_KEEP;
    case 10:
      return lowerName === 'connection' || lowerName === 'keep-alive' ? HEADER_DROP : HEADER_KEEP;
    case 12:
      return lowerName === GLITCH_KEY_HEADER ? HEADER_DROP : HEADER_KEEP;
    case 14:
      return lowerName === 'content-length' ? HEADER_DROP : HEADER_KEEP;
    case 15:
      return lowerName === 'accept-encoding' ? HEADER_NARROW_ENCODING : HEADER_KEEP;
    case 16:
      return lowerName === 'proxy-connection' ? HEADER_DROP : HEADER_KEEP;
    case 17:
      return lowerName === 'transfer-encoding' ? HEADER_DROP : lowerName === ANTHROPIC_VERSION_HEADER ? HEADER_VERSION : HEADER_KEEP;
    case 18:
      return lowerName === 'proxy-authenticate' ? HEADER_DROP : HEADER_KEEP;
    case 19:
      return lowerName === 'proxy-authorization' ? HEADER_DROP : HEADER_KEEP;
    default:
      return HEADER_KEEP;
  }
}

/** Extra hop-by-hop names a message declares in its `Connection` header, if any. */
function droppedByConnection(headers: readonly string[]): Set<string> | null {
  let tokens: Set<string> | null = null;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    if (name.length === 10 && name.toLowerCase() === 'connection') {
      for (const t of connectionTokens(headers[i + 1]!)) (tokens ??= new Set()).add(t);
    }
  }
  return tokens;
}

/**
 * The headers to send upstream for the headers a client sent (flat list, names in any
 * case). Order and values are kept; see the module comment for what changes.
 */
export function upstreamRequestHeaders(received: readonly string[]): string[] {
  const listed = droppedByConnection(received);
  const out: string[] = [];
  let hasVersion = false;
  for (let i = 0; i < received.length; i += 2) {
    const raw = received[i]!;
    const name = raw.toLowerCase();
    const action = requestHeaderAction(name);
    // A Connection-listed anthropic-version is kept: the API version is never left to chance.
    if (action === HEADER_DROP || (listed?.has(name) && action !== HEADER_VERSION)) continue;
    let value = received[i + 1]!;
    if (action === HEADER_NARROW_ENCODING) value = narrowAcceptEncoding(value);
    else if (action === HEADER_VERSION) hasVersion = true;
    out.push(raw, value);
  }
  if (!hasVersion) out.push(ANTHROPIC_VERSION_HEADER, DEFAULT_ANTHROPIC_VERSION);
  return out;
}

/** Whether a response header (lower-case name) is copied to the client. */
export function isRelayedResponseHeader(lowerName: string): boolean {
  return !HOP_BY_HOP_HEADERS.has(lowerName) && !DROPPED_RESPONSE_HEADERS.has(lowerName);
}

/** The response headers the client receives for what upstream sent (flat list). */
export function clientResponseHeaders(received: readonly string[]): string[] {
  const listed = droppedByConnection(received);
  const out: string[] = [];
  for (let i = 0; i < received.length; i += 2) {
    const name = received[i]!.toLowerCase();
    if (isRelayedResponseHeader(name) && !listed?.has(name)) out.push(received[i]!, received[i + 1]!);
  }
  return out;
}

/** First value of `name` (lower-case) in a flat list, or undefined. */
export function headerValue(headers: readonly string[], name: string): string | undefined {
  for (let i = 0; i < headers.length; i += 2) if (headers[i]!.toLowerCase() === name) return headers[i + 1];
  return undefined;
}
