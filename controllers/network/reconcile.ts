/**
 * The Network controller's decisions, pure: the stored Network, the Routers, every Network,
 * the Instances and WireGuardPeers of its namespace, what the router's and the hosts' agents last
 * reported of it and the jobs in flight go in; the next status, the finalizer change, the jobs to
 * dispatch and the Events come out. The shell executes the result as the Instance controller's
 * does: add the finalizer, write the status, dispatch the jobs, record the Events; or, when the
 * result removes the finalizer, only that. It reconciles a Network again when a Router, a Network,
 * an Instance or a WireGuardPeer of its namespace changes, when an agent connects or reports on
 * it, and when one of its jobs ends; nothing polls. Segments are unique among the Networks this
 * sees; the shell keeps two Networks from being placed at the same time (otherwise the newer of
 * two that recorded one segment moves to another on its next reconcile).
 *
 * The rules:
 * - Placement: once, onto a Ready, uncordoned Router (the one spec.router names, if it does) on
 *   which allocateNetwork fits the Network next to the Networks placed there; the router with the
 *   fewest Networks wins, then the first by name. status.router is final: the Network is never
 *   moved, not even when its Router is unreachable or gone. When nothing fits, Placed=False says
 *   why (NoRouter, Unschedulable, AllocationFailed with the field to change), phase Pending.
 * - Segment and gateway: allocateNetwork against the other Networks recorded on the router. Two
 *   that recorded one segment (placed at once) are settled by age: the older keeps it. A spec that
 *   no longer fits (a segment or WireGuard port taken) gets Configured=False (AllocationFailed)
 *   and a Warning; the router keeps what it has until the spec changes.
 * - network.apply goes to the router's network agent when the configuration it last applied (the
 *   loam.dev/config-hash it echoes) is not the current one: another generation, Router spec,
 *   static leases or WireGuard peers. Never twice while the same job is in flight, only to a
 *   connected agent, and not for a generation the router refused (remembered in Configured).
 * - network.attach goes to the libvirt agent of each Host that runs (status.host) an Instance
 *   attaching the Network and does not report its segment; network.detach to each Host that
 *   reports it but runs no such Instance. Host jobs do not wait for the router: Instances on one
 *   Host talk over the bridge without it.
 * - Conditions: Placed; Configured (the router has this generation and the current leases and
 *   peers); Ready (the router serves the Network, whatever generation: a lease change does not
 *   make it unready). Phase: Ready while served, Failed when the spec cannot be served or the
 *   Router is gone, Pending otherwise. While the Router is not Ready, Ready=Unknown
 *   (RouterUnreachable), no router job, and the phase stays what it was: the router keeps serving
 *   what it last applied. An agent that is away while its Router is still Ready (the hub's grace
 *   period) is waited for without a Warning: Configured=False (WaitingForRouter) if it lags.
 * - Deletion: the finalizer loam.dev/network-protection is added on the first reconcile. A deleted
 *   Network that Instances still attach to (spec.networks) is held, and still served, with
 *   Terminating=True (InstancesAttached) and a Warning. Once none do, network.delete goes to the
 *   router and network.detach to the Hosts that report the segment; the finalizer goes when the
 *   router answers that the Network is gone, at once when it was never placed or its Router no
 *   longer exists. While the Router is not Ready, Terminating says so and names the way to force it.
 * - Status is rewritten only when it changes, and an Event is recorded only when the condition
 *   it reports changes, so reconciling a converged Network does nothing.
 *
 * What the agents report (the shell turns inventory, job results and lifecycle events into these):
 * - ObservedNetwork, from the router's network agent: `generation` and `configHash` of the last
 *   network.apply it applied (configHash is that job's metadata.annotations['loam.dev/config-hash'],
 *   echoed verbatim), the WireGuard server's public key (made on the router) and the endpoint it
 *   knows, the names of the peers it configured (the WireGuardPeer controller's routerPeers), and
 *   `deleted: true` as network.delete's answer. A connected agent whose inventory lacks
 *   the Network is `{}`; undefined means nothing is known since the control plane started.
 * - ObservedSegment, from a Host's libvirt agent: the segment its bridge for the Network is on;
 *   a Host without such a bridge has no entry.
 */

