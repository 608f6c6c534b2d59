/**
 * The keyed work queue of every controller, with client-go's semantics: a key queued twice is
 * queued once; a key is handed to one worker at a time, and if it is added again while being
 * worked on it comes back once that worker is done; failures come back after a per-key
 * exponential backoff (5 ms doubling to 5 min) that a global token bucket also bounds, so one
 * broken object cannot starve the others nor a thousand flood the API.
 */
export interface WorkQueueOptions {
  /** Per-key backoff: the first retry waits baseDelayMs, each next one twice as long, up to maxDelayMs. */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Global token bucket for retries: `ratePerSecond` sustained, `burst` at once (client-go: 10, 100). */
  ratePerSecond?: number;
  burst?: number;
  now?: () => number;
  metrics?: WorkQueueMetrics;
}

/** The queue's share of the controller metrics, already labelled with the controller's name. */
export interface WorkQueueMetrics {
  depth: { set(value: number): void };
  queueDuration: { observe(seconds: number): void };
  retries: { inc(): void };
}

export class WorkQueue {
  private readonly queue: string[] = [];
  /** Keys waiting to be handed out (or to come back after their worker), with when they were added. */
  private readonly dirty = new Map<string, number>();
  private readonly processing = new Set<string>();
  private readonly waiting = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private readonly failures = new Map<string, number>();
  private readonly getters: ((key: string | undefined) => void)[] = [];
  private tokens: number;
  private tokensAt: number;
  private shuttingDown = false;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly ratePerSecond: number;
  private readonly burst: number;
  private readonly now: () => number;

  constructor(private readonly options: WorkQueueOptions = {}) {
    this.baseDelayMs = options.baseDelayMs ?? 5;
    this.maxDelayMs = options.maxDelayMs ?? 5 * 60_000;
    this.ratePerSecond = options.ratePerSecond ?? 10;
    this.burst = options.burst ?? 100;
    this.now = options.now ?? Date.now;
    this.tokens = this.burst;
    this.tokensAt = this.now();
  }

  get length(): number {
    return this.queue.length;
  }

  add(key: string): void {
    if (this.shuttingDown || this.dirty.has(key)) return;
    this.dirty.set(key, this.now());
    // A key being worked on comes back when its worker calls done().
    if (!this.processing.has(key)) this.push(key);
  }

  /** Adds `key` after `delayMs`; an earlier pending add of the same key wins. */
  addAfter(key: string, delayMs: number): void {
    if (this.shuttingDown) return;
    if (delayMs <= 0) {
      this.add(key);
      return;
    }
    const at = this.now() + delayMs;
    const pending = this.waiting.get(key);
    if (pending && pending.at <= at) return;
    if (pending) clearTimeout(pending.timer);
    const timer = setTimeout(() => {
      this.waiting.delete(key);
      this.add(key);
    }, delayMs);
    this.waiting.set(key, { at, timer });
  }

  /**
   * Adds `key` again after its backoff, the larger of its own exponential delay and the bucket's;
   * returns that delay in ms.
   */
  addRateLimited(key: string): number {
    const failures = this.failures.get(key) ?? 0;
    this.failures.set(key, failures + 1);
    this.options.metrics?.retries.inc();
    const own = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** failures);
    const delay = Math.max(own, this.bucketDelayMs());
    this.addAfter(key, delay);
    return delay;
  }

  /** How many times `key` has failed since it last succeeded. */
  retries(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  /** Forgets `key`'s failures: its next failure waits the base delay again. */
  forget(key: string): void {
    this.failures.delete(key);
  }

  /** The next key to work on, or undefined once the queue shuts down. */
  get(): Promise<string | undefined> {
    const key = this.queue.shift();
    if (key !== undefined) return Promise.resolve(this.handOut(key));
    if (this.shuttingDown) return Promise.resolve(undefined);
    return new Promise((resolve) => this.getters.push(resolve));
  }

  /** Marks `key` finished; if it was added meanwhile, it is queued again. */
  done(key: string): void {
    this.processing.delete(key);
    if (this.dirty.has(key) && !this.shuttingDown) this.push(key);
  }

  /** Stops handing out keys: waiting workers get undefined, delayed adds are dropped. */
  shutDown(): void {
    this.shuttingDown = true;
    for (const { timer } of this.waiting.values()) clearTimeout(timer);
    this.waiting.clear();
    for (const getter of this.getters.splice(0)) getter(undefined);
  }

  private push(key: string): void {
    const getter = this.getters.shift();
    if (getter) getter(this.handOut(key));
    else {
      this.queue.push(key);
      this.options.metrics?.depth.set(this.queue.length);
    }
  }

  private handOut(key: string): string {
    const addedAt = this.dirty.get(key) ?? this.now();
    this.dirty.delete(key);
    this.processing.add(key);
    this.options.metrics?.depth.set(this.queue.length);
    this.options.metrics?.queueDuration.observe((this.now() - addedAt) / 1000);
    return key;
  }

  /** Takes a token from the global bucket; the delay until that token exists. */
  private bucketDelayMs(): number {
    const now = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.tokensAt) / 1000) * this.ratePerSecond);
    this.tokensAt = now;
    this.tokens -= 1;
    return this.tokens >= 0 ? 0 : (-this.tokens / this.ratePerSecond) * 1000;
  }
}
