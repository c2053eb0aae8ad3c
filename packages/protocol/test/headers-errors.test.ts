import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  DROPPED_REQUEST_HEADERS,
  ERRORS,
  HEADER_DROP,
  HEADER_KEEP,
  HEADER_NARROW_ENCODING,
  HEADER_VERSION,
  HOP_BY_HOP_HEADERS,
  requestHeaderAction,
  clientResponseHeaders,
  errorBody,
  glitchError,
  isErrorCode,
  narrowAcceptEncoding,
  upstreamRequestHeaders,
  type ErrorCode,
} from '../src/index.js';

describe('upstreamRequestHeaders', () => {
  // What Claude Code sends (names lower-cased, as uWS delivers them).
  const claudeCode = [
    'host', '127.0.0.1:8787',
    'connection', 'keep-alive',
    'accept', 'application/json',
    'x-stainless-retry-count', '0',
    'x-api-key', 'sk-ant-api03-secret',
    'x-claude-code-session-id', '3c9c1d36-5b1e-4c52-9c3e-6f1e0c7d1a2b',
    'x-glitch-key', 'glitch_sk_abc',
    'anthropic-beta', 'claude-code-20250219,oauth-2025-04-20,interleaved-thinking-2025-05-14',
    'anthropic-version', '2023-06-01',
    'x-app', 'cli',
    'accept-encoding', 'gzip, deflate, br, zstd',
    'content-type', 'application/json',
    'content-length', '48211',
  ];

  it('drops hop-by-hop, host, content-length and x-glitch-key; keeps the rest in order', () => {
    assert.deepEqual(upstreamRequestHeaders(claudeCode), [
      'accept', 'application/json',
      'x-stainless-retry-count', '0',
      'x-api-key', 'sk-ant-api03-secret',
      'x-claude-code-session-id', '3c9c1d36-5b1e-4c52-9c3e-6f1e0c7d1a2b',
      'anthropic-beta', 'claude-code-20250219,oauth-2025-04-20,interleaved-thinking-2025-05-14',
      'anthropic-version', '2023-06-01',
      'x-app', 'cli',
      'accept-encoding', 'gzip, deflate, br',
      'content-type', 'application/json',
    ]);
  });

  it('never forwards X-Glitch-Key in any case', () => {
    const out = upstreamRequestHeaders(['X-Glitch-Key', 'glitch_sk_1', 'x-GLITCH-key', 'glitch_sk_2', 'anthropic-version', '2023-06-01']);
    assert.deepEqual(out, ['anthropic-version', '2023-06-01']);
  });

  it('adds anthropic-version only when absent and never changes a given one', () => {
    assert.deepEqual(upstreamRequestHeaders(['authorization', 'Bearer sk-ant-oat01-x']), ['authorization', 'Bearer sk-ant-oat01-x', 'anthropic-version', '2023-06-01']);
    assert.deepEqual(upstreamRequestHeaders(['Anthropic-Version', '2099-01-01']), ['Anthropic-Version', '2099-01-01']);
  });

  it('leaves Authorization and x-api-key untouched', () => {
    const h = ['authorization', 'Bearer sk-ant-oat01-AbC', 'x-api-key', 'sk-ant-api03-XyZ', 'anthropic-version', '2023-06-01'];
    assert.deepEqual(upstreamRequestHeaders(h), h);
  });

  it('drops every hop-by-hop header and the ones Connection names', () => {
    const h = [
      'connection', 'keep-alive, X-Trace-Hop',
      'keep-alive', 'timeout=5',
      'proxy-connection', 'keep-alive',
      'proxy-authorization', 'Basic x',
      'te', 'trailers',
      'trailer', 'x-foo',
      'transfer-encoding', 'chunked',
      'upgrade', 'websocket',
      'expect', '100-continue',
      'x-trace-hop', '1',
      'x-kept', 'yes',
      'anthropic-version', '2023-06-01',
    ];
    assert.deepEqual(upstreamRequestHeaders(h), ['x-kept', 'yes', 'anthropic-version', '2023-06-01']);
  });

  it('keeps anthropic-version even when Connection names it, and adds no second one', () => {
    assert.deepEqual(upstreamRequestHeaders(['connection', 'anthropic-version', 'anthropic-version', '2023-06-01']), ['anthropic-version', '2023-06-01']);
  });
});

describe('narrowAcceptEncoding', () => {
  const cases: Array<[string, string]> = [
    ['gzip, deflate, br, zstd', 'gzip, deflate, br'],
    ['zstd', 'identity'],
    ['br;q=1.0, zstd;q=0.9, gzip;q=0.5', 'br;q=1.0, gzip;q=0.5'],
    ['*', 'identity'],
    ['gzip, *;q=0.1', 'gzip'],
    ['identity', 'identity'],
    ['GZIP,Deflate', 'GZIP, Deflate'],
    ['', 'identity'],
  ];
  for (const [input, want] of cases) it(`${JSON.stringify(input)} → ${JSON.stringify(want)}`, () => assert.equal(narrowAcceptEncoding(input), want));
});