import { createHash } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { ipv4ToNumber } from '../../crds/ip.js';
import { applyFindings, type Finding, getCondition } from '../../crds/meta.js';
import type {
  Instance,
  Network,
  NetworkStatus,
  networkPhases,
  Router,
  RouterSpec,
  WireGuardPeer,
} from '../../crds/v1alpha1/index.js';
import {
  AllocationError,
  allocateNetwork,
  allocatePeers,
  inCreationOrder,
  type Lease,
  type NetworkAllocation,
  objectKey,
  type PeerAllocation,
  type PlacedNetwork,
  type Route,
  type Segment,
} from './allocate.js';

/** Holds a deleted Network until its router has removed it. */
export const networkFinalizer = 'loam.dev/network-protection';

/** The annotation of a network.apply object that the router echoes back as ObservedNetwork.configHash. */
export const configHashAnnotation = 'loam.dev/config-hash';

export type NetworkPhase = (typeof networkPhases)[number];

/** What the router's network agent last reported of the Network (inventory, job results). */
export interface ObservedNetwork {
  /** The Network generation of the configuration it serves; undefined when it does not serve it. */
  generation?: number;
  /** The loam.dev/config-hash annotation of the network.apply it applied last. */
  configHash?: string;
  /** The report is network.delete's answer: nothing of the Network is left on the router. */
  deleted?: boolean;
  /** The WireGuard server's public key (the private key never leaves the router) and its endpoint. */
  wireguard?: { publicKey?: string; endpoint?: string };
  /** Names of the WireGuardPeers configured on the WireGuard server; undefined when it did not say. */
  peers?: string[];
  /** The static DHCP leases it serves, as `MAC=address`; undefined when it did not say. */
  leases?: string[];
}

/** What a Host's libvirt agent reports of the Network: the segment of its bridge. */
export interface ObservedSegment {
  segment: Segment;
}

/** Where the Network lives, as status records it. */
export interface NetworkPlacement {
  router: string;
  segment: Segment;
  gateway: string;
}

/** A WireGuard peer as the router configures it: only peers with a public key are sent. */
export type RouterPeer = Required<PeerAllocation>;

/**
 * The object of every Network job: a Network carrying the whole spec, the metadata agents key
 * jobs by, and its placement as status. For network.detach, status.segment is the segment the
 * Host reports (the one to tear down).
 *
 * network.apply adds what the router needs and cannot know, as plain sorted JSON: its Router
 * (spec without unschedulable, so cordoning does not re-apply every Network; validating it
 * through the Router schema restores the default), the static leases of the Instances exactly
 * as their status reserves them (sorted by address; Instances without a reservation are left
 * out) and the WireGuard peers with a public key (sorted by address). metadata.annotations
 * carries loam.dev/config-hash, a SHA-256 of the rest, which the router echoes back.
 */
export interface NetworkJobObject {
  apiVersion: Network['apiVersion'];
  kind: Network['kind'];
  metadata: {
    name: string;
    namespace: string;
    uid: string;
    generation: number;
    annotations?: { [configHashAnnotation]: string };
  };
  spec: Network['spec'];
  status: NetworkPlacement;
  router?: {
    apiVersion: Router['apiVersion'];
    kind: Router['kind'];
    metadata: { name: string };
    spec: Omit<RouterSpec, 'unschedulable'>;
  };
  leases?: Lease[];
  peers?: RouterPeer[];
}

export type NetworkJobType = 'network.apply' | 'network.delete' | 'network.attach' | 'network.detach';

/** A job for the network agent of the Router (apply, delete) or the libvirt agent of a Host (attach, detach). */
export interface NetworkJob {
  agent: { role: 'network' | 'libvirt'; name: string };
  job: { type: NetworkJobType; object: NetworkJobObject };
}

export interface NetworkEvent {
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
}

export interface NetworkReconcileInput {
  /** The Network as stored; never changed. */
  network: Network;
  /** Every Router. */
  routers: readonly Router[];
  /** Every Network of every namespace: those placed on a router hold its segments and prefixes. */
  networks: readonly Network[];
  /** The Instances of the Network's namespace: their hosts and reserved addresses. */
  instances: readonly Instance[];
  /** The WireGuardPeers of the Network's namespace. */
  peers: readonly WireGuardPeer[];
  /** What the router agent (status.router) last reported of this Network; undefined = nothing since start. */
  observedRouter?: ObservedNetwork;
  /** Per Host name: what that Host's libvirt agent last reported of this Network's segment (absent = not attached). */
  observedHosts: ReadonlyMap<string, ObservedSegment>;
  /** Names of the Routers and Hosts whose agents have a session with the hub, so jobs can reach them. */
  connectedAgents: { network: ReadonlySet<string>; libvirt: ReadonlySet<string> };
  /** Jobs dispatched for this Network whose results have not come back. */
  inFlight: readonly NetworkJob[];
  /** A router refused network.apply for good for this generation. */
  rejection?: { generation: number; message: string };
  now: Date;
}

