// ioredis and BullMQ against the harness's real redis-server.
import { uniqueName } from '../harness/env.js';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Queue, QueueEvents, Worker, type Job } from 'bullmq';
import { redis, type RedisEnv } from '../harness/redis.js';

let env: RedisEnv;

before(async () => {
  env = await redis();
  console.log(`[test] redis: ${env.kind} at ${env.url}`);
});

test('ioredis: commands, pipelines and streams against redis-server', async () => {
  await env.reset();
  const c = env.client();
  assert.equal(await c.set('k', 'v'), 'OK');
  const res = await c.pipeline().incr('n').incr('n').get('k').exec();
  assert.deepEqual(res?.map(([err, v]) => [err, v]), [[null, 1], [null, 2], [null, 'v']]);
  const id = await c.xadd('s', '*', 'f', 'x');
  const read = await c.xrange('s', '-', '+');
  assert.equal(read[0]?.[0], id);
  assert.deepEqual(read[0]?.[1], ['f', 'x']);
  await c.quit();
});

test('BullMQ: a job is enqueued, fails once, is retried and completes', async () => {
  await env.reset();
  const name = uniqueName('jobs');
  const connection = { url: env.url };
  const queue = new Queue(name, { connection });
  const events = new QueueEvents(name, { connection });
  await events.waitUntilReady();
  const attempts: number[] = [];
  const worker = new Worker(
    name,
    async (job: Job<{ text: string }>) => {
      attempts.push(job.attemptsMade);
      if (job.attemptsMade === 0) throw new Error('transient judge failure');
      return { length: job.data.text.length };
    },
    { connection, concurrency: 1 },
  );
  after(async () => {
    await worker.close();
    await events.close();
    await queue.close();
  });
  const failedOnce = new Promise<string>((resolve) => worker.once('failed', (_job, err) => resolve(err.message)));
  const job = await queue.add('judge', { text: 'hello' }, { attempts: 2, backoff: { type: 'fixed', delay: 50 } });
  const result = (await job.waitUntilFinished(events, 15_000)) as { length: number };
  assert.equal(await failedOnce, 'transient judge failure');
  assert.deepEqual(result, { length: 5 });
  assert.deepEqual(attempts, [0, 1]);
  const finished = await queue.getJob(job.id ?? '');
  assert.equal(finished?.attemptsMade, 2);
  assert.equal(await finished?.getState(), 'completed');
});
