// topLevelValueRanges: the recorder's shortcut past JSON.parse for a request body's model and
// metadata. Checked against JSON.parse itself on generated bodies full of the cases a
// hand-written scanner gets wrong (escaped quotes, trailing backslashes, nested keys of the
// same name, odd whitespace, duplicates), and on every cut-off prefix.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { requestFacts } from '@glitch/recorder';
import { topLevelValueRanges } from '../src/top-level-keys.js';

/** The parsed values at the ranges topLevelValueRanges finds (null as it, or when one is not JSON). */
function topLevelValues(s: string, wanted: readonly string[]): Map<string, unknown> | null {
  const ranges = topLevelValueRanges(s, wanted);
  if (ranges === null) return null;
  try {
    return new Map([...ranges].map(([k, [start, end]]) => [k, JSON.parse(s.slice(start, end)) as unknown]));
  } catch {
    return null;
  }
}

const WANTED = ['model', 'metadata'];

/** Deterministic PRNG (mulberry32) so a failure names a seed that reproduces it. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const NASTY = ['model', 'metadata', '"', '\\', '\\"', '"}', '{', '[', ']', '}', ',', ':', 'é', '✓', '😀', '\n', '\u2028', 'user_id', ' '];

function randomString(r: () => number): string {
  let s = '';
  const n = Math.floor(r() * 6);
  for (let i = 0; i < n; i++) s += r() < 0.5 ? NASTY[Math.floor(r() * NASTY.length)]! : String.fromCharCode(32 + Math.floor(r() * 90));
  return s;
}

function randomValue(r: () => number, depth: number): unknown {
  const k = r();
  if (depth > 3 || k < 0.3) return [null, true, false, 0, -1.5e3, 42, randomString(r)][Math.floor(r() * 7)];
  if (k < 0.6) return Array.from({ length: Math.floor(r() * 4) }, () => randomValue(r, depth + 1));
  const o: Record<string, unknown> = {};
  for (let i = Math.floor(r() * 4); i > 0; i--) o[r() < 0.3 ? WANTED[Math.floor(r() * 2)]! : randomString(r)] = randomValue(r, depth + 1);
  return o;
}

const SPACES = ['', '', ' ', '\n', '\t', ' \r\n '];

/** JSON text of a top-level object with random whitespace and, sometimes, duplicate keys. */
function randomBody(r: () => number): string {
  const entries: [string, unknown][] = [];
  for (let i = Math.floor(r() * 6); i > 0; i--) {
    const key = r() < 0.4 ? WANTED[Math.floor(r() * 2)]! : randomString(r);
    entries.push([key, key === 'model' && r() < 0.7 ? randomString(r) : randomValue(r, 0)]);
  }
  const sp = () => SPACES[Math.floor(r() * SPACES.length)]!;
  const parts = entries.map(([k, v]) => `${sp()}${JSON.stringify(k)}${sp()}:${sp()}${JSON.stringify(v, null, r() < 0.2 ? 1 : undefined)}${sp()}`);
  return `${sp()}{${parts.join(',')}${entries.length ? '' : sp()}}${sp()}`;
}

function reference(s: string): Map<string, unknown> {
  const parsed = JSON.parse(s) as Record<string, unknown>;
  const m = new Map<string, unknown>();
  for (const k of WANTED) if (Object.hasOwn(parsed, k)) m.set(k, parsed[k]);
  return m;
}

test('gives what JSON.parse gives for the wanted keys, on 5,000 generated bodies', () => {
  for (let seed = 1; seed <= 5000; seed++) {
    const s = randomBody(rng(seed));
    assert.deepEqual(topLevelValues(s, WANTED), reference(s), `seed ${seed}: ${s}`);
  }
});

test('null for every cut-off prefix of a body and for what is not one JSON object', () => {
  for (let seed = 1; seed <= 300; seed++) {
    const s = randomBody(rng(seed)).trimEnd();
    for (let n = 0; n < s.length; n++) assert.equal(topLevelValues(s.slice(0, n), WANTED), null, `seed ${seed}, first ${n} chars of ${s}`);
  }
  for (const bad of ['', '[]', '"x"', '{"a":1}{', '{"a":1,}', '{"a" 1}', '{"a":1 "b":2}', '{"a":[1}', '{"a":{]}', '{a:1}', '{"model":tru', '{"model":"x"} x']) {
    assert.equal(topLevelValues(bad, WANTED), null, bad);
  }
});

test('requestFacts: model and Claude Code metadata from a real-shaped body, nothing from a truncated one', () => {
  const userId = JSON.stringify({ device_id: 'dev-1', account_uuid: 'acc', session_id: 'sess-1' });
  const body = JSON.stringify({
    model: 'claude-sonnet-4-6',
    messages: [{ role: 'user', content: [{ type: 'text', text: 'a "model": "decoy" {\\ ' + 'x'.repeat(20_000) }] }],
    system: [{ type: 'text', text: 'You are Claude Code', metadata: { user_id: 'nested decoy' } }],
    tools: [{ name: 'Bash', input_schema: { type: 'object', properties: { model: { type: 'string' } } } }],
    metadata: { user_id: userId },
    max_tokens: 32000,
    stream: true,
  });
  assert.deepEqual(requestFacts(Buffer.from(body)), { model: 'claude-sonnet-4-6', deviceId: 'dev-1', sessionId: 'sess-1' });
  assert.deepEqual(requestFacts(Buffer.from(body.slice(0, -1))), { model: null, deviceId: null, sessionId: null });
  const unicode = JSON.stringify({ model: 'claude-✓-é', metadata: { user_id: JSON.stringify({ device_id: 'dév😀', session_id: 's' }) }, messages: ['中文'] });
  assert.deepEqual(requestFacts(Buffer.from(unicode)), { model: 'claude-✓-é', deviceId: 'dév😀', sessionId: 's' }, 'values decoded from UTF-8, not latin1');
  assert.deepEqual(requestFacts(Buffer.from('{"metadata":{"user_id":"not json"},"model":7}')), { model: null, deviceId: null, sessionId: null });
});
