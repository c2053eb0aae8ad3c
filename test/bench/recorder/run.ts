// Recorder bench (not part of `npm test`; `npm run bench -- --suite=recorder`): CPU per record
// of each step the recording thread takes for one exchange, in this process, no I/O: complete
// the capture (SSE reassembly), then either the plain way (buildExchangeRecord: bodies
// decoded to strings, JSON.stringify, encoded back to UTF-8) or the publisher's way
// (encodeExchangeRecord), then gzip at level 1 as the Kafka bus does. Also the heap bytes
// each way allocates. Two request bodies: the pipeline bench's (one long padded message) and
// one shaped like Claude Code's (many messages and tool blocks, tool schemas).
//
//   npm run bench -- --suite=recorder --records=3000
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { gzipSync } from 'node:zlib';
import { completeCaptureNow, type RawCapture } from '@glitch/forwarder';
import { buildExchangeRecord, encodeExchangeRecord } from '@glitch/recorder';
import { repoRoot } from '../../support/forwarder.js';
import { messageBody } from '../../support/pipeline.js';
import { encodeEvent, messageEvents } from '../../support/sse.js';

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const RECORDS = Number(args.get('records') ?? 3000);

/** A request body shaped like Claude Code's: system prompt, tool schemas, a long tool-using conversation. */
function claudeCodeShapedBody(turns: number): Buffer {
  const tools = ['Bash', 'Read', 'Edit', 'Write', 'Grep', 'Glob', 'TodoWrite', 'WebFetch'].map((name) => ({
    name,
    description: `${name}: performs the ${name.toLowerCase()} operation on the user's workspace. Use it when the task needs it; prefer it over guessing. `.repeat(6),
    input_schema: { type: 'object', properties: { file_path: { type: 'string', description: 'The absolute path' }, offset: { type: 'number' }, limit: { type: 'number' } }, required: ['file_path'], additionalProperties: false, $schema: 'http://json-schema.org/draft-07/schema#' },
  }));
  const messages = Array.from({ length: turns }, (_, i) =>
    i % 2
      ? { role: 'assistant', content: [{ type: 'text', text: 'Let me look at that file — «ok» ✓' }, { type: 'tool_use', id: `toolu_${i}`, name: 'Read', input: { file_path: `/src/module-${i}.ts` } }] }
      : { role: 'user', content: [{ type: 'tool_result', tool_use_id: `toolu_${i - 1}`, content: '  1\texport function handler(req: Request) {\n  2\t  return new Response("ok");\n  3\t}\n'.repeat(4) }] },
  );
  return Buffer.from(
    JSON.stringify({
      model: 'claude-sonnet-4-6',
      messages,
      system: [{ type: 'text', text: 'You are Claude Code, an interactive CLI tool that helps users with software engineering tasks.' }],
      tools,
      metadata: { user_id: JSON.stringify({ device_id: 'ab'.repeat(32), account_uuid: 'acc', session_id: 'meta-session' }) },
      max_tokens: 32000,
      stream: true,
    }),
  );
}

const sse = Buffer.concat(messageEvents({ content: [{ type: 'text', text: 'Here is the change you asked for, with an explanation of each step.' }], inputTokens: 4000 }).map(encodeEvent));

function raw(requestBody: Buffer): RawCapture {
  return {
    exchangeId: '019ae6d4-1b2c-7def-8123-456789abcdef',
    tenantId: 'tenant-bench',
    keyId: 'key-bench',
    method: 'POST',
    path: '/v1/messages',
    query: 'beta=true',
    requestHeaders: [
      ['host', '127.0.0.1:8787'],
      ['content-type', 'application/json'],
      ['x-api-key', 'sk-ant-api03-bench'],
      ['x-glitch-key', '[REDACTED]'],
      ['anthropic-version', '2023-06-01'],
      ['x-claude-code-session-id', '9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d'],
      ['user-agent', 'claude-cli/2.1.0 (external, cli)'],
      ['content-length', String(requestBody.length)],
    ],
    requestBody,
    status: 200,
    responseSource: 'upstream',
    responseHeaders: [
      ['content-type', 'text/event-stream; charset=utf-8'],
      ['cache-control', 'no-cache'],
      ['request-id', 'req_011CbenchBenchBench'],
      ['anthropic-ratelimit-requests-limit', '4000'],
    ],
    responseBody: sse,
    responseBodyBytes: sse.length,
    responseBodyTruncated: false,
    timings: { receivedAt: Date.now(), dispatchedMs: 0.1, upstreamFirstByteMs: 1, doneMs: 2, addedOverheadMs: 0.1 },
    clientAborted: false,
    error: null,
  };
}