export interface NetworkReconcileResult {
  /** The status to write; undefined when it would not change or the object is about to go. */
  status?: NetworkStatus;
  /** Add or remove networkFinalizer; undefined leaves metadata alone. */
  finalizer?: 'add' | 'remove';
  jobs: NetworkJob[];
  events: NetworkEvent[];
}

export function reconcileNetwork(input: NetworkReconcileInput): NetworkReconcileResult {
  const { metadata } = input.network;
  const protectedByUs = metadata.finalizers?.includes(networkFinalizer) ?? false;
  if (metadata.deletionTimestamp !== undefined) {
    // Without our finalizer the cleanup is done (or never started): another finalizer holds it.
    return protectedByUs ? reconcileDeletion(input) : { jobs: [], events: [] };
  }
  return { ...(protectedByUs ? {} : { finalizer: 'add' }), ...conclude(input, decide(input)) };
}

/** What a reconcile decided, before it is compared with the stored status. */
interface Outcome {
  phase: NetworkPhase;
  router?: string;
  segment?: Segment;
  gateway?: string;
  wireguard?: NetworkStatus['wireguard'];
  /** Conditions not among them keep what status says. */
  findings: Finding[];
  jobs: NetworkJob[];
}

/** Why the Network cannot be placed or served; `reason` is the condition reason. */
interface SpecProblem {
  reason: string;
  message: string;
}

function decide(input: NetworkReconcileInput): Outcome {
  const { network } = input;
  const recorded = network.status?.router;
  if (recorded === undefined) {
    const placement = place(input);
    if ('problem' in placement) return unplaced(placement.problem);
    return serve(input, placement.router, placement.neighbours, placement.allocation, true);
  }
  const router = input.routers.find((candidate) => candidate.metadata.name === recorded);
  if (router === undefined) return routerDeleted(input, recorded);
  const neighbours = placedOn(recorded, input.networks, network);
  return serve(input, router, neighbours, allocateOn(network, router, neighbours), false);
}

function unplaced(problem: SpecProblem): Outcome {
  return {
    phase: 'Pending',
    findings: [
      {
        condition: { type: 'Placed', status: 'False', ...problem },
        event: { type: 'Warning', reason: 'FailedPlacement' },
      },
      notConfigured('NotPlaced', 'waiting for a Router to place the Network on'),
      notReady('NotPlaced', 'see condition Placed'),
    ],
    jobs: [],
  };
}