describe('clientResponseHeaders', () => {
  it('drops hop-by-hop, content-length, date and Connection-named headers; keeps case and order', () => {
    const h = [
      'Date', 'Mon, 01 Jan 2026 00:00:00 GMT',
      'Content-Type', 'text/event-stream; charset=utf-8',
      'Transfer-Encoding', 'chunked',
      'Connection', 'keep-alive, X-Hop',
      'Keep-Alive', 'timeout=5',
      'X-Hop', '1',
      'request-id', 'req_011CAbc',
      'anthropic-ratelimit-requests-remaining', '3999',
      'Content-Encoding', 'gzip',
      'Content-Length', '99',
    ];
    assert.deepEqual(clientResponseHeaders(h), [
      'Content-Type', 'text/event-stream; charset=utf-8',
      'request-id', 'req_011CAbc',
      'anthropic-ratelimit-requests-remaining', '3999',
      'Content-Encoding', 'gzip',
    ]);
  });
});

describe('requestHeaderAction', () => {
  it('drops exactly the hop-by-hop and relay-owned request headers', () => {
    for (const name of [...HOP_BY_HOP_HEADERS, ...DROPPED_REQUEST_HEADERS]) assert.equal(requestHeaderAction(name), HEADER_DROP, name);
    assert.equal(requestHeaderAction('accept-encoding'), HEADER_NARROW_ENCODING);
    assert.equal(requestHeaderAction('anthropic-version'), HEADER_VERSION);
    // Same lengths as dropped names, but ordinary headers.
    for (const name of ['x-api-key', 'ab', 'hosts', 'expect!', 'trailers', 'connectio2', 'x-glitch-kez', 'content-lengtx', 'anthropic-betaaa', 'authorization', 'x-stainless-os', 'user-agent']) {
      assert.equal(requestHeaderAction(name), HEADER_KEEP, name);
    }
  });
});

describe('error catalogue', () => {
  const anthropicTypes = new Set(['invalid_request_error', 'authentication_error', 'permission_error', 'not_found_error', 'request_too_large', 'rate_limit_error', 'api_error', 'overloaded_error']);

  it('maps every code to a status, an Anthropic error type and a message', () => {
    for (const [code, spec] of Object.entries(ERRORS)) {
      assert.match(code, /^[a-z][a-z_]+$/, code);
      assert.ok(Number.isInteger(spec.status) && spec.status >= 400 && spec.status <= 599, `${code} status`);
      assert.ok(anthropicTypes.has(spec.type), `${code} type ${spec.type}`);
      assert.ok(spec.message.length > 0, `${code} message`);
      assert.ok(isErrorCode(code));
      const retry = (spec as { retryAfterSeconds?: number }).retryAfterSeconds;
      assert.ok(retry === undefined || (Number.isInteger(retry) && retry > 0), `${code} retryAfterSeconds`);
    }
    assert.equal(isErrorCode('toString'), false);
  });

  it('keeps the statuses the wire contract promises', () => {
    const want: Partial<Record<ErrorCode, [number, string]>> = {
      auth_missing: [401, 'authentication_error'],
      auth_invalid: [401, 'authentication_error'],
      policy_blocked: [403, 'permission_error'],
      body_too_large: [413, 'request_too_large'],
      rate_limited: [429, 'rate_limit_error'],
      malformed_request: [400, 'invalid_request_error'],
      upstream_connect_failed: [502, 'api_error'],
      upstream_first_byte_timeout: [504, 'api_error'],
      upstream_pool_exhausted: [503, 'overloaded_error'],
      record_spool_full: [503, 'overloaded_error'],
      record_backlog_full: [503, 'overloaded_error'],
    };
    for (const [code, [status, type]] of Object.entries(want)) {
      assert.equal(ERRORS[code as ErrorCode].status, status, code);
      assert.equal(ERRORS[code as ErrorCode].type, type, code);
    }
  });

  it('renders the Anthropic error shape', () => {
    const body = JSON.parse(errorBody('auth_invalid', 'req-1').toString('utf8'));
    assert.deepEqual(body, { type: 'error', error: { type: 'authentication_error', message: ERRORS.auth_invalid.message }, request_id: 'req-1' });
    assert.deepEqual(Object.keys(body), ['type', 'error', 'request_id']);
    const custom = JSON.parse(errorBody('upstream_connect_failed', 'r', 'nope "quoted"').toString('utf8'));
    assert.equal(custom.error.message, 'nope "quoted"');
    assert.deepEqual(glitchError('body_too_large'), { code: 'body_too_large', message: ERRORS.body_too_large.message });
  });
});
