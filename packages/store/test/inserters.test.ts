// Typed inserters on the harness ClickHouse: exactly-once through the dedup token, replays
// collapse under FINAL, records round-trip byte for byte, and the usage rollup follows.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { bodyToBytes, ExchangeRecord } from '@glitch/records';
import {
  dedupToken,
  derivedUuid,
  exchangeFromRow,
  exchangeRow,
  insertExchanges,
  insertFindings,
  insertPolicyUpdates,
  insertSecurityEvents,
  insertedWatermarks,
  loadMigrations,
  migrate,
  securityEventsFromExchange,
  type ExchangeRow,
} from '@glitch/store';
import { clickhouse, type ClickHouseEnv } from '../../../test/harness/clickhouse.js';
import { bigBody, makeExchange, makeFinding, uuidv7 } from '../../../test/fixtures/exchange-records.js';

let ch: ClickHouseEnv;

before(async () => {
  ch = await clickhouse();
  console.log(`[store] clickhouse: ${ch.kind} — ${ch.description}`);
});

async function fresh(): Promise<void> {
  await ch.reset();
  await migrate(ch.client);
}

async function scalar(query: string): Promise<string> {
  const rs = await ch.client.query({ query, format: 'JSONEachRow' });
  const [row] = await rs.json<Record<string, unknown>>();
  return String(Object.values(row ?? {})[0]);
}

function batchOf(records: ExchangeRecord[], topic = 'glitch.exchanges.v1', partition = 0, firstOffset = 100) {
  return records.map((record, i) => ({ record, provenance: { topic, partition, offset: firstOffset + i } }));
}

test('the same batch inserted twice with the same token is stored once (rollup included)', async () => {
  await fresh();
  const batch = batchOf([makeExchange(), makeExchange(), makeExchange({ model: 'claude-opus-4-1-20250805' })]);
  const token = dedupToken('exchanges', [{ topic: 'glitch.exchanges.v1', partition: 0, firstOffset: 100, lastOffset: 102 }]);
  assert.equal(token, 'exchanges:glitch.exchanges.v1/0:100-102');
  const a = await insertExchanges(ch.client, batch, token);
  const b = await insertExchanges(ch.client, batch, token);
  assert.deepEqual(a, { table: 'exchanges', rows: 3, dedupToken: token });
  assert.equal(b.rows, 3);
  assert.equal(await scalar('SELECT count() FROM exchanges'), '3', 'plain count, no FINAL: the second insert added nothing');
  assert.equal(await scalar('SELECT sum(requests) FROM usage_hourly'), '3', 'the materialized view was deduplicated too');
  assert.equal(await scalar('SELECT sum(input_tokens) FROM usage_hourly'), '3000');
});

test('the rollup counts response bytes as upstream sent them: a truncated body in full, a stream as its events', async () => {
  await fresh();
  const events = 'event: message_start\ndata: {"type":"message_start"}\n\n'.repeat(10);
  const stream = makeExchange({ events });
  const truncated = makeExchange({ events: null, responseBody: 'x'.repeat(100), bodyTruncated: true, bodyWireBytes: 1_000_000 });
  const older = makeExchange({ events: null, responseBody: 'y'.repeat(40), bodyWireBytes: null }); // stored before wire bytes were recorded
  await insertExchanges(ch.client, batchOf([stream, truncated, older]), dedupToken('exchanges', [{ topic: 'glitch.exchanges.v1', partition: 0, firstOffset: 100, lastOffset: 102 }]));
  assert.equal(await scalar('SELECT sum(response_bytes) FROM usage_hourly'), String(Buffer.byteLength(events) + 1_000_000 + 40));
});

test('a replay under a different token stores a second copy that FINAL collapses', async () => {
  await fresh();
  const records = [makeExchange(), makeExchange()];
  await insertExchanges(ch.client, batchOf(records, 't', 0, 0), dedupToken('exchanges', [{ topic: 't', partition: 0, firstOffset: 0, lastOffset: 1 }]));
  // The same records at other offsets (e.g. re-published by a producer retry).
  await insertExchanges(ch.client, batchOf(records, 't', 0, 7), dedupToken('exchanges', [{ topic: 't', partition: 0, firstOffset: 7, lastOffset: 8 }]));
  assert.equal(await scalar('SELECT count() FROM exchanges'), '4');
  assert.equal(await scalar('SELECT count() FROM exchanges FINAL'), '2');
  assert.equal(await scalar('SELECT uniqExact(id) FROM exchanges FINAL'), '2');
  await ch.client.command({ query: 'OPTIMIZE TABLE exchanges FINAL' });
  assert.equal(await scalar('SELECT count() FROM exchanges'), '2', 'a merge removes the replayed copies');
});