/** The Network on its Router: allocated (or why not), applied when needed, status from what the router reports. */
function serve(
  input: NetworkReconcileInput,
  router: Router,
  neighbours: readonly PlacedNetwork[],
  allocated: NetworkAllocation | SpecProblem,
  justPlaced: boolean,
): Outcome {
  const { network } = input;
  const name = router.metadata.name ?? '';
  const problem = 'reason' in allocated ? allocated : undefined;
  const allocation = 'reason' in allocated ? undefined : allocated;
  // A spec that cannot be allocated leaves the router with what status records.
  const segment = allocation?.segment ?? network.status?.segment;
  const gateway = allocation?.gateway ?? network.status?.gateway;
  const placement = segment && gateway ? { router: name, segment, gateway } : undefined;
  // Placed just now, so nothing can be on the router yet.
  const observed: ObservedNetwork | undefined = justPlaced ? {} : input.observedRouter;
  const wireguard = wireguardStatus(network, router, observed);
  const hostJobs = placement ? hostJobsFor(input, placement) : [];
  const bound = {
    router: name,
    ...(segment ? { segment } : {}),
    ...(gateway ? { gateway } : {}),
    ...(wireguard ? { wireguard } : {}),
  };
  const placed = placedFinding(name);
  const problemFindings = problem ? [notConfigured(problem.reason, problem.message, 'Warning')] : [];
  const storedPhase = network.status?.phase ?? 'Pending';

  if (!routerReady(router)) {
    return {
      ...bound,
      phase: storedPhase,
      findings: [placed, ...problemFindings, routerUnreachable(router)],
      jobs: hostJobs,
    };
  }
  if (observed === undefined) {
    // Nothing known since the control plane started: the stored phase stands until the router reports.
    return { ...bound, phase: storedPhase, findings: [placed, ...problemFindings], jobs: hostJobs };
  }

  const generation = generationOf(network);
  const rejection = rejectionOf(input, generation);
  const apply =
    allocation && placement ? applyJob(input, router, neighbours, allocation, placement) : undefined;
  const current = apply !== undefined && observed.configHash === configHashOf(apply);
  const dispatch =
    apply !== undefined &&
    rejection === undefined &&
    !current &&
    input.connectedAgents.network.has(name) &&
    !alreadyInFlight(input, apply);
  const applying =
    dispatch ||
    input.inFlight.some((job) => job.agent.role === 'network' && job.job.type === 'network.apply');
  const blocked = problem !== undefined || rejection !== undefined;

  let configured: Finding;
  if (problem) configured = notConfigured(problem.reason, problem.message, 'Warning');
  else if (rejection !== undefined) configured = notConfigured('ApplyRejected', rejection, 'Warning');
  else if (current && apply) {
    const { leases = [], peers = [] } = apply.job.object;
    configured = {
      condition: {
        type: 'Configured',
        status: 'True',
        reason: 'Configured',
        message: `Router ${name} has generation ${generation} with ${count(leases.length, 'static lease')} and ${count(peers.length, 'WireGuard peer')}`,
      },
    };
  } else if (applying)
    configured = notConfigured('Configuring', `sending generation ${generation} to Router ${name}`);
  else configured = notConfigured('WaitingForRouter', `the network agent of Router ${name} is not connected`);

  // A network.delete answer (a stale one: the Network is not being deleted) serves nothing.
  const serving = observed.generation !== undefined && observed.deleted !== true;
  let readiness: Finding;
  if (serving) {
    readiness = {
      condition: { type: 'Ready', status: 'True', reason: 'Ready', message: `served by Router ${name}` },
      event: { type: 'Normal', reason: 'Ready' },
    };
  } else if (blocked) readiness = notReady('NotConfigured', 'see condition Configured');
  else if (applying) readiness = notReady('Configuring', `configuring the Network on Router ${name}`);
  else readiness = notReady('WaitingForRouter', `waiting for the network agent of Router ${name} to connect`);

  return {
    ...bound,
    phase: serving ? 'Ready' : blocked ? 'Failed' : 'Pending',
    findings: [placed, configured, readiness],
    jobs: [...(dispatch ? [apply] : []), ...hostJobs],
  };
}

/** Placed on a Router that no longer exists: final all the same, so the Network says what to do. */
function routerDeleted(input: NetworkReconcileInput, name: string): Outcome {
  const { network } = input;
  const placement = recordedPlacement(network);
  const message =
    `Router ${name} no longer exists; the Network stays placed on it. ` +
    `Enroll a router named ${name} again, or delete the Network and create it anew to place it on another Router.`;
  return {
    phase: 'Failed',
    ...recordedFields(network),
    findings: [placedFinding(name), notReady('RouterDeleted', message, 'Warning')],
    jobs: placement ? hostJobsFor(input, placement) : [],
  };
}

