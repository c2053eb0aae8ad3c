// `glitch sql "<query>"`: runs SQL (one or more `;`-separated statements) against the
// Glitch database and prints each result as a column-aligned table. When `glitch up` is
// running with embedded chDB it holds the data dir's lock, so the query goes to it.
import { loadConfig, storeEnv } from '@glitch/config';
import { formatTable, openDatabase, runStatements, type ClickHouseClient, type FormatOptions, type QueryResult } from '@glitch/store';
import { readSensorFile } from './sensor-file.js';
import { storeTarget } from './store-target.js';

type Env = Readonly<Record<string, string | undefined>>;

export async function sql(env: Env, query: string, out: (line: string) => void): Promise<void> {
  const config = loadConfig(storeEnv, env);
  const target = storeTarget(config);
  const sensor = target.kind === 'chdb' ? readSensorFile(config.GLITCH_DATA_DIR) : undefined;
  if (sensor) {
    printResults(await viaSensor(sensor.sqlUrl, sensor.token, query), out);
    return;
  }
  const client = await openDatabase(target, config.GLITCH_CLICKHOUSE_DATABASE);
  try {
    await sqlWith(client, query, out);
  } finally {
    await client.close();
  }
}

async function viaSensor(url: string, token: string, query: string): Promise<QueryResult[]> {
  const res = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: query });
  const body = (await res.json()) as { results?: QueryResult[]; error?: string };
  if (!res.ok || !body.results) throw new Error(body.error ?? `the running sensor answered ${res.status}`);
  return body.results;
}

function printResults(results: QueryResult[], out: (line: string) => void, opts: FormatOptions = {}): void {
  results.forEach((r, i) => {
    if (i > 0) out('');
    out(formatTable(r, opts));
  });
}

/** The same against an open client (tests, embedded callers). */
export async function sqlWith(client: ClickHouseClient, query: string, out: (line: string) => void, opts: FormatOptions = {}): Promise<void> {
  printResults(await runStatements(client, query), out, opts);
}
