/**
 * The Router controller's shell: it counts the Networks placed on each Router (reconcileRouter)
 * and patches status.networks when the count changes, queueing a Router when a Network placed on
 * it comes, changes or goes.
 */
import type { KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { type Network, type Router, routerKind } from '../../crds/v1alpha1/index.js';
import type { Cache } from '../runtime/controller.js';
import { ObjectController } from '../runtime/object-controller.js';
import type { ObjectWriter } from '../runtime/writes.js';
import { reconcileRouter } from './reconcile.js';

export interface RouterControllerOptions {
  routers: Cache;
  networks: Cache;
  writer: ObjectWriter;
  logger: Logger;
  registry: Registry;
}

export class RouterController extends ObjectController<Router> {
  constructor(private readonly options: RouterControllerOptions) {
    super({
      name: 'router',
      cache: options.routers,
      workers: 1,
      logger: options.logger,
      registry: options.registry,
    });
    const queue = this.controller.queue;
    options.routers.on('add', (obj) => queue.add(obj.metadata?.name ?? ''));
    const onNetwork = (obj: KubernetesObject) => {
      const router = (obj as Network).status?.router;
      if (router) queue.add(router);
    };
    for (const event of ['add', 'update', 'delete'] as const) options.networks.on(event, onNetwork);
  }

  protected async reconcile(name: string): Promise<undefined> {
    const router = this.objects.get(name);
    if (!router) return undefined;
    const patch = reconcileRouter(router, this.options.networks.list() as Network[]);
    if (patch) this.objects.assume(await this.options.writer.patchStatus(routerKind, router, patch));
    return undefined;
  }
}