test('records round-trip exactly: text and binary bodies, nulls, headers, findings', async () => {
  await fresh();
  const text = bigBody(300_000, 'text');
  const binary = bigBody(200_000, 'random');
  const records = [
    makeExchange({ requestBody: text, responseBody: binary, events: null }),
    makeExchange({
      sessionId: null,
      usage: null,
      status: 0,
      findings: [{ ruleId: 'secret.aws', severity: 'critical', action: 'block', message: 'AWS key leaving', location: 'request.messages[0].content[0]' }],
    }),
  ];
  records[1]!.error = { code: 'upstream_unreachable', message: 'connect ECONNREFUSED' };
  records[1]!.timings.upstreamFirstByteMs = null;
  records[1]!.model = null;
  await insertExchanges(ch.client, batchOf(records, 'topic-a', 3, 40), 'exchanges:roundtrip');
  const rs = await ch.client.query({ query: 'SELECT * FROM exchanges FINAL ORDER BY received_at, id', format: 'JSONEachRow' });
  const rows = await rs.json<ExchangeRow>();
  const back = rows.map(exchangeFromRow).sort((x, y) => records.findIndex((r) => r.id === x.record.id) - records.findIndex((r) => r.id === y.record.id));
  assert.deepEqual(
    back.map((b) => b.record),
    records,
  );
  assert.deepEqual(back.map((b) => b.provenance), [
    { topic: 'topic-a', partition: 3, offset: '40' },
    { topic: 'topic-a', partition: 3, offset: '41' },
  ]);
  assert.equal(records[0]!.request.body.encoding, 'utf8');
  assert.equal(records[0]!.response.body.encoding, 'base64');
  assert.ok(bodyToBytes(back[0]!.record.request.body).equals(text), 'text body byte-equal');
  assert.ok(bodyToBytes(back[0]!.record.response.body).equals(binary), 'binary body byte-equal');
});

test('response truncation: stored in its columns and read back; rows from before the migration read as not truncated', async () => {
  await ch.reset();
  // Schema as it was before 0006, with a row written then.
  await migrate(ch.client, { migrations: loadMigrations().filter((m) => m.version < 6) });
  const old = makeExchange({ responseBody: 'before' });
  const { response_body_truncated: _t, response_body_wire_bytes: _w, ...oldRow } = exchangeRow(old, { topic: 't', partition: 0, offset: 0 });
  await ch.client.insert({ table: 'exchanges', values: [oldRow], format: 'JSONEachRow' });
  const r = await migrate(ch.client);
  assert.deepEqual(r.applied, [6, 7]);

  const cut = makeExchange({ bodyTruncated: true, bodyWireBytes: 256 * 1024 * 1024 });
  const whole = makeExchange({ events: null, responseBody: '{"ok":true}' });
  await insertExchanges(ch.client, batchOf([cut, whole], 't', 0, 1), 'exchanges:truncation');
  const rs = await ch.client.query({
    query: 'SELECT toString(id) AS id, response_body_truncated, response_body_wire_bytes FROM exchanges ORDER BY kafka_offset',
    format: 'JSONEachRow',
  });
  assert.deepEqual(await rs.json(), [
    { id: old.id, response_body_truncated: false, response_body_wire_bytes: null },
    { id: cut.id, response_body_truncated: true, response_body_wire_bytes: String(256 * 1024 * 1024) },
    { id: whole.id, response_body_truncated: false, response_body_wire_bytes: '11' },
  ]);
  const all = await ch.client.query({ query: 'SELECT * FROM exchanges ORDER BY kafka_offset', format: 'JSONEachRow' });
  const back = (await all.json<ExchangeRow>()).map((row) => exchangeFromRow(row).record);
  // The old row reads back as an old message would parse: not truncated, size unknown.
  assert.deepEqual(back, [{ ...old, response: { ...old.response, bodyTruncated: false, bodyWireBytes: null } }, cut, whole]);
  for (const b of back) assert.ok(ExchangeRecord.safeParse(b).success);
});

