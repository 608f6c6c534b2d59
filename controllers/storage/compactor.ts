/**
 * Periodic compaction for either backend, as kube-apiserver and kine do it: every interval,
 * forget history older than the newest `keepRevisions` revisions, so the store stays small while
 * watchers that lag by less than that can still resume.
 */
import type { Store } from './store.js';

export interface CompactorOptions {
  intervalMs?: number;
  keepRevisions?: number;
  onError?: (err: unknown) => void;
}

export interface Compactor {
  /** One compaction pass now; resolves to the revision compacted to, or undefined if nothing was due. */
  runOnce(): Promise<number | undefined>;
  stop(): void;
}

export function startCompactor(store: Store, options: CompactorOptions = {}): Compactor {
  const keep = options.keepRevisions ?? 1000;
  let last = 0;
  let running: Promise<number | undefined> | undefined;

  const runOnce = (): Promise<number | undefined> => {
    running ??= (async () => {
      try {
        const target = (await store.currentRevision()) - keep;
        if (target <= last) return undefined;
        await store.compact(target);
        last = target;
        return target;
      } finally {
        running = undefined;
      }
    })();
    return running;
  };

  const timer = setInterval(
    () => {
      runOnce().catch((err: unknown) => options.onError?.(err));
    },
    options.intervalMs ?? 5 * 60_000,
  );
  timer.unref();
  return { runOnce, stop: () => clearInterval(timer) };
}
