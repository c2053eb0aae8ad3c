// Every saved query in docs/queries.md runs against seeded data on the harness ClickHouse
// (chDB here) and returns what it promises. Adding a query to the doc without adding its
// expectations here fails the test.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { sqlWith } from '@glitch/cli';
import { formatTable, insertExchanges, insertFindings, insertSecurityEvents, migrate, runStatements, securityEventsFromExchange, type QueryResult } from '@glitch/store';
import { clickhouse, type ClickHouseEnv } from '../../../test/harness/clickhouse.js';
import { makeExchange, makeFinding, messagesRequestBody } from '../../../test/fixtures/exchange-records.js';

const DOC = fileURLToPath(new URL('../../../docs/queries.md', import.meta.url));
let ch: ClickHouseEnv;

before(async () => {
  ch = await clickhouse();
  console.log(`[cli] clickhouse: ${ch.kind} — ${ch.description}`);
});

/** `## Title` → the first ```sql block under it. */
function savedQueries(markdown: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const section of markdown.split(/^## /m).slice(1)) {
    const title = section.slice(0, section.indexOf('\n')).trim();
    const m = /```sql\n([\s\S]*?)```/.exec(section);
    assert.ok(m, `saved query "${title}" has a sql block`);
    out.set(title, m[1]!.trim());
  }
  return out;
}

const SONNET = 'claude-sonnet-4-5-20250929';
const OPUS = 'claude-opus-4-1-20250805';
const S1 = '11111111-1111-4111-8111-111111111111';
const S2 = '22222222-2222-4222-8222-222222222222';
const S3 = '33333333-3333-4333-8333-333333333333';

async function seed(): Promise<void> {
  const e1 = makeExchange({ sessionId: S1, model: SONNET, requestBody: messagesRequestBody(SONNET, ['Bash', 'Read']) });
  const e2 = makeExchange({ sessionId: S1, model: SONNET, requestBody: messagesRequestBody(SONNET, ['Bash']) });
  const e3 = makeExchange({ sessionId: S1, model: SONNET });
  const e4 = makeExchange({
    sessionId: S2,
    model: SONNET,
    findings: [{ ruleId: 'secret.aws', severity: 'critical', action: 'block', message: 'AWS key leaving', location: 'request.messages[0]' }],
  });
  const e5 = makeExchange({
    tenantId: 'globex',
    sessionId: S3,
    model: OPUS,
    requestBody: messagesRequestBody(OPUS, ['Edit']),
    findings: [{ ruleId: 'inj.unicode_tags', severity: 'medium', action: 'log', message: 'invisible tags', location: 'request.messages[2]' }],
  });
  const e6 = makeExchange({
    sessionId: S2,
    model: 'mystery-model',
    status: 403,
    usage: null,
    responseBody: '{"type":"error","error":{"type":"permission_error","message":"session blocked by policy"},"request_id":"req_1"}',
  });
  const records = [e1, e2, e3, e4, e5, e6];
  await insertExchanges(ch.client, records.map((record, i) => ({ record, provenance: { topic: 'glitch.exchanges.v1', partition: 0, offset: i } })), 'exchanges:seed');
  await insertSecurityEvents(ch.client, records.flatMap((r) => securityEventsFromExchange(r).map((event) => ({ event }))), 'security_events:seed');
  await insertFindings(ch.client, [{ finding: makeFinding(e1, { severity: 'high', category: 'data_exfiltration' }) }], 'findings:seed');
}

type Row = Record<string, unknown>;
const rowsOf = (r: QueryResult): Row[] => r.rows.map((row) => Object.fromEntries(r.columns.map((c, i) => [c.name, row[i]])));
const pick = (rows: Row[], keys: string[]) => rows.map((r) => Object.fromEntries(keys.map((k) => [k, r[k]])));

