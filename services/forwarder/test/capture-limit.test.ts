// The response capture limit: past it the relay keeps relaying (and counting) every byte but
// stops copying into the capture, and the capture says it was truncated. Relay threads are
// started directly (startForwarder has no option for the limit), with the real recording
// queue, in the calling thread and in a worker thread (captures cross by transfer).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { packCaptures, unpackCaptures } from '../src/capture-batch.js';
import type { CapturedExchange } from '../src/capture.js';
import { DEFAULT_RESPONSE_CAPTURE_LIMIT_BYTES } from '../src/index.js';
import type { StaticKey } from '../src/keys.js';
import { RecordingQueue } from '../src/recording.js';
import { startInProcess, startWorkerGroup, type RelayGroup } from '../src/relay-group.js';
import type { LogLevel, RelayLog } from '../src/relay-log.js';
import { RelayThread, type RelayThreadOptions } from '../src/relay.js';
import { eventually, relayThreadOptions, send, sseEvent, startUpstream, type TestUpstream } from './helpers.js';

const KEY: StaticKey = { id: 'key-1', tenantId: 'tenant-a', secret: 'glitch_sk_test_0123456789abcdef' };
const GLITCH = { 'x-glitch-key': KEY.secret! };
const LIMIT = 64 * 1024;
const MIB = 1024 * 1024;

function relayOptions(upstreamUrl: string, extra: Partial<RelayThreadOptions> = {}): RelayThreadOptions {
  return relayThreadOptions(upstreamUrl, KEY, extra);
}

/** An upstream response body written in pieces of `piece` bytes (so chunks cross the limit anywhere). */
function writeInPieces(res: import('node:http').ServerResponse, body: Buffer, piece: number): void {
  for (let at = 0; at < body.length; at += piece) res.write(body.subarray(at, at + piece));
  res.end();
}