function reconcileDeletion(input: NetworkReconcileInput): NetworkReconcileResult {
  const { network } = input;
  const attached = attachedInstances(input);
  if (attached.length > 0) {
    // Held, and still served for the Instances that use it; a Network never placed stays unplaced.
    const outcome: Outcome =
      network.status?.router === undefined ? { phase: 'Terminating', findings: [], jobs: [] } : decide(input);
    return conclude(input, {
      ...outcome,
      phase: 'Terminating',
      findings: [...outcome.findings, heldBy(attached)],
    });
  }

  const placement = recordedPlacement(network);
  const router = placement && input.routers.find((candidate) => candidate.metadata.name === placement.router);
  const gone =
    input.observedRouter?.deleted === true && !input.inFlight.some((job) => job.agent.role === 'network');
  // Never placed, its Router is gone, or the router has removed it: nothing is left to clean up.
  if (placement === undefined || router === undefined || gone) {
    return { finalizer: 'remove', jobs: [], events: [] };
  }

  const name = placement.router;
  const detach = hostJobsFor(input, placement);
  const outcome = { phase: 'Terminating' as const, ...recordedFields(network) };
  if (!routerReady(router)) {
    const unreachable = routerUnreachable(router);
    const { name: networkName, namespace } = network.metadata;
    const force =
      ` The Network is deleted once the network agent of ${name} has removed it; to delete it now and leave its configuration on the router, remove its finalizer: ` +
      `kubectl patch network ${networkName} -n ${namespace} --type json -p '[{"op":"remove","path":"/metadata/finalizers"}]'`;
    const terminating = terminatingFinding(
      'RouterUnreachable',
      `${unreachable.condition.message}.${force}`,
      'Warning',
    );
    return conclude(input, {
      ...outcome,
      findings: [terminating, { condition: unreachable.condition }],
      jobs: detach,
    });
  }
  if (!input.connectedAgents.network.has(name)) {
    const waiting = terminatingFinding(
      'WaitingForRouter',
      `waiting for the network agent of Router ${name} to reconnect to delete the Network`,
    );
    return conclude(input, { ...outcome, findings: [waiting], jobs: detach });
  }
  const remove: NetworkJob = {
    agent: { role: 'network', name },
    job: { type: 'network.delete', object: jobObject(network, placement) },
  };
  const deleting = terminatingFinding('Deleting', `deleting the Network from Router ${name}`, 'Normal');
  return conclude(input, {
    ...outcome,
    findings: [deleting, notReady('Terminating', `being deleted from Router ${name}`)],
    jobs: [...(alreadyInFlight(input, remove) ? [] : [remove]), ...detach],
  });
}

/** The status and Events an outcome makes of the stored status; the status only when it changes. */
function conclude(
  input: NetworkReconcileInput,
  outcome: Outcome,
): Pick<NetworkReconcileResult, 'status' | 'jobs' | 'events'> {
  const previous = input.network.status;
  const observedGeneration = generationOf(input.network);
  const { conditions, events } = applyFindings(
    previous?.conditions,
    outcome.findings,
    observedGeneration,
    input.now,
  );
  const status: NetworkStatus = {
    phase: outcome.phase,
    ...(outcome.router === undefined ? {} : { router: outcome.router }),
    ...(outcome.segment === undefined ? {} : { segment: outcome.segment }),
    ...(outcome.gateway === undefined ? {} : { gateway: outcome.gateway }),
    ...(outcome.wireguard === undefined ? {} : { wireguard: outcome.wireguard }),
    conditions,
    observedGeneration,
  };
  return {
    ...(isDeepStrictEqual(status, previous) ? {} : { status }),
    jobs: outcome.jobs,
    events,
  };
}

function generationOf(network: Network): number {
  return network.metadata.generation ?? 0;
}

/** The router's refusal of this generation: passed in now, or remembered in Configured. */
function rejectionOf(input: NetworkReconcileInput, generation: number): string | undefined {
  if (input.rejection?.generation === generation) return input.rejection.message;
  const configured = getCondition(input.network.status?.conditions, 'Configured');
  return configured?.reason === 'ApplyRejected' && configured.observedGeneration === generation
    ? configured.message
    : undefined;
}

function alreadyInFlight(input: NetworkReconcileInput, job: NetworkJob): boolean {
  return input.inFlight.some((other) => isDeepStrictEqual(other, job));
}

