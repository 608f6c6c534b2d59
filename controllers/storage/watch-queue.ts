/**
 * The buffer between a store and one watcher: the store pushes events, the watcher iterates.
 * It is bounded — a consumer that falls `maxBuffered` events behind is ended with WatchTooSlow
 * (it must re-list, as a Kubernetes client does on 410) rather than letting memory grow without
 * limit — and it tells a replaying producer when there is room for more.
 */
import { LoamError } from '../../crds/errors.js';
import type { Watch, WatchEvent } from './store.js';

export const defaultMaxBuffered = 100_000;

export class WatchQueue implements Watch {
  private readonly buffer: WatchEvent[] = [];
  private head = 0;
  private waiter: ((r: IteratorResult<WatchEvent>) => void) | undefined;
  private waiterReject: ((err: unknown) => void) | undefined;
  private error: unknown;
  private ended = false;

  /**
   * @param onClose called once when the consumer stops (close, break, or end of iteration)
   * @param onDrain called when the buffer empties, so a replaying producer can read more history
   */
  constructor(
    private readonly onClose: () => void,
    private readonly onDrain: () => void = () => {},
    private readonly maxBuffered = defaultMaxBuffered,
  ) {}

  get buffered(): number {
    return this.buffer.length - this.head;
  }

  get closed(): boolean {
    return this.ended || this.error !== undefined;
  }

  push(event: WatchEvent): void {
    if (this.closed) return;
    if (this.waiter) {
      const resolve = this.waiter;
      this.clearWaiter();
      resolve({ value: event, done: false });
      return;
    }
    if (this.buffered >= this.maxBuffered) {
      this.fail(new LoamError('WatchTooSlow', `watcher fell more than ${this.maxBuffered} events behind`));
      return;
    }
    this.buffer.push(event);
  }

  /** Ends the watch with an error; the consumer sees it after the events already buffered. */
  fail(err: unknown): void {
    if (this.closed) return;
    this.error = err;
    this.onClose();
    if (this.waiterReject) {
      const reject = this.waiterReject;
      this.clearWaiter();
      reject(err);
    }
  }

  close(): void {
    if (this.closed) return;
    this.ended = true;
    this.onClose();
    if (this.waiter) {
      const resolve = this.waiter;
      this.clearWaiter();
      resolve({ value: undefined, done: true });
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<WatchEvent> {
    return {
      next: () => this.next(),
      return: async () => {
        this.close();
        return { value: undefined, done: true };
      },
    };
  }

  private next(): Promise<IteratorResult<WatchEvent>> {
    if (this.head < this.buffer.length) {
      const value = this.buffer[this.head] as WatchEvent;
      this.head++;
      if (this.head === this.buffer.length) {
        this.buffer.length = 0;
        this.head = 0;
        if (!this.closed) this.onDrain();
      } else if (this.head > 1024 && this.head * 2 > this.buffer.length) {
        this.buffer.splice(0, this.head);
        this.head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.error !== undefined) return Promise.reject(this.error);
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    this.onDrain();
    return new Promise((resolve, reject) => {
      this.waiter = resolve;
      this.waiterReject = reject;
    });
  }

  private clearWaiter(): void {
    this.waiter = undefined;
    this.waiterReject = undefined;
  }
}
