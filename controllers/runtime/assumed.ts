/**
 * Objects this process has just written, read in place of the older copies an informer still
 * holds until the watch delivers the write (kube-scheduler's assume cache). Without it, the next
 * reconcile after a write could decide on the state before it: hand out an address or a Host's
 * last cpus a second time.
 */
import { type ApiObject, objectKey } from './controller.js';

/** Whether resourceVersion `cached` is at least `written` (numeric in etcd and Loam's store). */
function caughtUp(cached: string | undefined, written: string | undefined): boolean {
  if (cached === written) return true;
  if (cached === undefined || written === undefined) return false;
  if (/^\d+$/.test(cached) && /^\d+$/.test(written)) return BigInt(cached) >= BigInt(written);
  return false;
}

export class AssumedObjects<T extends ApiObject> {
  private readonly written = new Map<string, T>();

  constructor(private readonly cache: { get(name: string, namespace?: string): T | undefined }) {}

  /** Remembers a write's response until the cache has it. */
  assume(object: T): void {
    this.written.set(objectKey(object), object);
  }

  /** The newest copy of `namespace/name`: this process's write or the cache's, whichever is newer. */
  get(name: string, namespace?: string): T | undefined {
    const cached = this.cache.get(name, namespace);
    return this.fresher(namespace ? `${namespace}/${name}` : name, cached);
  }

  /** `list` with this process's newer writes in place of the cached copies. */
  overlay(list: readonly T[]): T[] {
    if (this.written.size === 0) return [...list];
    return list.map((cached) => this.fresher(objectKey(cached), cached) ?? cached);
  }

  private fresher(key: string, cached: T | undefined): T | undefined {
    const written = this.written.get(key);
    if (written === undefined) return cached;
    // Gone from the cache (deleted), or the cache caught up (or holds a newer object): forget the write.
    if (
      cached === undefined ||
      cached.metadata?.uid !== written.metadata?.uid ||
      caughtUp(cached.metadata?.resourceVersion, written.metadata?.resourceVersion)
    ) {
      this.written.delete(key);
      return cached;
    }
    return written;
  }
}