function count(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

function placedFinding(router: string): Finding {
  return {
    condition: { type: 'Placed', status: 'True', reason: 'Placed', message: `placed on Router ${router}` },
    event: { type: 'Normal', reason: 'Placed' },
  };
}

function notConfigured(reason: string, message: string, eventType?: NetworkEvent['type']): Finding {
  return {
    condition: { type: 'Configured', status: 'False', reason, message },
    ...(eventType ? { event: { type: eventType, reason } } : {}),
  };
}

function notReady(reason: string, message: string, eventType?: NetworkEvent['type']): Finding {
  return {
    condition: { type: 'Ready', status: 'False', reason, message },
    ...(eventType ? { event: { type: eventType, reason } } : {}),
  };
}

function terminatingFinding(reason: string, message: string, eventType?: NetworkEvent['type']): Finding {
  return {
    condition: { type: 'Terminating', status: 'True', reason, message },
    ...(eventType ? { event: { type: eventType, reason } } : {}),
  };
}

/** How many Instance names a message lists before it says how many more there are. */
const namesListed = 3;

function heldBy(attached: readonly Instance[]): Finding {
  const names = attached.map((instance) => instance.metadata.name ?? '').sort((a, b) => a.localeCompare(b));
  const more = names.length - namesListed;
  const listed = `${names.slice(0, namesListed).join(', ')}${more > 0 ? ` and ${more} more` : ''}`;
  return terminatingFinding(
    'InstancesAttached',
    `${count(names.length, 'Instance')} still ${names.length === 1 ? 'attaches' : 'attach'} to the Network (${listed}); ` +
      'it is deleted once none does: delete them or remove it from their spec.networks',
    'Warning',
  );
}

// --- routers --------------------------------------------------------------------------------------

/** A Router is reachable while its Ready condition is True (the hub turns it Unknown after its grace period). */
function routerReady(router: Router): boolean {
  return getCondition(router.status?.conditions, 'Ready')?.status === 'True';
}

function routerUnreachable(router: Router): Finding {
  const ready = getCondition(router.status?.conditions, 'Ready');
  const why = ready ? `${ready.reason}: ${ready.message}` : 'it reports no Ready condition';
  return {
    condition: {
      type: 'Ready',
      status: 'Unknown',
      reason: 'RouterUnreachable',
      message: `Router ${router.metadata.name} is not Ready (${why})`,
    },
    event: { type: 'Warning', reason: 'RouterUnreachable' },
  };
}

/**
 * The Router the Network goes to, with its allocation there, or why none fits: Routers that are
 * not Ready or cordoned are counted per reason, those it does not fit on say why, field first.
 */
function place(
  input: NetworkReconcileInput,
): { router: Router; neighbours: PlacedNetwork[]; allocation: NetworkAllocation } | { problem: SpecProblem } {
  const { network } = input;
  const wanted = network.spec.router;
  const candidates = input.routers.filter(
    (router) => wanted === undefined || router.metadata.name === wanted,
  );
  if (candidates.length === 0) {
    return {
      problem: {
        reason: 'NoRouter',
        message:
          wanted === undefined
            ? 'there are no Routers: enroll a router with the network agent'
            : `Router ${wanted} (spec.router) does not exist`,
      },
    };
  }
  const load = (router: Router) =>
    input.networks.filter((other) => other.status?.router === router.metadata.name).length;
  const ranked = candidates
    .map((router) => ({ router, name: router.metadata.name ?? '', load: load(router) }))
    .sort((a, b) => a.load - b.load || a.name.localeCompare(b.name));
  let notReadyCount = 0;
  let cordonedCount = 0;
  const refusals: string[] = [];
  for (const { router, name } of ranked) {
    if (!routerReady(router)) notReadyCount++;
    else if (router.spec.unschedulable) cordonedCount++;
    else {
      const neighbours = placedOn(name, input.networks, network);
      try {
        return { router, neighbours, allocation: allocateNetwork(network, router, neighbours) };
      } catch (err) {
        if (!(err instanceof AllocationError)) throw err;
        refusals.push(err.message);
      }
    }
  }
  const reasons = [
    ...(notReadyCount > 0 ? [`${notReadyCount} not Ready`] : []),
    ...(cordonedCount > 0 ? [`${cordonedCount} cordoned (spec.unschedulable)`] : []),
    ...refusals,
  ];
  return {
    problem: {
      reason: refusals.length > 0 ? 'AllocationFailed' : 'Unschedulable',
      message: `0/${candidates.length} Routers fit the Network${
        wanted === undefined ? '' : ` (spec.router ${wanted})`
      }: ${reasons.join('; ')}`,
    },
  };
}

/**
 * The Networks recorded on `router` that `network` must stay clear of. Of two that recorded one
 * segment (placed at once), the older does not see the newer, so it keeps the segment.
 */
function placedOn(router: string, networks: readonly Network[], network: Network): PlacedNetwork[] {
  const key = objectKey(network);
  const held = network.status?.router === router ? network.status.segment : undefined;
  return inCreationOrder(networks).flatMap((other): PlacedNetwork[] => {
    const segment = other.status?.segment;
    if (objectKey(other) === key || other.status?.router !== router || segment === undefined) return [];
    if (held && sameSegment(held, segment) && inCreationOrder([network, other])[0] === network) return [];
    const wireguard = other.spec.wireguard;
    return [
      {
        key: objectKey(other),
        cidr: other.spec.cidr,
        segment,
        ...(wireguard?.enabled ? { wireguard: { cidr: wireguard.cidr, port: wireguard.port } } : {}),
      },
    ];
  });
}

/**
 * The allocation of a placed Network on its router, or why the spec does not fit. A recorded
 * segment an older Network holds is given up for a free one (the newer of two placed at once moves).
 */
function allocateOn(
  network: Network,
  router: Router,
  neighbours: readonly PlacedNetwork[],
): NetworkAllocation | SpecProblem {
  try {
    return allocateNetwork(network, router, neighbours);
  } catch (err) {
    if (!(err instanceof AllocationError)) throw err;
    if (err.field === 'status.segment.id' && network.status?.segment) {
      const { segment: _, ...status } = network.status;
      return allocateOn({ ...network, status }, router, neighbours);
    }
    return { reason: 'AllocationFailed', message: err.message };
  }
}

function sameSegment(a: Segment, b: Segment): boolean {
  return a.type === b.type && a.id === b.id;
}

/** status.router, status.segment and status.gateway when all are recorded (placement writes them together). */
function recordedPlacement(network: Network): NetworkPlacement | undefined {
  const { router, segment, gateway } = network.status ?? {};
  return router && segment && gateway ? { router, segment, gateway } : undefined;
}

/** What status records of the placement and the WireGuard server, kept as is. */
function recordedFields(network: Network): Pick<Outcome, 'router' | 'segment' | 'gateway' | 'wireguard'> {
  const { router, segment, gateway, wireguard } = network.status ?? {};
  return {
    ...(router ? { router } : {}),
    ...(segment ? { segment } : {}),
    ...(gateway ? { gateway } : {}),
    ...(wireguard && network.spec.wireguard?.enabled ? { wireguard } : {}),
  };
}

/**
 * What a peer's configuration needs of an enabled WireGuard server: the public key the router
 * reports (the stored one until it reports after a restart) and the endpoint: spec's, else the
 * Router's wireguardEndpointHost with the port, else the one the router reports.
 */
function wireguardStatus(
  network: Network,
  router: Router,
  observed: ObservedNetwork | undefined,
): NetworkStatus['wireguard'] {
  const server = network.spec.wireguard;
  if (!server?.enabled) return undefined;
  const reported = observed === undefined ? network.status?.wireguard : observed.wireguard;
  const host = router.spec.wireguardEndpointHost;
  const endpoint =
    server.endpoint ??
    (host === undefined ? reported?.endpoint : `${host.includes(':') ? `[${host}]` : host}:${server.port}`);
  const publicKey = reported?.publicKey;
  if (publicKey === undefined && endpoint === undefined) return undefined;
  return { ...(publicKey ? { publicKey } : {}), ...(endpoint ? { endpoint } : {}) };
}

// --- jobs -----------------------------------------------------------------------------------------

function jobObject(network: Network, placement: NetworkPlacement): NetworkJobObject {
  const { apiVersion, kind, metadata, spec } = network;
  return {
    apiVersion,
    kind,
    metadata: {
      name: metadata.name ?? '',
      namespace: metadata.namespace ?? '',
      uid: metadata.uid ?? '',
      generation: generationOf(network),
    },
    spec,
    status: placement,
  };
}

function applyJob(
  input: NetworkReconcileInput,
  router: Router,
  neighbours: readonly PlacedNetwork[],
  allocation: NetworkAllocation,
  placement: NetworkPlacement,
): NetworkJob {
  const { network } = input;
  const { unschedulable: _, ...routerSpec } = router.spec;
  const object: NetworkJobObject = {
    ...jobObject(network, placement),
    router: {
      apiVersion: router.apiVersion,
      kind: router.kind,
      metadata: { name: placement.router },
      spec: routerSpec,
    },
    leases: leasesOf(network, input.instances),
    peers: peersOf(network, allocation, neighbours, input.peers),
  };
  const hash = createHash('sha256').update(canonicalJson(object)).digest('hex');
  return {
    agent: { role: 'network', name: placement.router },
    job: {
      type: 'network.apply',
      object: { ...object, metadata: { ...object.metadata, annotations: { [configHashAnnotation]: hash } } },
    },
  };
}

function configHashOf(job: NetworkJob): string | undefined {
  return job.job.object.metadata.annotations?.[configHashAnnotation];
}

/** JSON with object keys sorted, so the hash does not depend on the order fields were read in. */
function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, field: unknown) =>
    field !== null && typeof field === 'object' && !Array.isArray(field)
      ? Object.fromEntries(Object.entries(field).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : field,
  );
}

