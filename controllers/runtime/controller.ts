/**
 * The loop every controller runs, as in controller-runtime: informers turn changes into keys on a
 * work queue; workers take keys one at a time per key and call reconcile, which re-reads what it
 * needs from the caches. A thrown error retries the key with backoff, `requeueAfterMs` polls, and
 * a success forgets the key's failures. Cached objects are frozen, so no reconcile can change
 * what another one sees.
 */
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { KindInfo } from '../../crds/kind.js';
import { WorkQueue } from './workqueue.js';

/** What the runtime needs of an object, satisfied by client-node's objects and by crds/ types alike. */
export interface ApiObject {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    finalizers?: string[];
  };
}

/** An informer and its cache, as startInformer returns them. */
export type Cache<T extends k8s.KubernetesObject = k8s.KubernetesObject> = k8s.Informer<T> &
  k8s.ObjectCache<T>;

export interface ReconcileResult {
  /** Look at this key again after this long even if nothing changes (polling). */
  requeueAfterMs?: number;
}

export type Reconciler = (key: string, logger: Logger) => Promise<ReconcileResult | undefined>;

export interface ControllerOptions {
  name: string;
  reconcile: Reconciler;
  /** Parallel workers; one key is never worked on by two at once. */
  workers?: number;
  logger: Logger;
  registry: Registry;
  /** Queue tuning (tests shorten the backoff). */
  queue?: ConstructorParameters<typeof WorkQueue>[0];
}

interface ControllerMetrics {
  reconciles: Counter<'controller' | 'result'>;
  reconcileTime: Histogram<'controller'>;
  depth: Gauge<'name'>;
  queueDuration: Histogram<'name'>;
  retries: Counter<'name'>;
}

const metricsByRegistry = new WeakMap<Registry, ControllerMetrics>();

/** The controller metrics of a registry, made once (prom-client refuses a name twice). */
function controllerMetrics(registry: Registry): ControllerMetrics {
  let metrics = metricsByRegistry.get(registry);
  if (!metrics) {
    const registers = [registry];
    metrics = {
      reconciles: new Counter({
        name: 'loam_reconcile_total',
        help: 'Reconciles by controller and result (success, error, requeue).',
        labelNames: ['controller', 'result'],
        registers,
      }),
      reconcileTime: new Histogram({
        name: 'loam_reconcile_time_seconds',
        help: 'How long reconciles take, by controller.',
        labelNames: ['controller'],
        buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
        registers,
      }),
      depth: new Gauge({
        name: 'loam_workqueue_depth',
        help: 'Keys waiting in a work queue.',
        labelNames: ['name'],
        registers,
      }),
      queueDuration: new Histogram({
        name: 'loam_workqueue_queue_duration_seconds',
        help: 'How long keys wait in a work queue before a worker takes them.',
        labelNames: ['name'],
        buckets: [0.0001, 0.001, 0.01, 0.1, 1, 10, 60],
        registers,
      }),
      retries: new Counter({
        name: 'loam_workqueue_retries_total',
        help: 'Keys re-queued after a failure.',
        labelNames: ['name'],
        registers,
      }),
    };
    metricsByRegistry.set(registry, metrics);
  }
  return metrics;
}

/** `namespace/name`, or `name` for a cluster-scoped object: the key of a work item. */
export function objectKey(obj: ApiObject): string {
  const { namespace, name } = obj.metadata ?? {};
  return namespace ? `${namespace}/${name}` : (name ?? '');
}

export class Controller {
  readonly queue: WorkQueue;
  private readonly metrics: ControllerMetrics;
  private workers: Promise<void>[] = [];

  constructor(private readonly options: ControllerOptions) {
    this.metrics = controllerMetrics(options.registry);
    const name = options.name;
    this.queue = new WorkQueue({
      ...options.queue,
      metrics: {
        depth: this.metrics.depth.labels({ name }),
        queueDuration: this.metrics.queueDuration.labels({ name }),
        retries: this.metrics.retries.labels({ name }),
      },
    });
  }

  /** Queues the key of every object `informer` adds, changes or deletes. */
  watch(
    informer: k8s.Informer<k8s.KubernetesObject>,
    keyOf: (obj: k8s.KubernetesObject) => string = objectKey,
  ): void {
    const enqueue = (obj: k8s.KubernetesObject) => this.queue.add(keyOf(obj));
    informer.on('add', enqueue);
    informer.on('update', enqueue);
    informer.on('delete', enqueue);
  }

  start(): void {
    const count = this.options.workers ?? 2;
    this.workers = Array.from({ length: count }, () => this.work());
  }

  /** Stops taking keys and waits for the reconciles under way. */
  async stop(): Promise<void> {
    this.queue.shutDown();
    await Promise.all(this.workers);
  }

  private async work(): Promise<void> {
    const { name, reconcile } = this.options;
    for (let key = await this.queue.get(); key !== undefined; key = await this.queue.get()) {
      const logger = this.options.logger.child({ controller: name, key });
      const stopTimer = this.metrics.reconcileTime.startTimer({ controller: name });
      try {
        const result = await reconcile(key, logger);
        this.queue.forget(key);
        if (result?.requeueAfterMs !== undefined) {
          this.queue.addAfter(key, result.requeueAfterMs);
          this.metrics.reconciles.inc({ controller: name, result: 'requeue' });
        } else {
          this.metrics.reconciles.inc({ controller: name, result: 'success' });
        }
      } catch (err) {
        const delayMs = this.queue.addRateLimited(key);
        this.metrics.reconciles.inc({ controller: name, result: 'error' });
        logger.warn({ err, retryInMs: Math.round(delayMs) }, 'reconcile failed');
      } finally {
        stopTimer();
        this.queue.done(key);
      }
    }
  }
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/** Delay before an informer whose connection failed starts again (client-node leaves it stopped). */
const informerRestartMs = 1000;

/**
 * A started informer over `kind` (in `namespace`, or everywhere; only objects matching
 * `labelSelector` when given), through the Kubernetes API, so the same code runs against Loam's
 * API server and a real cluster. Its objects are frozen; it restarts by itself after a connection
 * error until `signal` aborts.
 */
export async function startInformer(
  kc: k8s.KubeConfig,
  kind: KindInfo,
  options: { namespace?: string; labelSelector?: string; logger: Logger; signal: AbortSignal },
): Promise<Cache> {
  const prefix = kind.group ? `/apis/${kind.group}/${kind.version}` : `/api/${kind.version}`;
  const path = `${prefix}${options.namespace ? `/namespaces/${options.namespace}` : ''}/${kind.plural}`;
  const api = k8s.KubernetesObjectApi.makeApiClient(kc);
  const apiVersion = kind.group ? `${kind.group}/${kind.version}` : kind.version;
  const { labelSelector } = options;
  const informer = k8s.makeInformer(
    kc,
    path,
    () =>
      api.list(
        apiVersion,
        kind.kind,
        options.namespace,
        undefined,
        undefined,
        undefined,
        undefined,
        labelSelector,
      ) as Promise<k8s.KubernetesListObject<k8s.KubernetesObject>>,
    labelSelector,
  );
  // Registered first, so every other handler sees the frozen object.
  informer.on('add', deepFreeze);
  informer.on('update', deepFreeze);
  informer.on('error', (err) => {
    if (options.signal.aborted) return;
    options.logger.warn({ err, resource: kind.plural }, 'informer connection failed; restarting');
    setTimeout(() => {
      if (!options.signal.aborted) informer.start().catch(() => {});
    }, informerRestartMs);
  });
  options.signal.addEventListener('abort', () => void informer.stop(), { once: true });
  await informer.start();
  return informer;
}
