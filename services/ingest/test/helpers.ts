// Shared by the ingest tests: waiting, counting, reading records back. Fault injection:
// test/support/faulty-clickhouse.ts.
import assert from 'node:assert/strict';
import type { ExchangeRecord } from '@glitch/records';
import { exchangeFromRow, type ClickHouseClient, type ExchangeRow } from '@glitch/store';

/** Resolves when `cond()` holds; rejects after `ms` with `what` and the current `detail()`. */
export async function waitFor(cond: () => boolean | Promise<boolean>, ms: number, what: string, detail?: () => unknown): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}${detail ? `; state: ${JSON.stringify(detail())}` : ''}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export async function scalar(client: ClickHouseClient, query: string): Promise<number> {
  const rs = await client.query({ query, format: 'JSONEachRow' });
  const [row] = await rs.json<Record<string, unknown>>();
  return Number(Object.values(row ?? {})[0]);
}

/** Asserts each record is stored exactly once (no FINAL needed) and reads back identical. */
export async function assertStoredExactlyOnce(client: ClickHouseClient, records: readonly ExchangeRecord[]): Promise<void> {
  assert.equal(await scalar(client, 'SELECT count() FROM exchanges'), records.length, 'rows in exchanges (plain count: no duplicates)');
  assert.equal(await scalar(client, 'SELECT count() FROM exchanges FINAL'), records.length, 'rows in exchanges FINAL');
  assert.equal(await scalar(client, 'SELECT sum(requests) FROM usage_hourly'), records.length, 'requests in the usage rollup');
  const rs = await client.query({ query: 'SELECT * FROM exchanges', format: 'JSONEachRow' });
  const stored = new Map((await rs.json<ExchangeRow>()).map((r) => [r.id, exchangeFromRow(r).record]));
  for (const r of records) {
    const back = stored.get(r.id);
    assert.ok(back, `record ${r.id} stored`);
    // Whole-record equality: bodies (and their encodings and sizes) are byte-for-byte equal.
    assert.deepEqual(back, r, `record ${r.id} reads back identical`);
  }
}
