import type { Logger } from 'pino';
import { AssumedObjects } from './assumed.js';
import {
  type ApiObject,
  type Cache,
  Controller,
  type ControllerOptions,
  objectKey,
  type ReconcileResult,
} from './controller.js';

/**
 * A controller of one kind of object: the loop, and an assume cache over the kind's informer
 * through which reconciles read their objects. Subclasses reconcile and say what queues what.
 */
export abstract class ObjectController<T extends ApiObject> {
  protected readonly controller: Controller;
  protected readonly objects: AssumedObjects<T>;

  constructor(options: Omit<ControllerOptions, 'reconcile'> & { cache: Cache }) {
    this.objects = new AssumedObjects<T>({
      get: (name, namespace) => options.cache.get(name, namespace) as T | undefined,
    });
    this.controller = new Controller({ ...options, reconcile: (key, logger) => this.reconcile(key, logger) });
  }

  protected abstract reconcile(key: string, logger: Logger): Promise<ReconcileResult | undefined>;

  start(): void {
    this.controller.start();
  }

  enqueue(object: ApiObject): void {
    this.controller.queue.add(objectKey(object));
  }

  stop(): Promise<void> {
    return this.controller.stop();
  }
}
