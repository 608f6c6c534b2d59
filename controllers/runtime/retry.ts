/** Compare-and-swap writes through the Kubernetes API, retried when another writer got there first. */
import { randomInt } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiException } from '@kubernetes/client-node';

export function isApiStatus(err: unknown, code: number): boolean {
  return err instanceof ApiException && err.code === code;
}

/**
 * Runs `attempt` (read, decide, write with the resourceVersion read) until it does not lose a
 * race (409 Conflict), at most `maxAttempts` times, as client-go's RetryOnConflict does. The
 * jittered pause spreads racing writers out instead of letting them collide again.
 */
export async function retryOnConflict<T>(attempt: () => Promise<T>, maxAttempts = 5): Promise<T> {
  for (let n = 1; ; n++) {
    try {
      return await attempt();
    } catch (err) {
      if (!isApiStatus(err, 409) || n >= maxAttempts) throw err;
      await sleep(randomInt(5, 5 + 10 * n));
    }
  }
}