/** Instances of the Network's namespace whose spec.networks names it, wherever they are in their life. */
function attachedInstances(input: NetworkReconcileInput): Instance[] {
  const { namespace, name } = input.network.metadata;
  return input.instances.filter(
    (instance) =>
      instance.metadata.namespace === namespace &&
      (instance.spec.networks ?? []).some((attachment) => attachment.name === name),
  );
}

/**
 * The static leases: exactly the MAC and address each attached Instance's status reserves on the
 * Network (the Instance controller owns them), including Instances being deleted, which hold
 * their reservation until they are gone.
 */
function leasesOf(network: Network, instances: readonly Instance[]): Lease[] {
  const { namespace, name } = network.metadata;
  return instances
    .flatMap((instance): Lease[] => {
      if (instance.metadata.namespace !== namespace) return [];
      if (!(instance.spec.networks ?? []).some((attachment) => attachment.name === name)) return [];
      const nic = instance.status?.interfaces?.find((candidate) => candidate.network === name);
      if (nic?.mac === undefined || nic.ipAddress === undefined) return [];
      return [{ instance: instance.metadata.name ?? '', mac: nic.mac, address: nic.ipAddress }];
    })
    .sort(
      (a, b) => ipv4ToNumber(a.address) - ipv4ToNumber(b.address) || a.instance.localeCompare(b.instance),
    );
}