test('invalid records are refused before anything is sent', async () => {
  await fresh();
  const bad = makeExchange();
  (bad as { tenantId: string }).tenantId = '';
  await assert.rejects(insertExchanges(ch.client, batchOf([makeExchange(), bad]), 'exchanges:bad'), /exchange record #1 is invalid: tenantId/);
  await assert.rejects(insertExchanges(ch.client, batchOf([makeExchange()]), ''), /dedup token is required/);
  assert.equal(await scalar('SELECT count() FROM exchanges'), '0');
});

test('security events, findings and policy updates: typed inserts, stable derived ids', async () => {
  await fresh();
  const ex = makeExchange({
    findings: [
      { ruleId: 'secret.private_key', severity: 'high', action: 'redact', message: 'private key', location: 'request.messages[2]' },
      { ruleId: 'tool.destructive', severity: 'critical', action: 'block', message: 'rm -rf /', location: 'response.content[1]' },
    ],
  });
  const events = securityEventsFromExchange(ex);
  assert.deepEqual(events.map((e) => e.id), [derivedUuid(`${ex.id}/inline/0`), derivedUuid(`${ex.id}/inline/1`)]);
  assert.deepEqual(securityEventsFromExchange(ex), events, 'the same exchange always yields the same events');
  assert.match(events[0]!.id, /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  const token = 'security_events:t/0:5-5';
  await insertSecurityEvents(ch.client, events.map((event) => ({ event, provenance: { topic: 't', partition: 0, offset: 5 } })), token);
  await insertSecurityEvents(ch.client, events.map((event) => ({ event, provenance: { topic: 't', partition: 0, offset: 5 } })), token);
  assert.equal(await scalar('SELECT count() FROM security_events'), '2');
  assert.equal(await scalar("SELECT rule_id FROM security_events WHERE action = 'block'"), 'tool.destructive');

  const finding = makeFinding(ex);
  await insertFindings(ch.client, [{ finding, provenance: { topic: 'f', partition: 1, offset: 9 } }], 'findings:f/1:9-9');
  assert.equal(await scalar(`SELECT toString(exchange_id) FROM findings WHERE id = '${finding.id}'`), ex.id);

  await insertPolicyUpdates(
    ch.client,
    [
      {
        update: {
          schemaVersion: 1,
          kind: 'policy_update',
          id: uuidv7(),
          version: 7,
          tenantId: 'acme',
          update: 'block_session',
          target: ex.sessionId!,
          ttlSeconds: 3600,
          reason: 'exfiltration',
          createdBy: 'exfil-judge',
          createdAt: Date.now(),
        },
      },
    ],
    'policy_updates:manual-1',
  );
  assert.equal(await scalar("SELECT concat(update, ' ', target, ' ', toString(kafka_partition)) FROM policy_updates"), `block_session ${ex.sessionId} -1`);
});

test('insertedWatermarks: the highest stored offset per partition of a topic', async () => {
  await fresh();
  await insertExchanges(ch.client, batchOf([makeExchange(), makeExchange()], 'wm', 0, 10), 'exchanges:wm/0:10-11');
  await insertExchanges(ch.client, batchOf([makeExchange()], 'wm', 2, 4), 'exchanges:wm/2:4-4');
  await insertExchanges(ch.client, batchOf([makeExchange()], 'other', 0, 99), 'exchanges:other/0:99-99');
  assert.deepEqual(
    [...(await insertedWatermarks(ch.client, 'exchanges', 'wm'))].sort(),
    [
      [0, 11n],
      [2, 4n],
    ],
  );
  assert.equal((await insertedWatermarks(ch.client, 'exchanges', 'nothing-here')).size, 0);
});

test('dedupToken is canonical and bounded', () => {
  const a = dedupToken('exchanges', [
    { topic: 'b', partition: 1, firstOffset: 5n, lastOffset: 9n },
    { topic: 'a', partition: 2, firstOffset: '1', lastOffset: '3' },
    { topic: 'a', partition: 0, firstOffset: 0, lastOffset: 0 },
  ]);
  assert.equal(a, 'exchanges:a/0:0-0,a/2:1-3,b/1:5-9');
  const many = Array.from({ length: 40 }, (_, p) => ({ topic: 'glitch.exchanges.v1', partition: p, firstOffset: 1_000_000, lastOffset: 2_000_000 }));
  assert.match(dedupToken('exchanges', many), /^exchanges:sha256:[0-9a-f]{64}$/);
  assert.equal(dedupToken('exchanges', many), dedupToken('exchanges', [...many].reverse()));
  assert.throws(() => dedupToken('exchanges', []), /at least one offset range/);
});