/** A Messages event stream of about `bytes`, text deltas of 1000 characters each. */
function bigStream(bytes: number): { stream: Buffer; text: string } {
  const events = [
    sseEvent('message_start', {
      type: 'message_start',
      message: { id: 'msg_big', type: 'message', role: 'assistant', model: 'claude-x', content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: 10, output_tokens: 1 } },
    }),
    sseEvent('content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }),
  ];
  let text = '';
  let size = events.join('').length;
  for (let i = 0; size < bytes; i++) {
    const piece = String(i % 10).repeat(1000);
    text += piece;
    const e = sseEvent('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: piece } });
    events.push(e);
    size += e.length;
  }
  events.push(
    sseEvent('content_block_stop', { type: 'content_block_stop', index: 0 }),
    sseEvent('message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 3 } }),
    sseEvent('message_stop', { type: 'message_stop' }),
  );
  return { stream: Buffer.from(events.join('')), text };
}

for (const mode of ['calling thread', 'worker thread'] as const) {
  describe(`response capture limit (${mode})`, () => {
    let up: TestUpstream;
    let group: RelayGroup;
    let url: string;
    const records: CapturedExchange[] = [];
    const problems: string[] = [];
    const log: RelayLog = (level: LogLevel, msg, fields) => {
      if (level === 'error' || level === 'warn') problems.push(`${msg} ${JSON.stringify(fields ?? {})}`);
    };

    before(async () => {
      up = await startUpstream();
      const queue = new RecordingQueue({ record: (e) => records.push(e) }, log);
      const opts = relayOptions(up.url, { responseCaptureLimitBytes: LIMIT });
      group = mode === 'calling thread' ? await startInProcess(opts, queue, log) : await startWorkerGroup(opts, 1, queue, log);
      url = `http://127.0.0.1:${group.port}`;
    });
    after(async () => {
      await group.stop(1_000);
      await up.close();
      assert.deepEqual(problems, [], 'nothing logged as a warning or error');
    });

    /** Relays GET `path` and returns what the client received plus the capture. */
    async function relay(path: string): Promise<{ body: Buffer; rec: CapturedExchange }> {
      const r = await send(`${url}${path}`, { headers: GLITCH });
      assert.equal(r.status, 200);
      await eventually(() => records.some((x) => x.path === path), 5_000, `record of ${path}`);
      return { body: r.body, rec: records.find((x) => x.path === path)! };
    }

    for (const framing of ['content-length', 'chunked'] as const) {
      it(`${framing}: a 1 MiB body reaches the client byte-exact; the capture keeps the first 64 KiB and says so`, async () => {
        const body = randomBytes(MIB);
        up.handle((_req, res) => {
          res.writeHead(200, { 'content-type': 'application/octet-stream', ...(framing === 'content-length' ? { 'content-length': String(body.length) } : {}) });
          writeInPieces(res, body, 10_007);
        });
        const { body: got, rec } = await relay(`/v1/files/${framing}-big`);
        assert.ok(got.equals(body), 'client received every byte');
        assert.equal(rec.responseBody.byteLength, LIMIT);
        assert.ok(Buffer.from(rec.responseBody).equals(body.subarray(0, LIMIT)), 'capture is exactly the first 64 KiB');
        assert.equal(rec.responseBodyBytes, MIB);
        assert.equal(rec.responseBodyTruncated, true);
        assert.equal(rec.error, null, 'truncating the capture is not an error of the exchange');
      });

      for (const size of [40 * 1024, LIMIT]) {
        it(`${framing}: a ${size / 1024} KiB body is captured whole and not truncated`, async () => {
          const body = randomBytes(size);
          up.handle((_req, res) => {
            res.writeHead(200, { 'content-type': 'application/octet-stream', ...(framing === 'content-length' ? { 'content-length': String(body.length) } : {}) });
            writeInPieces(res, body, 4_099);
          });
          const { body: got, rec } = await relay(`/v1/files/${framing}-${size}`);
          assert.ok(got.equals(body));
          assert.ok(Buffer.from(rec.responseBody).equals(body), 'capture holds the whole body');
          // A capture may be a view on a larger buffer: whatever it does not cover is zeroed.
          const rest = new Uint8Array(rec.responseBody.buffer, rec.responseBody.byteOffset + rec.responseBody.byteLength);
          assert.ok(rest.every((b) => b === 0), 'no uninitialized memory handed over');
          assert.equal(rec.responseBodyBytes, size);
          assert.equal(rec.responseBodyTruncated, false);
        });
      }
    }

    it('SSE over the limit: relayed whole; the capture is cut, reassembly keeps what arrived and reports the cut', async () => {
      const { stream, text } = bigStream(300 * 1024);
      up.handle((_req, res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        writeInPieces(res, stream, 3_001);
      });
      const { body: got, rec } = await relay('/v1/messages/sse-big');
      assert.ok(got.equals(stream), 'client received the whole event stream');
      assert.equal(rec.stream, true);
      assert.ok(Buffer.from(rec.responseBody).equals(stream.subarray(0, LIMIT)));
      assert.equal(rec.responseBodyBytes, stream.length);
      assert.equal(rec.responseBodyTruncated, true);
      const sse = rec.sse!;
      assert.equal(sse.complete, false, 'message_stop was past the cut');
      assert.ok(sse.problems.includes(`response body truncated at ${LIMIT} of ${stream.length} bytes`), sse.problems.join('; '));
      assert.equal(rec.usage?.inputTokens, 10, 'usage from message_start survives');
      const content = (sse.message as { content: { text: string }[] }).content;
      const kept = content[0]!.text;
      assert.ok(kept.length > 50_000 && text.startsWith(kept), 'the text of the kept events');
    });

    it('SSE under the limit: complete, not truncated, no truncation problem', async () => {
      const { stream } = bigStream(20 * 1024);
      up.handle((_req, res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        writeInPieces(res, stream, 1_500);
      });
      const { body: got, rec } = await relay('/v1/messages/sse-small');
      assert.ok(got.equals(stream));
      assert.ok(Buffer.from(rec.responseBody).equals(stream));
      assert.equal(rec.responseBodyBytes, stream.length);
      assert.equal(rec.responseBodyTruncated, false);
      assert.equal(rec.sse!.complete, true);
      assert.deepEqual(rec.sse!.problems, []);
    });

    it('a gzip body over the limit: relayed as sent, the kept part still decodes (partially)', async () => {
      const json = Buffer.from(JSON.stringify({ data: randomBytes(300_000).toString('hex') }));
      const gz = gzipSync(json);
      assert.ok(gz.length > 2 * LIMIT);
      up.handle((_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': String(gz.length) });
        writeInPieces(res, gz, 16_384);
      });
      const { body: got, rec } = await relay('/v1/files/gzip-big');
      assert.ok(got.equals(gz));
      assert.equal(rec.responseBodyBytes, gz.length);
      assert.equal(rec.responseBodyTruncated, true);
      assert.equal(rec.contentEncoding, 'gzip');
      const decoded = Buffer.from(rec.decodedResponseBody!);
      assert.ok(decoded.length > LIMIT && json.subarray(0, decoded.length).equals(decoded), 'a prefix of the JSON');
      assert.equal(rec.usage, null, 'no usage from a cut JSON body');
    });
  });
}

describe('response capture limit option', () => {
  it('defaults to 32 MiB; 0 keeps no body but still counts it; a bad value is refused', async () => {
    assert.equal(DEFAULT_RESPONSE_CAPTURE_LIMIT_BYTES, 32 * MIB);
    const up = await startUpstream();
    const captures: import('../src/capture.js').RawCapture[] = [];
    // Copied, as every sink must: the relay reuses the buffers once it returns.
    const sinks = { captures: (batch: readonly import('../src/capture-batch.js').CaptureParts[]) => void captures.push(...unpackCaptures(packCaptures(batch))), log: () => {} };
    const t = new RelayThread(relayOptions(up.url), sinks);
    assert.equal(t.opts.responseCaptureLimitBytes, DEFAULT_RESPONSE_CAPTURE_LIMIT_BYTES);
    await t.stop(0);
    for (const bad of [-1, 1.5, Number.NaN]) {
      assert.throws(() => new RelayThread(relayOptions(up.url, { responseCaptureLimitBytes: bad }), sinks), /responseCaptureLimitBytes must be a non-negative integer/);
    }

    const zero = new RelayThread(relayOptions(up.url, { responseCaptureLimitBytes: 0 }), sinks);
    try {
      const port = await zero.listen();
      up.handle((_req, res) => res.end('hello'));
      const r = await send(`http://127.0.0.1:${port}/v1/models`, { headers: GLITCH });
      assert.equal(r.body.toString(), 'hello');
      await eventually(() => captures.length === 1, 3_000, 'capture');
      assert.equal(captures[0]!.responseBody.byteLength, 0);
      assert.equal(captures[0]!.responseBodyBytes, 5);
      assert.equal(captures[0]!.responseBodyTruncated, true);
    } finally {
      await zero.stop(0);
      await up.close();
    }
  });
});