interface StepResult {
  /** µs of CPU per record (user + system; this process does nothing else meanwhile). */
  us: number;
  /** Garbage collections per 1,000 records, and the ms they took: how much garbage the step makes. */
  gcPer1000: number;
  gcMsPer1000: number;
}

/** Runs `step` RECORDS times (after a warm-up): CPU per call and the collections it caused. */
async function measure(step: (i: number) => void): Promise<StepResult> {
  for (let i = 0; i < Math.min(500, RECORDS); i++) step(i);
  await new Promise((r) => setImmediate(r));
  const gcs: number[] = [];
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcs.push(e.duration);
  });
  observer.observe({ entryTypes: ['gc'] });
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < RECORDS; i++) step(i);
  const cpu = process.cpuUsage(cpu0);
  await new Promise((r) => setTimeout(r, 10)); // gc entries are delivered asynchronously
  observer.disconnect();
  return { us: (cpu.user + cpu.system) / RECORDS, gcPer1000: (gcs.length * 1000) / RECORDS, gcMsPer1000: (gcs.reduce((a, b) => a + b, 0) * 1000) / RECORDS };
}

const shapes = [
  { name: 'pipeline bench body (16 KB, one padded message)', body: messageBody({ tag: 'bench', seq: 1, stream: true, padBytes: 16 * 1024 }) },
  { name: 'Claude Code-shaped body (~70 KB, 120 turns, 8 tools)', body: claudeCodeShapedBody(120) },
];

const PREFIX = 'glitch_body_bench_';
const results: Record<string, { requestBytes: number; recordBytes: number; steps: Record<string, StepResult> }> = {};
console.log(`[bench] recorder: ${cpus().length} cores, Node ${process.version}, ${RECORDS} records per step`);
for (const shape of shapes) {
  const captures = Array.from({ length: 8 }, () => raw(shape.body));
  const completed = captures.map((c) => completeCaptureNow(c)!);
  const plainBytes = Buffer.from(JSON.stringify(buildExchangeRecord(completed[0]!)));
  const encodedBytes = encodeExchangeRecord(completed[0]!, PREFIX).serialized;
  if (!plainBytes.equals(encodedBytes)) throw new Error('encodeExchangeRecord differs from the plain serialization');
  const steps: Record<string, StepResult> = {
    'complete capture (SSE reassembly)': await measure((i) => completeCaptureNow(captures[i % 8]!)),
    'plain: build record (bodies as strings)': await measure((i) => buildExchangeRecord(completed[i % 8]!)),
    'plain: build + JSON.stringify + UTF-8 encode': await measure((i) => Buffer.from(JSON.stringify(buildExchangeRecord(completed[i % 8]!)), 'utf8')),
    'encodeExchangeRecord (what the publisher does)': await measure((i) => encodeExchangeRecord(completed[i % 8]!, PREFIX)),
    'gzip level 1 of the record': await measure(() => gzipSync(plainBytes, { level: 1 })),
  };
  results[shape.name] = { requestBytes: shape.body.length, recordBytes: plainBytes.length, steps };
  console.log(`\n${shape.name}: request ${shape.body.length} B, record ${plainBytes.length} B`);
  console.log(`  ${'step'.padEnd(48)} ${'µs CPU'.padStart(8)} ${'GCs/1k'.padStart(8)} ${'GC ms/1k'.padStart(9)}`);
  for (const [name, st] of Object.entries(steps)) console.log(`  ${name.padEnd(48)} ${st.us.toFixed(1).padStart(8)} ${st.gcPer1000.toFixed(1).padStart(8)} ${st.gcMsPer1000.toFixed(1).padStart(9)}`);
}

const dir = join(repoRoot, 'test', 'bench', 'results');
mkdirSync(dir, { recursive: true });
const file = join(dir, `recorder-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
writeFileSync(file, JSON.stringify({ at: new Date().toISOString(), machine: { cores: cpus().length, node: process.version }, records: RECORDS, results }, null, 2) + '\n');
console.log(`\n[bench] results written to ${file}`);
