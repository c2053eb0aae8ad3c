// The one catalogue of Glitch's own errors. Every error Glitch answers or records has a
// stable code here; the HTTP status and Anthropic error type come from the code, so Claude
// Code and the SDKs show and retry them exactly like the API's own errors.

/** Error types the Anthropic API uses in `{"type":"error","error":{"type":…}}`. */
export type AnthropicErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'not_found_error'
  | 'request_too_large'
  | 'rate_limit_error'
  | 'api_error'
  | 'overloaded_error';

export interface ErrorSpec {
  /** HTTP status sent to the client (or, for record-only codes, the nearest meaning). */
  status: number;
  type: AnthropicErrorType;
  message: string;
  /** Seconds for a `retry-after` header: the SDKs (and so Claude Code) wait that long before retrying. */
  retryAfterSeconds?: number;
}

export const ERRORS = {
  auth_missing: { status: 401, type: 'authentication_error', message: 'Missing Glitch key: send it in the X-Glitch-Key header.' },
  auth_invalid: { status: 401, type: 'authentication_error', message: 'Invalid Glitch key.' },
  policy_blocked: { status: 403, type: 'permission_error', message: 'Request blocked by Glitch policy.' },
  malformed_request: { status: 400, type: 'invalid_request_error', message: 'Malformed request.' },
  body_too_large: { status: 413, type: 'request_too_large', message: 'Request body exceeds the size Glitch accepts.' },
  headers_too_large: { status: 431, type: 'request_too_large', message: 'Request headers exceed the size Glitch accepts.' },
  rate_limited: { status: 429, type: 'rate_limit_error', message: 'Glitch rate limit exceeded.' },
  upstream_connect_failed: { status: 502, type: 'api_error', message: 'Glitch could not connect to the upstream API.' },
  upstream_connection_lost: { status: 502, type: 'api_error', message: 'The upstream API closed the connection before responding.' },
  upstream_protocol_error: { status: 502, type: 'api_error', message: 'The upstream API sent an invalid HTTP response.' },
  upstream_first_byte_timeout: { status: 504, type: 'api_error', message: 'The upstream API did not start responding in time.' },
  /** Every upstream connection the forwarder may open is busy and none freed up in time. */
  upstream_pool_exhausted: { status: 503, type: 'overloaded_error', message: 'Glitch has no free upstream connection; try again shortly.', retryAfterSeconds: 2 },
  /** Record-only: headers were already relayed, so the client connection is closed instead. */
  upstream_stream_interrupted: { status: 502, type: 'api_error', message: 'The upstream API stream ended abnormally after the response started.' },
  /** Record-only: upstream went silent mid-body longer than the idle timeout. */
  upstream_idle_timeout: { status: 504, type: 'api_error', message: 'The upstream API stopped sending data.' },
  /** Record-only: the client went away; the upstream request was aborted. 499 as nginx logs it. */
  client_aborted: { status: 499, type: 'api_error', message: 'The client closed the connection.' },
  /** In-flight exchanges still open when the shutdown grace period ended. */
  shutdown_aborted: { status: 503, type: 'overloaded_error', message: 'Glitch is shutting down.' },
  /**
   * The record spool is full and the configured policy is to refuse traffic rather than
   * relay requests it cannot record: new authenticated requests are answered without
   * calling upstream until the spool drains.
   */
  record_spool_full: { status: 503, type: 'overloaded_error', message: 'Glitch cannot record new requests right now (record spool full); try again shortly.', retryAfterSeconds: 5 },
  /**
   * Recording cannot keep up (its CPU-bound backlog of captures is over its bound): new
   * authenticated requests are refused until it catches up, instead of relaying requests
   * whose records would be dropped.
   */
  record_backlog_full: { status: 503, type: 'overloaded_error', message: 'Glitch cannot record new requests right now (recording backlog full); try again shortly.', retryAfterSeconds: 2 },
  internal_error: { status: 500, type: 'api_error', message: 'Internal Glitch error.' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

export function isErrorCode(code: string): code is ErrorCode {
  return Object.hasOwn(ERRORS, code);
}

/**
 * Anthropic-shaped error body: `{"type":"error","error":{"type","message"},"request_id"}`.
 * Returned as bytes ready to write.
 */
export function errorBody(code: ErrorCode, requestId: string, message?: string): Buffer {
  const spec = ERRORS[code];
  return Buffer.from(
    JSON.stringify({ type: 'error', error: { type: spec.type, message: message ?? spec.message }, request_id: requestId }),
    'utf8',
  );
}

/** A Glitch error as it appears in an exchange record. */
export interface GlitchError {
  code: ErrorCode;
  message: string;
}

export function glitchError(code: ErrorCode, message?: string): GlitchError {
  return { code, message: message ?? ERRORS[code].message };
}
