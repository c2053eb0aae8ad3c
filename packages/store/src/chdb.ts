// chDB behind @clickhouse/client, made safe to share. chdb/connection applies each call's
// `clickhouse_settings` as session-level `SET` statements, so a setting outlives its call:
// an insert_deduplication_token set for one batch would silently deduplicate (drop) the
// next batch. This wrapper runs calls one at a time and resets every per-call setting to
// DEFAULT afterwards, so chDB behaves like the stateless HTTP server.
import type { createClient } from '@clickhouse/client';
import { createRequire } from 'node:module';
import type { Readable } from 'node:stream';

type Connection = NonNullable<NonNullable<Parameters<typeof createClient>[0]>['connection']>;
type Settings = Record<string, unknown> | undefined;

export const CHDB_INSTALL_HINT =
  'chDB ships with the npm package `chdb` (prebuilt @chdb/lib-linux-x64-gnu); run `npm test` or `node scripts/build.mjs` to install workspace dependencies';

// Settings clickhouse-js sends that chdb/connection drops; nothing to reset for them.
const NOT_APPLIED = new Set(['wait_end_of_query', 'send_progress_in_http_headers', 'http_response_buffer_size', 'http_headers_progress_interval_ms', 'http_send_progress_interval_ms', 'enable_http_compression', 'http_zlib_compression_level', 'http_response_compression_method', 'http_native_compression_disable_checksumming_on_decompress', 'default_format']);

// Session defaults that match a ClickHouse server's HTTP interface, so results have the
// same shape whichever backend answered (64-bit integers as JSON strings).
const SERVER_PARITY_SETTINGS = ['SET output_format_json_quote_64bit_integers = 1'];

export function createSerializedChdbConnection(path: string): Connection {
  let inner: Connection;
  try {
    const mod = createRequire(import.meta.url)('chdb/connection') as { createChdbConnection(o: { path: string }): Connection };
    inner = mod.createChdbConnection({ path });
  } catch (e) {
    throw new Error(`cannot load chDB (${(e as Error).message}); ${CHDB_INSTALL_HINT}`);
  }
  let tail: Promise<unknown> = (async () => {
    for (const sql of SERVER_PARITY_SETTINGS) await inner.command({ query: sql, query_id: 'glitch-init' } as Parameters<Connection['command']>[0]);
  })();

  function serialized<P extends { clickhouse_settings?: Settings }, R>(call: (p: P) => Promise<R>) {
    return (params: P): Promise<R> => {
      const run = tail.then(async () => {
        try {
          return await call(params);
        } finally {
          const keys = Object.keys(params.clickhouse_settings ?? {}).filter((k) => !NOT_APPLIED.has(k) && /^[A-Za-z_][A-Za-z0-9_]*$/.test(k));
          if (keys.length) {
            await inner.command({ query: keys.map((k) => `SET ${k} = DEFAULT`).join('; '), query_id: 'glitch-reset' } as Parameters<Connection['command']>[0]);
            // Re-apply parity defaults in case a call overrode one of them.
            for (const sql of SERVER_PARITY_SETTINGS) await inner.command({ query: sql, query_id: 'glitch-init' } as Parameters<Connection['command']>[0]);
          }
        }
      });
      tail = run.catch(() => undefined);
      return run;
    };
  }

  const wrapped: Connection = {
    ping: (p) => inner.ping(p),
    query: serialized((p) => inner.query(p)),
    insert: serialized((p: Parameters<Connection['insert']>[0]) => inner.insert(p)),
    command: serialized((p) => inner.command(p)),
    exec: serialized((p: Parameters<Connection['exec']>[0]) => inner.exec(p)),
    close: async () => {
      await tail;
      await inner.close();
    },
  };
  return wrapped as Connection & { readonly __stream?: Readable };
}
