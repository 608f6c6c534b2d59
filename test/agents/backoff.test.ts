/** Reconnect delays: growth, bound and jitter. */
import assert from 'node:assert/strict';
import { backoffDelay } from '../../agents/runtime/backoff.js';

describe('reconnect backoff', () => {
  const policy = { initialMs: 500, maxMs: 30_000 };
  const cases: { attempt: number; random: number; delay: number }[] = [
    { attempt: 0, random: 0.5, delay: 500 },
    { attempt: 0, random: 0, delay: 400 },
    { attempt: 0, random: 0.999_999, delay: 600 },
    { attempt: 1, random: 0.5, delay: 800 },
    { attempt: 2, random: 0.5, delay: 1280 },
    { attempt: 5, random: 0.5, delay: 5243 },
    { attempt: 9, random: 0.5, delay: 30_000 },
    { attempt: 9, random: 0, delay: 24_000 },
    { attempt: 50, random: 0.999_999, delay: 30_000 },
  ];
  for (const c of cases) {
    it(`attempt ${c.attempt} with random ${c.random} waits ${c.delay} ms`, () => {
      assert.equal(
        backoffDelay(c.attempt, policy, () => c.random),
        c.delay,
      );
    });
  }

  it('stays within ±20% of the unjittered delay and never above the bound', () => {
    for (let attempt = 0; attempt < 20; attempt++) {
      const base = Math.min(policy.maxMs, policy.initialMs * 1.6 ** attempt);
      const delay = backoffDelay(attempt, policy);
      assert.ok(
        delay >= Math.floor(base * 0.8) && delay <= Math.min(policy.maxMs, Math.ceil(base * 1.2)),
        `attempt ${attempt}: ${delay}`,
      );
    }
  });
});
