/**
 * The Host controller's shell: it judges the domains each Host's agent lists against the cached
 * Instances (reconcileHost), patches status.orphanedDomains, records the Events and keeps the
 * gauge loam_host_orphaned_domains. A Host is queued when it changes, when its agent's inventory
 * does, and when an Instance its agent lists comes or goes. Nothing is judged too early: the
 * informers have listed every Instance before this starts, an Instance is cached before any job
 * makes its domain, and a Host is judged only once its agent has reported its whole inventory.
 */
import type { KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { Gauge, type Registry } from 'prom-client';
import { type Host, hostKind, instanceKind } from '../../crds/v1alpha1/index.js';
import type { AgentState } from '../runtime/agent-state.js';
import type { Cache } from '../runtime/controller.js';
import { ObjectController } from '../runtime/object-controller.js';
import type { EventRecorder, ObjectWriter } from '../runtime/writes.js';
import { reconcileHost } from './reconcile.js';

export interface HostControllerOptions {
  hosts: Cache;
  instances: Cache;
  agents: AgentState;
  writer: ObjectWriter;
  events: EventRecorder;
  logger: Logger;
  registry: Registry;
}

const gaugeName = 'loam_host_orphaned_domains';

/** The gauge of a registry, made once (prom-client refuses a name twice; a new leader term reuses it). */
function orphanGauge(registry: Registry): Gauge<'host'> {
  return (
    (registry.getSingleMetric(gaugeName) as Gauge<'host'> | undefined) ??
    new Gauge({
      name: gaugeName,
      help: 'Domains with Loam metadata on a Host that no Instance wants (status.orphanedDomains).',
      labelNames: ['host'],
      registers: [registry],
    })
  );
}

export class HostController extends ObjectController<Host> {
  private readonly orphans: Gauge<'host'>;

  constructor(private readonly options: HostControllerOptions) {
    super({
      name: 'host',
      cache: options.hosts,
      workers: 1,
      logger: options.logger,
      registry: options.registry,
    });
    this.orphans = orphanGauge(options.registry);
    const queue = this.controller.queue;
    this.controller.watch(options.hosts);
    options.agents.on('inventory', (agent) => {
      if (agent.role === 'libvirt') queue.add(agent.name);
    });
    const onInstance = (obj: KubernetesObject) => {
      const ref = {
        kind: instanceKind.kind,
        namespace: obj.metadata?.namespace ?? '',
        name: obj.metadata?.name ?? '',
      };
      for (const agent of options.agents.listing(ref)) if (agent.role === 'libvirt') queue.add(agent.name);
    };
    options.instances.on('add', onInstance);
    options.instances.on('delete', onInstance);
  }

  protected async reconcile(name: string): Promise<undefined> {
    const host = this.objects.get(name);
    if (!host) {
      this.orphans.remove({ host: name });
      return undefined;
    }
    const { agents, instances, writer, events } = this.options;
    const result = reconcileHost({
      host,
      inventory: agents.inventory({ role: 'libvirt', name }),
      instanceUid: (namespace, instance) => instances.get(instance, namespace)?.metadata?.uid,
    });
    // The patch first: one that fails is retried, and would record its Events twice.
    if (result.patch) this.objects.assume(await writer.patchStatus(hostKind, host, result.patch));
    for (const event of result.events) events.record(host, event);
    if (result.orphans !== undefined) this.orphans.set({ host: name }, result.orphans);
    return undefined;
  }

  override async stop(): Promise<void> {
    await super.stop();
    // A control plane that no longer leads judges nothing.
    this.orphans.reset();
  }
}
