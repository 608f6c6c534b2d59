/**
 * What kube-controller-manager's namespace controller does, built into the API server: a deleted
 * Namespace stays Terminating while it has content; every object in it is deleted (objects with
 * finalizers wait for their owners), and once it is empty the `kubernetes` finalizer is removed
 * so the Namespace goes. Driven by one store watch: a Namespace marked deleted, or an object
 * leaving a terminating Namespace, makes that Namespace be looked at again.
 */
import type { Logger } from 'pino';
import { namespaceKind } from '../../crds/builtin.js';
import { isLoamError } from '../../crds/errors.js';
import type { KindInfo } from '../../crds/kind.js';
import type { Store, Watch } from '../storage/store.js';
import { decode, type Resources } from './resources.js';
import { storagePrefix } from './routing.js';

/** Delay before a failed pass over a Namespace is tried again. */
const retryMs = 1000;

export class NamespaceLifecycle {
  private watch: Watch | undefined;
  private stopped = false;
  /** Namespaces being emptied now, and whether another pass was asked for meanwhile. */
  private readonly running = new Map<string, boolean>();
  private readonly retries = new Set<NodeJS.Timeout>();
  private readonly namespacePrefix = storagePrefix(namespaceKind);
  private readonly namespaced: KindInfo[];

  private constructor(
    private readonly store: Store,
    private readonly resources: Resources,
    kinds: readonly KindInfo[],
    private readonly logger: Logger,
  ) {
    this.namespaced = kinds.filter((k) => k.scope === 'Namespaced');
  }

  static async start(
    store: Store,
    resources: Resources,
    kinds: readonly KindInfo[],
    logger: Logger,
  ): Promise<NamespaceLifecycle> {
    const lifecycle = new NamespaceLifecycle(store, resources, kinds, logger);
    await lifecycle.follow();
    return lifecycle;
  }

  stop(): void {
    this.stopped = true;
    this.watch?.close();
    for (const timer of this.retries) clearTimeout(timer);
  }

  /** Scans the terminating Namespaces, then follows changes; a broken watch starts over. */
  private async follow(): Promise<void> {
    const namespaces = await this.store.list(this.namespacePrefix);
    for (const kv of namespaces.items) {
      const ns = decode(kv);
      if (ns.metadata.deletionTimestamp) this.schedule(ns.metadata.name as string);
    }
    const watch = await this.store.watch('/registry/', namespaces.revision);
    this.watch = watch;
    void (async () => {
      try {
        for await (const event of watch) {
          if (event.kv.key.startsWith(this.namespacePrefix)) {
            if (event.type === 'put' && decode(event.kv).metadata.deletionTimestamp) {
              this.schedule(event.kv.key.slice(this.namespacePrefix.length));
            }
          } else if (event.type === 'delete') {
            const namespace = this.namespaceOf(event.kv.key);
            if (namespace !== undefined && this.running.has(namespace)) this.running.set(namespace, true);
            else if (namespace !== undefined) this.scheduleIfTerminating(namespace);
          }
        }
      } catch (err) {
        // Compacted or too slow: nothing is lost by rescanning from now.
        if (!this.stopped) this.logger.warn({ err }, 'namespace lifecycle watch ended; rescanning');
      }
      if (!this.stopped) this.retryLater(() => this.follow());
    })();
  }

  private namespaceOf(key: string): string | undefined {
    for (const kind of this.namespaced) {
      const prefix = storagePrefix(kind);
      if (key.startsWith(prefix)) return key.slice(prefix.length).split('/')[0];
    }
    return undefined;
  }

  private scheduleIfTerminating(namespace: string): void {
    this.store.get(`${this.namespacePrefix}${namespace}`).then(
      (kv) => {
        if (kv && decode(kv).metadata.deletionTimestamp) this.schedule(namespace);
      },
      (err: unknown) => this.logger.warn({ err, namespace }, 'reading a namespace failed'),
    );
  }

  /** Runs passes over `namespace` one at a time, again if something changed during one. */
  private schedule(namespace: string): void {
    if (this.stopped) return;
    if (this.running.has(namespace)) {
      this.running.set(namespace, true);
      return;
    }
    this.running.set(namespace, false);
    void (async () => {
      let again = true;
      while (again && !this.stopped) {
        this.running.set(namespace, false);
        try {
          await this.pass(namespace);
        } catch (err) {
          this.logger.warn({ err, namespace }, 'emptying a terminating namespace failed; retrying');
          this.retryLater(async () => this.schedule(namespace));
          break;
        }
        again = this.running.get(namespace) ?? false;
      }
      this.running.delete(namespace);
    })();
  }

  /** One pass: delete what is left in the Namespace; finalize it when nothing is. */
  private async pass(namespace: string): Promise<void> {
    let remaining = 0;
    for (const kind of this.namespaced) {
      const req = { type: 'resource' as const, kind, verb: 'deletecollection' as const, namespace };
      const left = await this.resources.deleteCollection(req, new URLSearchParams());
      // Deleted outright unless finalizers hold them; those come back as delete events later.
      remaining += left.items.filter((obj) => obj.metadata.deletionTimestamp).length;
    }
    if (remaining > 0) return;
    try {
      await this.resources.finalizeNamespace(namespace);
    } catch (err) {
      if (!isLoamError(err, 'NotFound')) throw err;
    }
  }

  private retryLater(action: () => Promise<void>): void {
    const timer = setTimeout(() => {
      this.retries.delete(timer);
      if (!this.stopped) {
        action().catch((err: unknown) => this.logger.warn({ err }, 'namespace lifecycle retry failed'));
      }
    }, retryMs);
    this.retries.add(timer);
  }
}
