/**
 * The Network controller's shell: it gathers what reconcileNetwork needs from the informers and
 * the agents' reports, and carries out the result (finalizer, status, jobs, Events) as the
 * Instance controller's shell does. A Network is queued again when it, a Network it shares a
 * Router with, its Router or that Router's agent, an Instance or WireGuardPeer of its namespace,
 * or a report or job result on it changes; Networks not placed yet are queued on any Network or
 * Router change, since either may make room for them.
 *
 * Placement and segment allocation decide on every Network at once, so reconciles that may place
 * run one at a time and read this process's own writes through an assume cache; the status write
 * carries the resourceVersion the decision was made on, so a decision on stale data fails with
 * 409 and is made again.
 */
import type { KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import {
  type Instance,
  type Network,
  networkKind,
  type Router,
  type WireGuardPeer,
} from '../../crds/v1alpha1/index.js';
import type { AgentState, ObjectRef, Observation } from '../runtime/agent-state.js';
import { type Cache, objectKey, type ReconcileResult } from '../runtime/controller.js';
import { ObjectController } from '../runtime/object-controller.js';
import { carryOut } from '../runtime/outcome.js';
import { Serialized } from '../runtime/serialized.js';
import type { EventRecorder, ObjectWriter } from '../runtime/writes.js';
import {
  type NetworkJob,
  networkFinalizer,
  type ObservedNetwork,
  type ObservedSegment,
  reconcileNetwork,
} from './reconcile.js';

export interface NetworkControllerOptions {
  networks: Cache<KubernetesObject>;
  routers: Cache<KubernetesObject>;
  instances: Cache<KubernetesObject>;
  peers: Cache<KubernetesObject>;
  agents: AgentState;
  writer: ObjectWriter;
  events: EventRecorder;
  logger: Logger;
  registry: Registry;
  workers?: number;
  /** How long the hub waits for an agent's answer to one job. */
  jobDeadlineMs?: number;
}

/** Time for a router or a host to apply a Network's configuration before the job is retried. */
const defaultJobDeadlineMs = 2 * 60_000;

export function networkRef(namespace: string, name: string): ObjectRef {
  return { kind: networkKind.kind, namespace, name };
}

/** Reconciles that may place the Network or allocate its segment. */
function allocates(network: Network): boolean {
  return network.status?.router === undefined || network.status.segment === undefined;
}

/** A report on the Network with `uid`: one on an earlier Network of the same name is about config it does not own. */
function isFor(observation: Observation, uid: string): boolean {
  return observation.uid === '' || observation.uid === uid;
}

/**
 * What the network agent of the Network's Router reported of it, in reconcileNetwork's terms:
 * `{}` when the agent said Hello without it, undefined when nothing is known since start.
 */
export function observedRouter(agents: AgentState, network: Network): ObservedNetwork | undefined {
  const router = network.status?.router;
  if (router === undefined) return undefined;
  const { namespace = '', name = '', uid = '' } = network.metadata;
  const agent = { role: 'network' as const, name: router };
  const observation = agents.observation(networkRef(namespace, name), agent);
  const observed = observation && isFor(observation, uid) ? observation.observed : undefined;
  if (observed !== null && typeof observed === 'object') return observed as ObservedNetwork;
  return agents.hasReported(agent) ? {} : undefined;
}

/** Per Host, the segment its libvirt agent reports for the Network (from inventory or network.attach). */
function observedHosts(agents: AgentState, ref: ObjectRef, uid: string): Map<string, ObservedSegment> {
  const hosts = new Map<string, ObservedSegment>();
  for (const observation of agents.observationsOf(ref)) {
    if (observation.agent.role !== 'libvirt' || !isFor(observation, uid)) continue;
    const observed = observation.observed as Partial<ObservedSegment> & { deleted?: boolean };
    // network.detach's answer outlives the inventory entry: the bridge is gone.
    if (observed?.segment && observed.deleted !== true) {
      hosts.set(observation.agent.name, { segment: observed.segment });
    }
  }
  return hosts;
}

export class NetworkController extends ObjectController<Network> {
  private readonly placement = new Serialized();
  private readonly jobDeadlineMs: number;

  constructor(private readonly options: NetworkControllerOptions) {
    super({
      name: 'network',
      cache: options.networks,
      workers: options.workers ?? 2,
      logger: options.logger,
      registry: options.registry,
    });
    this.jobDeadlineMs = options.jobDeadlineMs ?? defaultJobDeadlineMs;
    this.watch();
  }

  private watch(): void {
    const queue = this.controller.queue;
    const { networks, routers, instances, peers, agents } = this.options;
    const all = () => networks.list() as Network[];
    const enqueue = (network: Network) => queue.add(objectKey(network));
    const onRouter = (router: string | undefined) => {
      for (const network of all()) {
        if (allocates(network) || (router !== undefined && network.status?.router === router)) {
          enqueue(network);
        }
      }
    };

    const onNetwork = (obj: KubernetesObject) => {
      queue.add(objectKey(obj));
      // Its neighbours on the Router settle segment collisions; unplaced ones may fit now.
      onRouter((obj as Network).status?.router);
    };
    for (const event of ['add', 'update', 'delete'] as const) networks.on(event, onNetwork);
    for (const event of ['add', 'update', 'delete'] as const) {
      routers.on(event, (obj) => onRouter(obj.metadata?.name));
    }
    // An Instance may have left a Network in its update (only the new object is seen): all of its namespace.
    const onInstance = (obj: KubernetesObject) => {
      for (const network of networks.list((obj as Instance).metadata.namespace) as Network[])
        enqueue(network);
    };
    for (const event of ['add', 'update', 'delete'] as const) instances.on(event, onInstance);
    const onPeer = (obj: KubernetesObject) => {
      const peer = obj as WireGuardPeer;
      queue.add(`${peer.metadata.namespace}/${peer.spec.network}`);
    };
    for (const event of ['add', 'update', 'delete'] as const) peers.on(event, onPeer);
    agents.on('change', (ref) => {
      if (ref.kind !== networkKind.kind) return;
      const key = `${ref.namespace}/${ref.name}`;
      queue.add(key); // a failed job is held back by the reconcile (AgentState.paced)
    });
    agents.on('agent', (agent) => {
      // A Host's agent matters to every Network that may need its segment there.
      for (const network of all()) {
        if (agent.role === 'libvirt' || network.status?.router === agent.name) enqueue(network);
      }
    });
  }

  protected reconcile(key: string, logger: Logger): Promise<ReconcileResult | undefined> {
    const [namespace = '', name = ''] = key.split('/');
    const network = this.objects.get(name, namespace);
    if (!network) {
      this.options.agents.clear(networkRef(namespace, name));
      return Promise.resolve(undefined);
    }
    if (!allocates(network)) return this.reconcileNetwork(network, logger);
    return this.placement.run(() => this.reconcileNetwork(this.objects.get(name, namespace), logger));
  }

  private async reconcileNetwork(
    network: Network | undefined,
    logger: Logger,
  ): Promise<ReconcileResult | undefined> {
    if (!network) return undefined;
    const { agents } = this.options;
    const namespace = network.metadata.namespace ?? '';
    const ref = networkRef(namespace, network.metadata.name ?? '');
    const uid = network.metadata.uid ?? '';
    const rejections = agents.rejectionsOf(ref, uid, network.metadata.generation ?? 0);
    const rejection = rejections.find((r) => r.type === 'network.apply' && r.agent.role === 'network');
    const observed = observedRouter(agents, network);
    const result = reconcileNetwork({
      network,
      routers: this.options.routers.list() as Router[],
      networks: this.objects.overlay(this.options.networks.list() as Network[]),
      instances: this.options.instances.list(namespace) as Instance[],
      peers: this.options.peers.list(namespace) as WireGuardPeer[],
      ...(observed ? { observedRouter: observed } : {}),
      observedHosts: observedHosts(agents, ref, uid),
      connectedAgents: { network: agents.connected('network'), libvirt: agents.connected('libvirt') },
      inFlight: agents.jobsFor(ref, uid) as NetworkJob[],
      ...(rejection ? { rejection } : {}),
      now: new Date(),
    });
    // A Host that refused to attach or detach this generation is not asked again until it changes.
    const refused = (job: NetworkJob) =>
      rejections.some(
        (r) => r.type === job.job.type && r.agent.role === job.agent.role && r.agent.name === job.agent.name,
      );
    const paced = agents.paced(
      ref,
      result.jobs.filter((job) => !refused(job)),
    );
    await carryOut(
      network,
      { ...result, jobs: paced.jobs },
      {
        kind: networkKind,
        finalizer: networkFinalizer,
        writer: this.options.writer,
        agents,
        events: this.options.events,
        assumed: this.objects,
        jobDeadlineMs: this.jobDeadlineMs,
        logger,
      },
    );
    return paced.requeueAfterMs === undefined ? undefined : { requeueAfterMs: paced.requeueAfterMs };
  }
}
