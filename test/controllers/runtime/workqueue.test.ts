import assert from 'node:assert/strict';
import { WorkQueue } from '../../../controllers/runtime/workqueue.js';

/** Resolves with what `promise` gives, or 'pending' if it has not settled by the next macrotask. */
async function settled<T>(promise: Promise<T>): Promise<T | 'pending'> {
  return Promise.race([promise, new Promise<'pending'>((resolve) => setImmediate(() => resolve('pending')))]);
}

describe('controllers/runtime/workqueue', () => {
  it('queues a key once however often it is added', async () => {
    const q = new WorkQueue();
    q.add('a');
    q.add('b');
    q.add('a');
    assert.equal(q.length, 2);
    assert.equal(await q.get(), 'a');
    assert.equal(await q.get(), 'b');
    assert.equal(await settled(q.get()), 'pending');
    q.shutDown();
  });

  it('hands a key to one worker at a time, and again after done if it was added meanwhile', async () => {
    const q = new WorkQueue();
    q.add('a');
    const first = await q.get();
    q.add('a');
    const second = q.get();
    assert.equal(await settled(second), 'pending', 'not while the first worker has it');
    q.done(first as string);
    assert.equal(await second, 'a');
    q.done('a');
    assert.equal(q.length, 0);
    q.shutDown();
  });

  it('backs a failing key off exponentially from 5 ms to 5 min, and forgets on success', () => {
    const q = new WorkQueue({ now: () => 0, burst: 1_000_000 });
    const delays = Array.from({ length: 20 }, () => q.addRateLimited('a'));
    assert.deepEqual(delays.slice(0, 5), [5, 10, 20, 40, 80]);
    assert.equal(delays.at(-1), 5 * 60_000);
    assert.equal(q.retries('a'), 20);
    q.forget('a');
    assert.equal(q.addRateLimited('a'), 5);
    assert.equal(q.addRateLimited('b'), 5, 'keys back off independently');
    q.shutDown();
  });

  it('bounds all retries together with a token bucket', () => {
    let now = 0;
    const q = new WorkQueue({ now: () => now, ratePerSecond: 10, burst: 2 });
    assert.equal(q.addRateLimited('a'), 5);
    assert.equal(q.addRateLimited('b'), 5);
    assert.equal(q.addRateLimited('c'), 100, 'the bucket is empty: one token every 100 ms');
    assert.equal(q.addRateLimited('d'), 200);
    now += 1000;
    assert.equal(q.addRateLimited('e'), 5, 'refilled after a second');
    q.shutDown();
  });

  it('adds after a delay, the earliest pending delay winning', async () => {
    const q = new WorkQueue();
    const started = Date.now();
    q.addAfter('a', 500);
    q.addAfter('a', 20);
    assert.equal(await q.get(), 'a');
    assert.ok(Date.now() - started < 400, 'the 20 ms add won');
    q.shutDown();
  });

  it('ends waiting workers and drops delayed adds on shutdown', async () => {
    const q = new WorkQueue();
    const waiting = q.get();
    q.addAfter('later', 10);
    q.shutDown();
    assert.equal(await waiting, undefined);
    q.add('x');
    assert.equal(await q.get(), undefined);
    assert.equal(q.length, 0);
  });
});