/**
 * The Network's WireGuard peers with a public key, addressed as allocatePeers does (status.address
 * when recorded) next to every prefix the router routes. Peers being deleted leave the router.
 */
function peersOf(
  network: Network,
  allocation: NetworkAllocation,
  neighbours: readonly PlacedNetwork[],
  peers: readonly WireGuardPeer[],
): RouterPeer[] {
  const key = objectKey(network);
  const own: PlacedNetwork = {
    key,
    cidr: network.spec.cidr,
    segment: allocation.segment,
    ...(allocation.wireguard ? { wireguard: allocation.wireguard } : {}),
  };
  const routes: Route[] = [own, ...neighbours].flatMap((placed) => [
    { cidr: placed.cidr, owner: `Network ${placed.key}` },
    ...(placed.wireguard
      ? [{ cidr: placed.wireguard.cidr, owner: `the WireGuard server of Network ${placed.key}` }]
      : []),
  ]);
  const live = peers.filter((peer) => peer.metadata.deletionTimestamp === undefined);
  return allocatePeers(network, allocation, live, routes).peers.flatMap(({ publicKey, ...peer }) =>
    publicKey === undefined ? [] : [{ ...peer, publicKey }],
  );
}

/**
 * network.attach for each Host that runs an attached Instance and lacks the segment (or has
 * another), network.detach for each Host that reports it and runs none; to connected agents only.
 */
function hostJobsFor(input: NetworkReconcileInput, placement: NetworkPlacement): NetworkJob[] {
  const { network } = input;
  const needed = new Set(attachedInstances(input).flatMap((instance) => instance.status?.host ?? []));
  const jobs: NetworkJob[] = [];
  for (const host of [...needed].sort((a, b) => a.localeCompare(b))) {
    const observed = input.observedHosts.get(host);
    if (observed === undefined || !sameSegment(observed.segment, placement.segment)) {
      jobs.push(hostJob('network.attach', host, jobObject(network, placement)));
    }
  }
  const reporting = [...input.observedHosts].sort(([a], [b]) => a.localeCompare(b));
  for (const [host, observed] of reporting) {
    if (!needed.has(host)) {
      jobs.push(
        hostJob('network.detach', host, jobObject(network, { ...placement, segment: observed.segment })),
      );
    }
  }
  return jobs.filter(
    (job) => input.connectedAgents.libvirt.has(job.agent.name) && !alreadyInFlight(input, job),
  );
}

function hostJob(
  type: 'network.attach' | 'network.detach',
  host: string,
  object: NetworkJobObject,
): NetworkJob {
  return { agent: { role: 'libvirt', name: host }, job: { type, object } };
}
