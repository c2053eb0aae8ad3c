// Where recording and relay threads run (cpu-affinity.ts): the plan startForwarder follows
// (CPU lists themselves are @glitch/config's). Applying a plan to real threads is tested with a forwarder process
// in test/integration/recording-priority.test.ts.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { planCpus } from '../src/cpu-affinity.js';
import { describeThreads } from '../src/forwarder.js';

test('auto: the last allowed CPU records, the relay threads get the others (threads 0 = one per relay CPU)', () => {
  assert.deepEqual(planCpus('auto', [0, 1], 0, true, 2), { threads: 1, relayCpus: [0], recordingCpus: [1] });
  assert.deepEqual(planCpus('auto', [0, 1, 2, 3], 0, true, 4), { threads: 3, relayCpus: [0, 1, 2], recordingCpus: [3] });
  assert.deepEqual(planCpus('auto', [2, 5, 6], 2, true, 3), { threads: 2, relayCpus: [2, 5], recordingCpus: [6] });
});

test('auto shares the CPUs, and says why, where separating them would cost relay threads or is not possible', () => {
  assert.deepEqual(planCpus('auto', [0], 0, true, 1), { threads: 1, relayCpus: null, recordingCpus: null, sharedBecause: 'this process may use 1 CPU only' });
  const crowded = planCpus('auto', [0, 1], 2, true, 2);
  assert.equal(crowded.threads, 2);
  assert.equal(crowded.relayCpus, null);
  assert.match(crowded.sharedBecause ?? '', /2 relay threads asked for, more than the 1 CPU left/);
  assert.match(planCpus('auto', null, 0, true, 4).sharedBecause ?? '', /unknown/);
  assert.equal(planCpus('auto', null, 0, true, 4).threads, 4);
});

test('off, or no recording in workers: nothing is pinned and threads 0 means one per CPU', () => {
  assert.deepEqual(planCpus('off', [0, 1, 2, 3], 0, true, 4), { threads: 4, relayCpus: null, recordingCpus: null });
  assert.deepEqual(planCpus('auto', [0, 1, 2, 3], 0, false, 4), { threads: 4, relayCpus: null, recordingCpus: null });
  assert.deepEqual(planCpus([3], [0, 1, 2, 3], 2, false, 4), { threads: 2, relayCpus: null, recordingCpus: null });
});

test('a CPU list names the recording CPUs; a list that cannot work is an error, not a silent fallback', () => {
  assert.deepEqual(planCpus([0], [0, 1, 2, 3], 0, true, 4), { threads: 3, relayCpus: [1, 2, 3], recordingCpus: [0] });
  assert.deepEqual(planCpus([2, 3], [0, 1, 2, 3], 1, true, 4), { threads: 1, relayCpus: [0, 1], recordingCpus: [2, 3] });
  assert.throws(() => planCpus([7], [0, 1, 2, 3], 0, true, 4), /recording CPUs 7 are not among the CPUs this process may use \(0-3\)/);
  assert.throws(() => planCpus([0, 1], [0, 1], 0, true, 2), /leave no CPU for the relay threads/);
  assert.throws(() => planCpus([3], [0, 1, 2, 3], 4, true, 4), /4 relay threads do not fit on the 3 CPUs/);
});

test('start-up lines name the recording CPUs as a CPU list, as taskset and GLITCH_RECORDING_CPUS write them', () => {
  assert.equal(describeThreads({ threads: 2, recordingCpus: null }), '2 threads');
  assert.equal(describeThreads({ threads: 1, recordingCpus: [1] }), '1 thread, recording on CPU 1');
  assert.equal(describeThreads({ threads: 4, recordingCpus: [6, 7] }), '4 threads, recording on CPUs 6-7');
  assert.equal(describeThreads({ threads: 3, recordingCpus: [2, 5, 6, 7] }), '3 threads, recording on CPUs 2,5-7');
});
