import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DiskSpool, type ReplayOutcome } from '@glitch/spool';

const dir = () => mkdtempSync(join(tmpdir(), 'glitch-spool-'));
const entry = (i: number, size = 100) => Buffer.from(`${String(i).padStart(8, '0')}:${'x'.repeat(size)}`);
const index = (b: Buffer) => Number(b.subarray(0, 8).toString());

async function drain(spool: DiskSpool): Promise<number[]> {
  const got: number[] = [];
  await spool.replay(async (p) => {
    got.push(index(p));
    return 'ok';
  });
  return got;
}

test('entries survive close and reopen and replay in append order, then are gone', async () => {
  const d = dir();
  const a = new DiskSpool({ dir: d, maxBytes: 10_000_000, whenFull: 'refuse', segmentBytes: 4096 });
  for (let i = 0; i < 500; i++) assert.deepEqual(a.append(entry(i)), { ok: true });
  a.close();
  assert.ok(readdirSync(d).filter((f) => f.endsWith('.seg')).length > 5, 'several segments');
  const b = new DiskSpool({ dir: d, maxBytes: 10_000_000, whenFull: 'refuse', segmentBytes: 4096 });
  assert.equal(b.stats.entries, 500);
  assert.deepEqual(await drain(b), Array.from({ length: 500 }, (_, i) => i));
  assert.equal(b.isEmpty, true);
  assert.deepEqual(readdirSync(d).filter((f) => f.endsWith('.seg')), []);
  b.close();
});