const expectations: Record<string, (rows: Row[]) => void> = {
  'Usage and cost by tenant, model and day': (rows) => {
    assert.deepEqual(
      pick(rows, ['tenant_id', 'model', 'requests', 'input', 'priced', 'cost_usd']).sort((a, b) => String(a.model).localeCompare(String(b.model))),
      [
        // 1000 in + 200 out + 300 cache write + 5000 cache read per request, list prices.
        { tenant_id: 'globex', model: OPUS, requests: '1', input: '1000', priced: 1, cost_usd: 0.0431 },
        { tenant_id: 'acme', model: SONNET, requests: '4', input: '4000', priced: 1, cost_usd: 0.0345 },
        { tenant_id: 'acme', model: 'mystery-model', requests: '1', input: '0', priced: 0, cost_usd: 0 },
      ].sort((a, b) => a.model.localeCompare(b.model)),
    );
  },
  'Sessions with findings': (rows) => {
    assert.deepEqual(pick(rows, ['tenant_id', 'session_id', 'detector_findings', 'inline_findings', 'worst_severity', 'labels']), [
      { tenant_id: 'acme', session_id: S2, detector_findings: '0', inline_findings: '1', worst_severity: 'critical', labels: ['secret.aws'] },
      { tenant_id: 'acme', session_id: S1, detector_findings: '1', inline_findings: '0', worst_severity: 'high', labels: ['data_exfiltration'] },
      { tenant_id: 'globex', session_id: S3, detector_findings: '0', inline_findings: '1', worst_severity: 'medium', labels: ['inj.unicode_tags'] },
    ]);
  },
  'Blocked requests': (rows) => {
    assert.deepEqual(
      pick(rows, ['session_id', 'model', 'status', 'rules', 'reason']).sort((a, b) => Number(a.status) - Number(b.status)),
      [
        { session_id: S2, model: SONNET, status: 200, rules: ['secret.aws'], reason: 'AWS key leaving' },
        { session_id: S2, model: 'mystery-model', status: 403, rules: [], reason: 'session blocked by policy' },
      ],
    );
  },
  'Top tools used': (rows) => {
    assert.deepEqual(pick(rows, ['tenant_id', 'tool', 'calls', 'sessions']), [
      { tenant_id: 'acme', tool: 'Bash', calls: '2', sessions: '1' },
      { tenant_id: 'acme', tool: 'Read', calls: '1', sessions: '1' },
      { tenant_id: 'globex', tool: 'Edit', calls: '1', sessions: '1' },
    ]);
  },
};

test('every saved query in docs/queries.md runs and returns the expected rows', async () => {
  await ch.reset();
  await migrate(ch.client);
  await seed();
  const queries = savedQueries(readFileSync(DOC, 'utf8'));
  assert.deepEqual([...queries.keys()].sort(), Object.keys(expectations).sort(), 'each saved query has expectations here');
  for (const [title, sql] of queries) {
    const results = await runStatements(ch.client, sql);
    assert.equal(results.length, 1, `${title}: one statement`);
    try {
      expectations[title]!(rowsOf(results[0]!));
    } catch (e) {
      (e as Error).message = `saved query "${title}": ${(e as Error).message}\n${formatTable(results[0]!)}`;
      throw e;
    }
  }
});

test('glitch sql output: aligned columns, numbers right-aligned, NULLs and long cells readable', async () => {
  await ch.reset();
  const lines: string[] = [];
  await sqlWith(
    ch.client,
    "SELECT * FROM (SELECT 'acme' AS tenant, 12345 AS requests, NULL AS note UNION ALL SELECT 'globex-corp', 7, 'two\nlines') ORDER BY requests DESC; SELECT repeat('x', 500) AS body; CREATE TABLE t (a UInt8) ENGINE = Memory",
    (l) => lines.push(l),
    { maxCellWidth: 20 },
  );
  assert.equal(
    lines.join('\n'),
    [
      'tenant       requests  note',
      '-----------  --------  ----------',
      'acme            12345  NULL',
      'globex-corp         7  two\\nlines',
      '(2 rows)',
      '',
      'body',
      '--------------------',
      `${'x'.repeat(19)}…`,
      '(1 row)',
      '',
      'OK',
    ].join('\n'),
  );
});
