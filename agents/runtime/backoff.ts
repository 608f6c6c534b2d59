/**
 * Reconnect delays after gRPC's connection-backoff algorithm: each attempt waits 1.6 times
 * longer than the one before, up to a bound, with ±20% jitter so that agents cut off together
 * (a hub restart) do not all dial back at the same instant.
 */
import { setTimeout as sleep } from 'node:timers/promises';

export interface BackoffPolicy {
  initialMs: number;
  maxMs: number;
}

const multiplier = 1.6;
const jitter = 0.2;

/** The delay before retry number `attempt` (0 for the first); `random` returns [0, 1). */
export function backoffDelay(
  attempt: number,
  policy: BackoffPolicy,
  random: () => number = Math.random,
): number {
  const base = Math.min(policy.maxMs, policy.initialMs * multiplier ** attempt);
  return Math.min(policy.maxMs, Math.round(base * (1 + jitter * (2 * random() - 1))));
}

/** Waits `ms`; false when `signal` aborted the wait (shutdown), true otherwise. */
export async function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  try {
    await sleep(ms, undefined, { signal });
    return true;
  } catch {
    return false;
  }
}