test('a torn tail is detected, counted and skipped; later appends are not lost behind it', async () => {
  const d = dir();
  const a = new DiskSpool({ dir: d, maxBytes: 1_000_000, whenFull: 'refuse' });
  for (let i = 0; i < 10; i++) a.append(entry(i));
  a.close();
  const [seg] = readdirSync(d).filter((f) => f.endsWith('.seg'));
  // A crash mid-write: a frame header promising 100 bytes, then only 7 of them.
  const torn = Buffer.alloc(15);
  torn.writeUInt32LE(100, 0);
  appendFileSync(join(d, seg!), torn);
  const b = new DiskSpool({ dir: d, maxBytes: 1_000_000, whenFull: 'refuse' });
  assert.equal(b.stats.tornSkipped, 1);
  assert.equal(b.stats.entries, 10);
  b.append(entry(10));
  b.flush();
  assert.deepEqual(await drain(b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  b.close();
});

test('a corrupt frame (bad CRC) ends the valid part of its segment', async () => {
  const d = dir();
  const a = new DiskSpool({ dir: d, maxBytes: 1_000_000, whenFull: 'refuse' });
  for (let i = 0; i < 5; i++) a.append(entry(i, 10));
  a.close();
  const [seg] = readdirSync(d).filter((f) => f.endsWith('.seg'));
  const path = join(d, seg!);
  const data = readFileSync(path);
  const frame = 8 + entry(0, 10).length;
  const at = frame * 2 + 8 + 3;
  data[at] = data[at]! ^ 0xff; // flip a payload byte of entry 2
  writeFileSync(path, data);
  const b = new DiskSpool({ dir: d, maxBytes: 1_000_000, whenFull: 'refuse' });
  assert.equal(b.stats.tornSkipped, 1);
  assert.deepEqual(await drain(b), [0, 1]);
  b.close();
});

test('replay stops at retry and resumes from the saved cursor after a restart', async () => {
  const d = dir();
  const a = new DiskSpool({ dir: d, maxBytes: 1_000_000, whenFull: 'refuse' });
  for (let i = 0; i < 20; i++) a.append(entry(i));
  const first: number[] = [];
  const acked = await a.replay(async (p): Promise<ReplayOutcome> => {
    if (first.length === 7) return 'retry'; // Kafka went away again
    first.push(index(p));
    return 'ok';
  });
  assert.equal(acked, 7);
  assert.equal(a.stats.entries, 13);
  a.close();
  const b = new DiskSpool({ dir: d, maxBytes: 1_000_000, whenFull: 'refuse' });
  assert.deepEqual(await drain(b), Array.from({ length: 13 }, (_, i) => i + 7));
  b.close();
});

test('drop-oldest: a full spool drops whole oldest segments, counts them and says so', async () => {
  const d = dir();
  const full: { droppedEntries: number }[] = [];
  const s = new DiskSpool({ dir: d, maxBytes: 20_000, whenFull: 'drop-oldest', segmentBytes: 2_000, onFull: (i) => full.push(i) });
  for (let i = 0; i < 1_000; i++) assert.deepEqual(s.append(entry(i)), { ok: true });
  s.flush();
  const st = s.stats;
  assert.ok(st.bytes <= 20_000, `bytes ${st.bytes}`);
  assert.ok(st.droppedOldest > 0);
  assert.equal(st.droppedOldest + st.entries, 1_000, 'every entry is either kept or counted as dropped');
  assert.ok(full.length > 0 && full.some((f) => f.droppedEntries > 0));
  const kept = await drain(s);
  assert.equal(kept.at(-1), 999);
  assert.deepEqual(kept, Array.from({ length: kept.length }, (_, i) => 1_000 - kept.length + i), 'the newest, in order');
  s.close();
});

test('refuse: refusing starts at 90 % (room left for exchanges in flight), is told to listeners, survives reopen, and ends under 75 % after replay', async () => {
  const d = dir();
  const changes: boolean[] = [];
  const a = new DiskSpool({ dir: d, maxBytes: 10_000, whenFull: 'refuse', segmentBytes: 2_000 });
  const off = a.onRefusingChange((r) => changes.push(r));
  let i = 0;
  while (!a.refusing) assert.equal(a.append(entry(i++)).ok, true, 'appends succeed until refusing starts');
  assert.ok(a.stats.bytes >= 9_000 && a.stats.bytes < 10_000, `refusing from 90 % (at ${a.stats.bytes} bytes)`);
  assert.deepEqual(changes, [true]);
  assert.equal(a.append(entry(i++)).ok, true, 'the headroom still takes records of exchanges in flight');
  assert.equal(a.stats.refused, 0);
  a.close();
  off();

  const b = new DiskSpool({ dir: d, maxBytes: 10_000, whenFull: 'refuse', segmentBytes: 2_000 });
  assert.equal(b.refusing, true, 'a spool reopened nearly full refuses from the start');
  b.onRefusingChange((r) => changes.push(r));
  let seen = 0;
  let bytesWhenResumed = -1;
  await b.replay(async () => {
    seen++;
    if (!b.refusing && bytesWhenResumed < 0) bytesWhenResumed = b.stats.bytes;
    return 'ok';
  });
  assert.equal(seen, i);
  assert.deepEqual(changes, [true, false], 'told once when refusing ended');
  assert.ok(bytesWhenResumed < 7_500, `resumed under 75 % (at ${bytesWhenResumed} bytes)`);
  b.close();
});

test('refuse: pressed from 50 % until under 25 % after replay, told to listeners; never under drop-oldest', async () => {
  const d = dir();
  const changes: boolean[] = [];
  const a = new DiskSpool({ dir: d, maxBytes: 10_000, whenFull: 'refuse', segmentBytes: 2_000 });
  a.onPressedChange((p) => changes.push(p));
  let i = 0;
  while (!a.pressed) assert.equal(a.append(entry(i++)).ok, true);
  assert.ok(a.stats.bytes >= 5_000 && a.stats.bytes < 6_000, `pressed from 50 % (at ${a.stats.bytes} bytes)`);
  assert.equal(a.refusing, false, 'pressed comes well before refusing');
  let bytesWhenReleased = -1;
  await a.replay(async () => {
    if (!a.pressed && bytesWhenReleased < 0) bytesWhenReleased = a.stats.bytes;
    return 'ok';
  });
  assert.deepEqual(changes, [true, false]);
  assert.ok(bytesWhenReleased >= 0 && bytesWhenReleased < 2_500, `released under 25 % (at ${bytesWhenReleased} bytes)`);
  a.close();

  const drop = new DiskSpool({ dir: dir(), maxBytes: 10_000, whenFull: 'drop-oldest', segmentBytes: 2_000 });
  for (let k = 0; k < 200; k++) drop.append(entry(k));
  assert.equal(drop.pressed, false, 'a drop-oldest spool refuses nothing, so nothing is urgent');
  drop.close();
});

test('refuse: a full spool refuses new entries and reports refusing for the hot path', () => {
  const d = dir();
  let told = 0;
  const s = new DiskSpool({ dir: d, maxBytes: 5_000, whenFull: 'refuse', onFull: () => told++ });
  let i = 0;
  while (s.append(entry(i)).ok) i++;
  assert.deepEqual(s.append(entry(i)), { ok: false, reason: 'spool_full' });
  assert.equal(s.refusing, true);
  assert.equal(s.stats.refused, 2);
  assert.equal(told, 1, 'said once, not per entry');
  assert.deepEqual(s.append(Buffer.alloc(10_000)), { ok: false, reason: 'entry_too_large' });
  s.close();
});

test('a process SIGKILLed while appending leaves a clean prefix of what it flushed', async () => {
  const d = dir();
  const script = `
    import { DiskSpool } from '@glitch/spool';
    const s = new DiskSpool({ dir: ${JSON.stringify(d)}, maxBytes: 50_000_000, whenFull: 'refuse', segmentBytes: 65_536, flushBytes: 3_000 });
    let i = 0;
    const tick = () => {
      for (let k = 0; k < 50; k++) s.append(Buffer.from(String(i++).padStart(8, '0') + ':' + 'y'.repeat(200)));
      if (i >= 3_000) process.kill(process.pid, 'SIGKILL');
      setImmediate(tick);
    };
    tick();
  `;
  const cwd = fileURLToPath(new URL('..', import.meta.url));
  const r = spawnSync(process.execPath, ['--conditions=source', '--import', 'tsx', '--input-type=module', '-e', script], { cwd, encoding: 'utf8' });
  assert.equal(r.signal, 'SIGKILL', r.stderr);
  const s = new DiskSpool({ dir: d, maxBytes: 50_000_000, whenFull: 'refuse' });
  const got = await drain(s);
  assert.ok(got.length >= 2_000, `flushed batches survived (${got.length})`);
  assert.deepEqual(got, Array.from({ length: got.length }, (_, i) => i), 'a contiguous prefix, in order');
  s.close();
});

test('replayBatches hands over windows in order; a partial delivery keeps the rest, also across a reopen', async () => {
  const d = dir();
  const a = new DiskSpool({ dir: d, maxBytes: 10_000_000, whenFull: 'refuse', segmentBytes: 2_000 });
  for (let i = 0; i < 50; i++) a.append(entry(i, 50));
  const seen: number[][] = [];
  const first = await a.replayBatches(
    async (batch) => {
      const ids = batch.map((b) => Number(b.subarray(0, 8).toString()));
      seen.push(ids);
      return seen.length === 3 ? 2 : batch.length; // the third window: only its first two get through
    },
    { maxEntries: 8 },
  );
  assert.ok(seen.every((w) => w.length <= 8));
  assert.deepEqual(seen.flat().slice(0, seen[0]!.length + seen[1]!.length + 2), Array.from({ length: seen[0]!.length + seen[1]!.length + 2 }, (_, i) => i));
  assert.equal(first, seen[0]!.length + seen[1]!.length + 2);
  a.close();
  const b = new DiskSpool({ dir: d, maxBytes: 10_000_000, whenFull: 'refuse', segmentBytes: 2_000 });
  assert.deepEqual(await drain(b), Array.from({ length: 50 - first }, (_, i) => first + i));
  b.close();
});
