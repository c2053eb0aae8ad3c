import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { createLogger, redactHeaders, redactText, REDACTED } from '@glitch/log';

function capture() {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  return { lines, destination };
}

const anthropicKey = 'sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789';
const glitchKey = 'glitch_sk_live_4f9c2a7b1e';

test('secret headers are redacted at any depth, other headers kept', () => {
  const { lines, destination } = capture();
  const log = createLogger({ name: 't', destination });
  log.info({ req: { headers: { 'X-Glitch-Key': glitchKey, authorization: `Bearer ${anthropicKey}`, 'x-api-key': anthropicKey, 'user-agent': 'claude-cli' } } }, 'request');
  const out = lines.join('');
  assert.ok(!out.includes(glitchKey) && !out.includes(anthropicKey), out);
  const parsed = JSON.parse(out) as { req: { headers: Record<string, string> } };
  assert.equal(parsed.req.headers['X-Glitch-Key'], REDACTED);
  assert.equal(parsed.req.headers['authorization'], REDACTED);
  assert.equal(parsed.req.headers['user-agent'], 'claude-cli');
});

test('token-shaped strings are scrubbed from messages, fields and errors', () => {
  const { lines, destination } = capture();
  const log = createLogger({ name: 't', destination });
  log.warn({ detail: `upstream said key ${anthropicKey} is bad` }, `auth failed for ${glitchKey}`);
  log.error({ err: new Error(`boom ${anthropicKey}`) }, 'failed');
  const out = lines.join('');
  assert.ok(!out.includes(anthropicKey) && !out.includes(glitchKey), out);
  // detail, message, err.message and err.stack each held a secret.
  assert.equal(out.split(REDACTED).length - 1, 4);
});

test('redactHeaders and redactText', () => {
  assert.deepEqual(redactHeaders({ 'x-api-key': 'k', Accept: 'a', cookie: ['a', 'b'] }), { 'x-api-key': REDACTED, Accept: 'a', cookie: REDACTED });
  assert.equal(redactText(`x ${glitchKey.replace('sk', 'tk')} y`), `x ${REDACTED} y`);
  assert.equal(redactText('nothing secret here'), 'nothing secret here');
});
