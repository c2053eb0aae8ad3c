// The ingest process's admin port: liveness, and its counters in Prometheus text format,
// so an operator (or a test) can see progress without reaching into ClickHouse.
import type { Ingest } from '@glitch/ingest';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface IngestAdmin {
  url: string;
  close(): Promise<void>;
}

export function ingestMetrics(ingest: Ingest): string {
  const s = ingest.stats();
  const lines: string[] = [];
  const metric = (name: string, type: 'counter' | 'gauge', help: string, value: number) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name} ${value}`);
  };
  metric('glitch_ingest_messages_received_total', 'counter', 'Messages the bus delivered (a chunked record counts once).', s.received);
  metric('glitch_ingest_exchanges_inserted_total', 'counter', 'Exchange rows ClickHouse acknowledged.', s.exchangesInserted);
  metric('glitch_ingest_security_events_inserted_total', 'counter', 'Security event rows ClickHouse acknowledged.', s.securityEventsInserted);
  metric('glitch_ingest_findings_inserted_total', 'counter', 'Finding rows ClickHouse acknowledged.', s.findingsInserted);
  metric('glitch_ingest_dead_lettered_total', 'counter', 'Poison messages sent to the dead-letter topic.', s.deadLettered);
  metric('glitch_ingest_replayed_skipped_total', 'counter', 'Redelivered messages skipped because ClickHouse already held them.', s.skippedReplayed);
  metric('glitch_ingest_batches_flushed_total', 'counter', 'Batches inserted into ClickHouse.', s.batchesFlushed);
  metric('glitch_ingest_clickhouse_failures_total', 'counter', 'Failed ClickHouse calls (each retried after a back-off).', s.clickhouseFailures);
  metric('glitch_ingest_paused', 'gauge', '1 while ClickHouse is failing and consumption is held.', s.paused ? 1 : 0);
  metric('glitch_ingest_commits_total', 'counter', 'Offset commits to the bus.', s.bus.commits);
  metric('glitch_ingest_chunk_sets_dropped_total', 'counter', 'Incomplete chunked records dropped with a reason.', s.bus.chunkSetsDropped);
  return lines.join('\n') + '\n';
}

export async function startIngestAdmin(ingest: Ingest, host: string, port: number): Promise<IngestAdmin> {
  const server = createServer((req, res) => {
    if (req.url === '/healthz') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: true, paused: ingest.stats().paused }));
    } else if (req.url === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(ingestMetrics(ingest));
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const { port: bound } = server.address() as AddressInfo;
  return {
    url: `http://${host}:${bound}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
