/**
 * The Instance controller's shell: it gathers what reconcileInstance needs from the informers and
 * the agents' reports, and carries out the result (finalizer, status, jobs, Events). Instances are
 * queued again when something they depend on changes: their Host or its agent, a Network of their
 * namespace, a report or job result on them, and (for those waiting for room or an address) the
 * deletion of another Instance or any change of Hosts.
 *
 * Scheduling and address allocation decide on every Instance at once, so reconciles that may
 * allocate run one at a time and read this process's own writes through an assume cache; the
 * status write carries the resourceVersion the decision was made on, so a decision on stale data
 * (another control plane's write, say) fails with 409 and is made again.
 */
import type { CoreV1Api, KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { type Host, type Instance, instanceKind, type Network } from '../../crds/v1alpha1/index.js';
import { observedRouter } from '../network/controller.js';
import type { AgentState, JobFailure, ObjectRef } from '../runtime/agent-state.js';
import { type Cache, objectKey, type ReconcileResult } from '../runtime/controller.js';
import { ObjectController } from '../runtime/object-controller.js';
import { carryOut } from '../runtime/outcome.js';
import { isApiStatus } from '../runtime/retry.js';
import { Serialized } from '../runtime/serialized.js';
import type { EventRecorder, ObjectWriter } from '../runtime/writes.js';
import {
  type InstanceJob,
  type InstanceReconcileInput,
  instanceFinalizer,
  type ObservedInstance,
  reconcileInstance,
} from './reconcile.js';

export interface InstanceControllerOptions {
  instances: Cache<KubernetesObject>;
  hosts: Cache<KubernetesObject>;
  networks: Cache<KubernetesObject>;
  agents: AgentState;
  /** Reads the Secrets spec.cloudInit.userDataSecretRef names. */
  core: CoreV1Api;
  writer: ObjectWriter;
  events: EventRecorder;
  logger: Logger;
  registry: Registry;
  workers?: number;
  /** How long the hub waits for an agent's answer to one job. */
  jobDeadlineMs?: number;
}

/** Time for an agent to define and start a domain (image downloads included) before the job is retried. */
const defaultJobDeadlineMs = 10 * 60_000;

function instanceRef(namespace: string, name: string): ObjectRef {
  return { kind: instanceKind.kind, namespace, name };
}

/**
 * Per DHCP Network the Instance attaches to that is placed on a Router: the leases that router
 * reports serving, none while it has not reported the Network. A Network on no Router has no
 * DHCP to wait for.
 */
function servedLeases(
  agents: AgentState,
  instance: Instance,
  networks: readonly Network[],
): Map<string, Set<string>> {
  const served = new Map<string, Set<string>>();
  for (const { name } of instance.spec.networks ?? []) {
    const network = networks.find((candidate) => candidate.metadata.name === name);
    if (!network?.status?.router || network.spec.dhcp.enabled === false) continue;
    served.set(name, new Set(observedRouter(agents, network)?.leases ?? []));
  }
  return served;
}

/** Reconciles that may schedule or allocate: no Host yet, or an attachment without an address. */
function allocates(instance: Instance): boolean {
  const status = instance.status;
  return (
    status?.host === undefined ||
    (instance.spec.networks ?? []).some(
      (attachment) => !status.interfaces?.some((i) => i.network === attachment.name && i.ipAddress),
    )
  );
}

/** An agent report, checked for the shape reconcileInstance relies on. */
function asObservedInstance(observed: unknown): ObservedInstance | undefined {
  const value = observed as Partial<ObservedInstance> | undefined;
  const states = ['running', 'stopped', 'crashed', 'absent'];
  return value && typeof value.state === 'string' && states.includes(value.state)
    ? (value as ObservedInstance)
    : undefined;
}

export class InstanceController extends ObjectController<Instance> {
  /** Reconciles that may schedule or allocate, one at a time. */
  private readonly allocation = new Serialized();
  private readonly jobDeadlineMs: number;

  constructor(private readonly options: InstanceControllerOptions) {
    super({
      name: 'instance',
      cache: options.instances,
      workers: options.workers ?? 4,
      logger: options.logger,
      registry: options.registry,
    });
    this.jobDeadlineMs = options.jobDeadlineMs ?? defaultJobDeadlineMs;
    this.watch();
  }

  private watch(): void {
    const queue = this.controller.queue;
    const { instances, hosts, networks, agents } = this.options;
    const all = () => instances.list() as Instance[];
    const enqueue = (instance: Instance) => queue.add(objectKey(instance));
    const waiting = (instance: Instance) => allocates(instance);

    instances.on('add', (obj) => queue.add(objectKey(obj)));
    instances.on('update', (obj) => queue.add(objectKey(obj)));
    instances.on('delete', (obj) => {
      queue.add(objectKey(obj));
      // Its cpus, memory and addresses are free again.
      for (const instance of all()) if (waiting(instance)) enqueue(instance);
    });
    const onHost = (obj: KubernetesObject) => {
      for (const instance of all()) {
        if (instance.status?.host === obj.metadata?.name || waiting(instance)) enqueue(instance);
      }
    };
    for (const event of ['add', 'update', 'delete'] as const) hosts.on(event, onHost);
    const onNetwork = (obj: KubernetesObject) => {
      const network = obj as Network;
      for (const instance of instances.list(network.metadata.namespace) as Instance[]) {
        if (instance.spec.networks?.some((n) => n.name === network.metadata.name)) enqueue(instance);
      }
    };
    for (const event of ['add', 'update', 'delete'] as const) networks.on(event, onNetwork);
    agents.on('change', (ref) => {
      // A router's report on a Network: the leases it serves may let an Instance start.
      if (ref.kind === 'Network') {
        const network = networks.get(ref.name, ref.namespace);
        if (network) onNetwork(network);
        return;
      }
      if (ref.kind !== instanceKind.kind) return;
      const key = `${ref.namespace}/${ref.name}`;
      queue.add(key); // a failed job is held back by the reconcile (AgentState.paced)
    });
    agents.on('agent', (agent) => {
      if (agent.role !== 'libvirt') return;
      for (const instance of all()) if (instance.status?.host === agent.name) enqueue(instance);
    });
  }

  protected async reconcile(key: string, logger: Logger): Promise<ReconcileResult | undefined> {
    const [namespace = '', name = ''] = key.split('/');
    let instance = this.objects.get(name, namespace);
    if (!instance) {
      this.options.agents.clear(instanceRef(namespace, name));
      return undefined;
    }
    if (!allocates(instance)) return this.reconcileInstance(instance, logger);
    // The finalizer first, outside the queue of allocating reconciles: one write less to wait for.
    const finalizers = instance.metadata.finalizers ?? [];
    if (instance.metadata.deletionTimestamp === undefined && !finalizers.includes(instanceFinalizer)) {
      instance = await this.options.writer.replaceFinalizers(instanceKind, instance, [
        ...finalizers,
        instanceFinalizer,
      ]);
      this.objects.assume(instance);
    }
    return this.allocation.run(() => this.reconcileInstance(this.objects.get(name, namespace), logger));
  }

  private async reconcileInstance(
    instance: Instance | undefined,
    logger: Logger,
  ): Promise<ReconcileResult | undefined> {
    if (!instance) return undefined;
    const { agents } = this.options;
    const namespace = instance.metadata.namespace ?? '';
    const ref = instanceRef(namespace, instance.metadata.name ?? '');
    const uid = instance.metadata.uid ?? '';
    const host = instance.status?.host;
    const generation = instance.metadata.generation ?? 0;
    const isApply = (failure: JobFailure) => failure.type === 'instance.apply';
    const rejection = agents.rejectionsOf(ref, uid, generation).find(isApply);
    const failure = agents.failuresOf(ref, uid, generation).find(isApply);
    const userDataSecret = await this.userDataSecret(instance);
    const networks = this.options.networks.list(namespace) as Network[];
    const result = reconcileInstance({
      instance,
      hosts: this.options.hosts.list() as Host[],
      networks,
      servedLeases: servedLeases(agents, instance, networks),
      instances: this.objects.overlay(this.options.instances.list() as Instance[]),
      ...observedOn(agents, ref, uid, host),
      connectedAgents: agents.connected('libvirt'),
      inFlight: agents.jobsFor(ref, uid) as InstanceJob[],
      ...(rejection ? { rejection } : {}),
      ...(failure ? { failure } : {}),
      ...(userDataSecret ? { userDataSecret } : {}),
      now: new Date(),
    });
    const paced = agents.paced(ref, result.jobs);
    await carryOut(
      instance,
      { ...result, jobs: paced.jobs },
      {
        kind: instanceKind,
        finalizer: instanceFinalizer,
        writer: this.options.writer,
        agents,
        events: this.options.events,
        assumed: this.objects,
        jobDeadlineMs: this.jobDeadlineMs,
        logger,
      },
    );
    // Nothing watches arbitrary Secrets: look again for one that is not there yet.
    const waits = [
      ...(userDataSecret && 'problem' in userDataSecret ? [missingSecretPollMs] : []),
      ...(paced.requeueAfterMs === undefined ? [] : [paced.requeueAfterMs]),
    ];
    return waits.length > 0 ? { requeueAfterMs: Math.min(...waits) } : undefined;
  }

  /** The value spec.cloudInit.userDataSecretRef names, or why there is none; undefined without one. */
  private async userDataSecret(instance: Instance): Promise<InstanceReconcileInput['userDataSecret']> {
    const ref = instance.spec.cloudInit?.userDataSecretRef;
    if (ref === undefined) return undefined;
    const namespace = instance.metadata.namespace ?? '';
    const field = 'spec.cloudInit.userDataSecretRef';
    try {
      const secret = await this.options.core.readNamespacedSecret({ name: ref.name, namespace });
      const value = secret.data?.[ref.key];
      return value === undefined
        ? { problem: `${field}.key: Secret ${namespace}/${ref.name} has no key ${ref.key}` }
        : { userData: Buffer.from(value, 'base64').toString('utf8') };
    } catch (err) {
      if (isApiStatus(err, 404)) {
        return { problem: `${field}.name: Secret ${namespace}/${ref.name} does not exist` };
      }
      throw err;
    }
  }
}

/** How long an Instance whose user-data Secret is missing waits before looking again. */
const missingSecretPollMs = 10_000;

/** What the agent of `host` reported of the Instance with `uid`, in reconcileInstance's terms. */
function observedOn(
  agents: AgentState,
  ref: ObjectRef,
  uid: string,
  host: string | undefined,
): { observed?: ObservedInstance } {
  if (host === undefined) return {};
  const agent = { role: 'libvirt' as const, name: host };
  const observation = agents.observation(ref, agent);
  // A report on an earlier Instance of the same name is about a domain this one does not own.
  const mine = observation && (observation.uid === '' || observation.uid === uid);
  const observed = mine ? asObservedInstance(observation.observed) : undefined;
  if (observed) return { observed };
  return agents.hasReported(agent) ? { observed: { state: 'absent' } } : {};
}
