import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, formatCpuList, forwarderEnv, ingestEnv, loadConfig, parseCpuList } from '@glitch/config';

test('defaults apply when nothing is set', () => {
  const c = loadConfig(forwarderEnv, {});
  assert.equal(c.GLITCH_PORT, 8787);
  assert.equal(c.GLITCH_HOST, '127.0.0.1');
  assert.equal(c.GLITCH_UPSTREAM_URL, 'https://api.anthropic.com');
  assert.equal(c.GLITCH_BODY_LIMIT_BYTES, 32 * 1024 * 1024);
  assert.equal(c.GLITCH_KAFKA_BROKERS, undefined);
  assert.equal(c.GLITCH_RECORDING_CPUS, 'auto');
});

test('GLITCH_RECORDING_CPUS: auto, off, or a CPU list', () => {
  const parsed: [string, unknown][] = [['auto', 'auto'], ['off', 'off'], ['3', [3]], ['6-7', [6, 7]], ['0,2-3', [0, 2, 3]], [' 1 ', [1]], ['5,1-2,2', [1, 2, 5]]];
  for (const [text, cpus] of parsed) assert.deepEqual(loadConfig(forwarderEnv, { GLITCH_RECORDING_CPUS: text }).GLITCH_RECORDING_CPUS, cpus, text);
  // Parsed once here: a list the forwarder could not use is a ConfigError at start, never later.
  for (const bad of ['yes', '1-', '1,,2', 'last', '3-1', '-1']) {
    assert.throws(() => loadConfig(forwarderEnv, { GLITCH_RECORDING_CPUS: bad }), (e: unknown) => e instanceof ConfigError && /GLITCH_RECORDING_CPUS: must be auto, off, or a CPU list/.test(e.message), bad);
  }
});

test('CPU lists parse and format as taskset and /proc write them', () => {
  assert.deepEqual(parseCpuList('3'), [3]);
  assert.deepEqual(parseCpuList('0-3,8,10-11'), [0, 1, 2, 3, 8, 10, 11]);
  assert.deepEqual(parseCpuList(' 5 , 1-2 ,2'), [1, 2, 5]);
  assert.equal(formatCpuList([0, 1, 2, 3, 8, 10, 11]), '0-3,8,10-11');
  assert.equal(formatCpuList([1]), '1');
  assert.equal(formatCpuList([]), '');
  for (const bad of ['', 'a', '3-1', '1,,2', '-1', '1-']) assert.throws(() => parseCpuList(bad), /not a CPU list/, bad);
});

test('values are coerced and empty strings mean unset', () => {
  const c = loadConfig(forwarderEnv, { GLITCH_PORT: '9000', GLITCH_KAFKA_BROKERS: 'a:9092, b:9093', GLITCH_UPSTREAM_URL: '' });
  assert.equal(c.GLITCH_PORT, 9000);
  assert.deepEqual(c.GLITCH_KAFKA_BROKERS, ['a:9092', 'b:9093']);
  assert.equal(c.GLITCH_UPSTREAM_URL, 'https://api.anthropic.com');
});

test('every bad variable is listed in one error, secrets not echoed', () => {
  let err: unknown;
  try {
    loadConfig(forwarderEnv, {
      GLITCH_PORT: 'eighty',
      GLITCH_UPSTREAM_URL: 'ftp://x',
      GLITCH_KAFKA_BROKERS: 'nohostport',
      GLITCH_LOG_LEVEL: 'loud',
    });
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof ConfigError);
  const names = err.problems.map((p) => p.split(':')[0]);
  assert.deepEqual(names.sort(), ['GLITCH_KAFKA_BROKERS', 'GLITCH_LOG_LEVEL', 'GLITCH_PORT', 'GLITCH_UPSTREAM_URL']);
  assert.match(err.message, /GLITCH_PORT: .*\(got "eighty"\)/);

  try {
    loadConfig(ingestEnv, { GLITCH_CLICKHOUSE_URL: 'not a url', GLITCH_INGEST_BATCH_ROWS: '-3' });
    assert.fail('expected ConfigError');
  } catch (e) {
    assert.ok(e instanceof ConfigError);
    assert.equal(e.problems.length, 2);
  }
});
