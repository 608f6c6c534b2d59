/**
 * The Instance controller's decisions, pure: the stored Instance, the Hosts, the Networks, every
 * Instance's placement and reservations, what the host's agent last observed and the jobs in
 * flight go in; the next status, the finalizer change, the jobs to dispatch and the Events come
 * out. The shell reads the caches, calls reconcileInstance and executes the result in this
 * order: add the finalizer, write the status, dispatch the jobs, record the Events; or, when the
 * result removes the finalizer, only that (the object then goes away). Nothing here needs
 * polling: the shell reconciles an Instance again when a Host, a Network of its namespace or
 * another Instance changes, when its host's agent connects or reports on it, and when one of its
 * jobs ends. Addresses are unique among the Instances this sees; the shell keeps two Instances of
 * one namespace from allocating at the same time (otherwise the newer of two that picked one
 * address moves on its next reconcile).
 *
 * The rules:
 * - Scheduling: once, onto a Ready, uncordoned Host with spec.host's name and spec.nodeSelector's
 *   labels, whose allocatable cpus and memory (capacity when it reports no allocatable) minus what
 *   the Instances bound to it request fit the Instance; the least loaded wins, then the first by
 *   name. The Host in status is final: disks are local, so the Instance is never moved, not even
 *   when its Host is unreachable or gone (HostReachable=False, phase Unknown). When nothing fits,
 *   Scheduled=False (Unschedulable) says why, and names the largest Host when the Instance asks
 *   for more than any Host has; the shell reconciles again when Hosts or Instances change, so
 *   nothing polls.
 * - Addresses and MACs: per spec.networks entry, through the Network allocator (allocateLeases):
 *   the static address or MAC when one is given, else the one status records, else the next free.
 *   Status is the reservation, held until the Instance is gone. Against other Instances a
 *   reservation in status beats a request in spec, and between two of a kind the older Instance
 *   wins, so a newcomer's static address never takes an address already handed out.
 * - Jobs: instance.apply carries the whole desired Instance, its placement and its Networks'
 *   prefix, gateway and DNS (InstanceJobObject: the guest's static network config); it is sent when the agent's domain is missing, was defined for another generation or with
 *   other MACs, or is not in the power state spec.runStrategy asks for; never twice while the same
 *   job is in flight, and only to a connected agent. A domain is first defined only once the
 *   router of each of its DHCP Networks reports serving its lease (WaitingForNetwork): a guest
 *   that booted sooner would lease a dynamic address instead of its own.
 * - A spec that cannot be provisioned (a missing or broken Network, an address or MAC taken, a
 *   full Network, a generation the agent refused) gets Provisioned=False with the reason and a
 *   Warning Event, and no job until it changes.
 * - Deletion: the finalizer loam.dev/instance-protection is added on the first reconcile; once
 *   the Instance is deleted, instance.delete goes to its host and the finalizer is removed when
 *   the agent answers that the domain and its disks are gone. While the host is gone or
 *   unreachable, HostReachable says so and names the way to force the deletion.
 * - Status is rewritten only when it changes, and an Event is recorded only when the condition
 *   it reports changes, so reconciling a converged Instance does nothing.
 */

import { isDeepStrictEqual } from 'node:util';
import { applyFindings, type Finding, getCondition } from '../../crds/meta.js';
import { parseQuantity } from '../../crds/quantity.js';
import type {
  Host,
  Instance,
  InstanceStatus,
  instancePhases,
  Network,
  runStrategies,
} from '../../crds/v1alpha1/index.js';
import {
  AllocationError,
  allocateLeases,
  inCreationOrder,
  type LeaseReservation,
  networkAddressing,
  objectKey,
} from '../network/allocate.js';

/** Holds a deleted Instance until its host's agent has removed the domain and its disks. */
export const instanceFinalizer = 'loam.dev/instance-protection';

export type InstancePhase = (typeof instancePhases)[number];
export type RunStrategy = (typeof runStrategies)[number];
export type InstanceInterface = NonNullable<InstanceStatus['interfaces']>[number];

/** An Instance's domain as its host's agent reports it; `absent` when the agent has none. */
export type DomainState = 'running' | 'stopped' | 'crashed' | 'absent';

/** What the agent of the Instance's host last reported of it (inventory, lifecycle events, job results). */
export interface ObservedInstance {
  state: DomainState;
  /** The Instance generation the domain was defined for; none without a domain. */
  generation?: number;
  /** The domain's NICs; undefined when the report does not list them. */
  interfaces?: readonly { mac?: string }[];
  /** The report is an instance.delete job's answer: the domain and its disks are gone. */
  deleted?: boolean;
}

/** Where the Instance runs: its Host and, per spec.networks entry in order, its MAC and address. */
export interface InstancePlacement {
  host: string;
  interfaces: Required<InstanceInterface>[];
}

/**
 * The object of an instance.apply or instance.delete job: a valid Instance carrying the whole
 * spec (spec.runStrategy is the power state wanted), the metadata that identifies it (the uid is
 * the domain UUID, the generation goes into the domain's metadata) and, as status, its placement:
 * the status the controller reserved for it, which the agent needs to wire the NICs.
 */
export interface InstanceJobObject {
  apiVersion: Instance['apiVersion'];
  kind: Instance['kind'];
  metadata: { name: string; namespace: string; uid: string; generation: number };
  spec: Instance['spec'];
  status: InstancePlacement;
  /**
   * Per status.interfaces entry whose Network is known and sound: what the guest needs to set its
   * address statically (the NoCloud network-config), since agents cannot read Networks.
   */
  networks?: InstanceJobNetwork[];
}

/** A Network as an Instance's guest configures it: the prefix, the router's address, DNS. */
export interface InstanceJobNetwork {
  name: string;
  cidr: string;
  gateway: string;
  /** spec.dns, else the gateway (the router's resolver), as DHCP announces them. */
  dns: string[];
}

export type InstanceJobType = 'instance.apply' | 'instance.delete';

/** A job for the libvirt agent of one Host; the shell adds the deadline and dispatches it. */
export interface InstanceJob {
  agent: { role: 'libvirt'; name: string };
  job: { type: InstanceJobType; object: InstanceJobObject };
}

export interface InstanceEvent {
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
}

export interface InstanceReconcileInput {
  /** The Instance as stored; never changed. */
  instance: Instance;
  /** Every Host. */
  hosts: readonly Host[];
  /** The Networks of the Instance's namespace (others are ignored). */
  networks: readonly Network[];
  /**
   * Every Instance (this one may be among them): those bound to a Host load it, and their
   * status.interfaces and spec.networks hold addresses and MACs.
   */
  instances: readonly Instance[];
  /**
   * What the agent of status.host last reported of this Instance; undefined when it has reported
   * nothing since the control plane started (a connected agent has always sent its inventory, in
   * which a missing Instance is `absent`).
   */
  observed?: ObservedInstance;
  /** Names of the Hosts whose libvirt agent has a session with the hub, so jobs can reach it. */
  connectedAgents: ReadonlySet<string>;
  /** Jobs dispatched for this Instance whose results have not come back. */
  inFlight: readonly InstanceJob[];
  /**
   * The agent refused an instance.apply for good (INVALID_ARGUMENT, FAILED_PRECONDITION: a bad
   * image checksum, say). Status remembers it for that generation, so the shell may pass it once.
   */
  rejection?: { generation: number; message: string };
  /**
   * The last instance.apply failed in a way worth retrying (the agent could not start the domain,
   * or did not answer in time), and none has succeeded since; the shell retries with backoff.
   */
  failure?: { generation: number; message: string };
  /**
   * spec.cloudInit.userDataSecretRef resolved by the shell: the Secret's value, or why there is
   * none. The agent cannot read Secrets, so the job carries the user data inline.
   */
  userDataSecret?: { userData: string } | { problem: string };
  /**
   * Per Network name: the static leases (`MAC=address`) its router reports serving. A Network
   * not in it (DHCP off, on no Router) is not waited for.
   */
  servedLeases?: ReadonlyMap<string, ReadonlySet<string>>;
  now: Date;
}

export interface InstanceReconcileResult {
  /** The status to write; undefined when it would not change or the object is about to go. */
  status?: InstanceStatus;
  /** Add or remove instanceFinalizer; undefined leaves metadata alone. */
  finalizer?: 'add' | 'remove';
  jobs: InstanceJob[];
  events: InstanceEvent[];
}

export function reconcileInstance(input: InstanceReconcileInput): InstanceReconcileResult {
  const { metadata } = input.instance;
  const protectedByUs = metadata.finalizers?.includes(instanceFinalizer) ?? false;
  if (metadata.deletionTimestamp !== undefined) {
    // Without our finalizer the cleanup is done (or never started): another finalizer holds it.
    return protectedByUs ? reconcileDeletion(input) : { jobs: [], events: [] };
  }
  return { ...(protectedByUs ? {} : { finalizer: 'add' }), ...conclude(input, decide(input)) };
}

/** What a reconcile decided, before it is compared with the stored status. */
interface Outcome {
  phase: InstancePhase;
  host?: string;
  interfaces: InstanceInterface[];
  /** Conditions not among them keep what status says. */
  findings: Finding[];
  jobs: InstanceJob[];
}

function decide(input: InstanceReconcileInput): Outcome {
  const { instance } = input;
  const allocated = allocateInterfaces(instance, input.networks, input.instances);
  const { interfaces } = allocated;
  const secret = input.userDataSecret;
  const problems =
    secret !== undefined && 'problem' in secret
      ? [{ reason: 'UserDataUnavailable', message: secret.problem }, ...allocated.problems]
      : allocated.problems;
  const problem = problems[0] && {
    reason: problems[0].reason,
    message: problems.map((p) => p.message).join('; '),
  };
  const recordedHost = instance.status?.host;
  const placement = recordedHost ?? schedule(instance, input.hosts, input.instances);
  if (typeof placement !== 'string') {
    const phase = problem ? 'Pending' : 'Scheduling';
    return {
      phase,
      interfaces,
      findings: [
        {
          condition: {
            type: 'Scheduled',
            status: 'False',
            reason: 'Unschedulable',
            message: placement.problem,
          },
          event: { type: 'Warning', reason: 'FailedScheduling' },
        },
        problem
          ? provisioningProblem(problem)
          : notProvisioned('NotScheduled', 'waiting for a Host the Instance fits on'),
        notReady(phase, problem ? 'see condition Provisioned' : 'see condition Scheduled'),
      ],
      jobs: [],
    };
  }

  const host = placement;
  const scheduled: Finding = {
    condition: {
      type: 'Scheduled',
      status: 'True',
      reason: 'Scheduled',
      message: `scheduled to Host ${host}`,
    },
    event: { type: 'Normal', reason: 'Scheduled' },
  };
  const reachability = hostReachability(instance, host, input.hosts, false);
  const bound = { host, interfaces, jobs: [] };
  if (!reachability.reachable) {
    return {
      ...bound,
      phase: 'Unknown',
      findings: [
        scheduled,
        reachability.finding,
        ...(problem ? [provisioningProblem(problem)] : []),
        unknownReadiness(
          reachability.finding.condition.reason,
          `the state of the domain on Host ${host} is unknown`,
        ),
      ],
    };
  }
  // Bound just now, so nothing can be on the host yet.
  const observed = recordedHost === undefined ? { state: 'absent' as const } : input.observed;
  if (observed === undefined) {
    // Nothing known since the control plane started: the stored phase stands until the agent reports.
    return {
      ...bound,
      phase: instance.status?.phase ?? 'Scheduled',
      findings: [scheduled, reachability.finding, ...(problem ? [provisioningProblem(problem)] : [])],
    };
  }

  const generation = generationOf(instance);
  const runStrategy = instance.spec.runStrategy;
  const rejection = rejectionOf(input, generation);
  const failure = input.failure?.generation === generation ? input.failure.message : undefined;
  const current =
    observed.state !== 'absent' && observed.generation === generation && !nicsDiffer(observed, interfaces);
  const powerAction = powerActionNeeded[runStrategy].includes(observed.state);
  const apply = jobFor('instance.apply', instance, host, interfaces, input.networks, input.userDataSecret);
  const unserved = observed.state === 'absent' ? leasesNotServed(interfaces, input.servedLeases) : [];
  const dispatch =
    !problem &&
    unserved.length === 0 &&
    rejection === undefined &&
    (!current || powerAction) &&
    input.connectedAgents.has(host) &&
    !input.inFlight.some((job) => isDeepStrictEqual(job, apply));
  const applying = dispatch || input.inFlight.some((job) => job.job.type === 'instance.apply');

  let provisioned: Finding;
  if (problem) provisioned = provisioningProblem(problem);
  else if (rejection !== undefined)
    provisioned = provisioningProblem({ reason: 'ProvisioningFailed', message: rejection });
  else if (current) {
    provisioned = {
      condition: {
        type: 'Provisioned',
        status: 'True',
        reason: 'Provisioned',
        message: `the domain on Host ${host} is defined for generation ${generation}`,
      },
    };
  } else if (failure !== undefined) {
    provisioned = {
      condition: {
        type: 'Provisioned',
        status: 'False',
        reason: 'ApplyFailed',
        message: `Host ${host} could not apply generation ${generation}: ${failure}; retrying`,
      },
      event: { type: 'Warning', reason: 'FailedApply' },
    };
  } else if (applying)
    provisioned = notProvisioned('Provisioning', `generation ${generation} sent to Host ${host}`);
  else if (unserved.length > 0) {
    provisioned = notProvisioned(
      'WaitingForNetwork',
      `waiting for the router to serve the DHCP lease of ${unserved.join(', ')}`,
    );
  } else provisioned = notProvisioned('WaitingForAgent', `the agent of Host ${host} is not connected`);

  const { phase, readiness } = powerState(observed.state, {
    host,
    runStrategy,
    powerAction,
    blocked: problem ? 'Pending' : rejection !== undefined ? 'Failed' : undefined,
    applying,
    ...(failure === undefined ? {} : { failure }),
  });
  return {
    ...bound,
    phase,
    findings: [scheduled, reachability.finding, provisioned, readiness],
    jobs: dispatch ? [apply] : [],
  };
}

/** The interfaces (`MAC address on Network N`) whose lease the Network's router does not report serving. */
function leasesNotServed(
  interfaces: readonly InstanceInterface[],
  served: InstanceReconcileInput['servedLeases'],
): string[] {
  return interfaces.flatMap(({ network, mac, ipAddress }) => {
    const leases = served?.get(network);
    return leases === undefined || leases.has(`${mac}=${ipAddress}`)
      ? []
      : [`${mac} ${ipAddress} on Network ${network}`];
  });
}

/**
 * The domain states in which the agent must start or stop the domain to honour spec.runStrategy,
 * as KubeVirt's run strategies: Always keeps it running, RerunOnFailure restarts it only after a
 * crash, Manual leaves it alone, Halted keeps it stopped.
 */
const powerActionNeeded: Record<RunStrategy, readonly DomainState[]> = {
  Always: ['stopped', 'crashed'],
  RerunOnFailure: ['crashed'],
  Manual: [],
  Halted: ['running'],
};

/** The phase and Ready condition for the domain's state on a reachable host. */
function powerState(
  state: DomainState,
  context: {
    host: string;
    runStrategy: RunStrategy;
    powerAction: boolean;
    /** Why no apply can be sent: a spec problem (Pending) or a refused generation (Failed). */
    blocked?: 'Pending' | 'Failed';
    applying: boolean;
    /** Why the last attempt to start or stop it failed. */
    failure?: string;
  },
): { phase: InstancePhase; readiness: Finding } {
  const { host, runStrategy } = context;
  const verb = state === 'running' ? 'stopping' : 'starting';
  const then =
    context.powerAction && context.blocked === undefined
      ? context.failure === undefined
        ? `; ${verb} it (runStrategy ${runStrategy})`
        : `; ${verb} it failed: ${context.failure}; retrying (runStrategy ${runStrategy})`
      : '';
  switch (state) {
    case 'running':
      return {
        phase: 'Running',
        readiness: {
          condition: {
            type: 'Ready',
            status: 'True',
            reason: 'Running',
            message: `running on Host ${host}${then}`,
          },
          event: { type: 'Normal', reason: 'Running' },
        },
      };
    case 'stopped':
      return {
        phase: 'Stopped',
        readiness: notReady('Stopped', `stopped on Host ${host}${then}`, 'Normal'),
      };
    case 'crashed':
      return {
        phase: 'Failed',
        readiness: notReady('Crashed', `crashed on Host ${host}${then}`, 'Warning'),
      };
    case 'absent': {
      const phase = context.blocked ?? (context.applying ? 'Provisioning' : 'Scheduled');
      const messages: Record<typeof phase, string> = {
        Pending: 'see condition Provisioned',
        Failed: `Host ${host} refused the Instance: see condition Provisioned`,
        Provisioning: `creating the domain on Host ${host}`,
        Scheduled: `waiting for the agent of Host ${host} to connect`,
      };
      return { phase, readiness: notReady(phase, messages[phase]) };
    }
  }
}

function reconcileDeletion(input: InstanceReconcileInput): InstanceReconcileResult {
  const { instance } = input;
  const host = instance.status?.host;
  const gone = input.observed?.deleted === true && input.inFlight.length === 0;
  // Never placed: nothing of it exists anywhere.
  if (host === undefined || gone) return { finalizer: 'remove', jobs: [], events: [] };

  // Reservations hold until the Instance is gone.
  const interfaces = instance.status?.interfaces ?? [];
  const outcome = { phase: 'Terminating' as const, host, interfaces };
  const reachability = hostReachability(instance, host, input.hosts, true);
  if (!reachability.reachable) {
    const readiness = unknownReadiness(
      'Terminating',
      'cannot delete the domain and its disks: see condition HostReachable',
    );
    return conclude(input, { ...outcome, findings: [reachability.finding, readiness], jobs: [] });
  }
  if (!input.connectedAgents.has(host)) {
    const readiness = notReady(
      'Terminating',
      `waiting for the agent of Host ${host} to reconnect to delete the domain and its disks`,
    );
    return conclude(input, { ...outcome, findings: [reachability.finding, readiness], jobs: [] });
  }
  const remove = jobFor('instance.delete', instance, host, interfaces, input.networks);
  const readiness: Finding = {
    condition: {
      type: 'Ready',
      status: 'False',
      reason: 'Terminating',
      message: `deleting the domain and its disks on Host ${host}`,
    },
    event: { type: 'Normal', reason: 'Deleting' },
  };
  const jobs = input.inFlight.some((job) => isDeepStrictEqual(job, remove)) ? [] : [remove];
  return conclude(input, { ...outcome, findings: [reachability.finding, readiness], jobs });
}

/** The status and Events an outcome makes of the stored status; the status only when it changes. */
function conclude(
  input: InstanceReconcileInput,
  outcome: Outcome,
): Pick<InstanceReconcileResult, 'status' | 'jobs' | 'events'> {
  const previous = input.instance.status;
  const observedGeneration = generationOf(input.instance);
  const { conditions, events } = applyFindings(
    previous?.conditions,
    outcome.findings,
    observedGeneration,
    input.now,
  );
  const status: InstanceStatus = {
    phase: outcome.phase,
    ...(outcome.host === undefined ? {} : { host: outcome.host }),
    ...(outcome.interfaces.length === 0 ? {} : { interfaces: outcome.interfaces }),
    conditions,
    observedGeneration,
  };
  return {
    ...(isDeepStrictEqual(status, previous) ? {} : { status }),
    jobs: outcome.jobs,
    events,
  };
}

function generationOf(instance: Instance): number {
  return instance.metadata.generation ?? 0;
}

/** The agent's refusal of this generation: passed in now, or remembered in Provisioned. */
function rejectionOf(input: InstanceReconcileInput, generation: number): string | undefined {
  if (input.rejection?.generation === generation) return input.rejection.message;
  const provisioned = getCondition(input.instance.status?.conditions, 'Provisioned');
  return provisioned?.reason === 'ProvisioningFailed' && provisioned.observedGeneration === generation
    ? provisioned.message
    : undefined;
}

/** Whether the domain's NICs carry other MACs than the placement (a placement the agent has not applied). */
function nicsDiffer(observed: ObservedInstance, interfaces: readonly InstanceInterface[]): boolean {
  if (observed.interfaces === undefined) return false;
  const have = observed.interfaces.map((nic) => nic.mac).sort();
  const want = interfaces.map((nic) => nic.mac).sort();
  return !isDeepStrictEqual(have, want);
}

function jobFor(
  type: InstanceJobType,
  instance: Instance,
  host: string,
  interfaces: readonly InstanceInterface[],
  networks: readonly Network[],
  userDataSecret?: InstanceReconcileInput['userDataSecret'],
): InstanceJob {
  const { apiVersion, kind, metadata } = instance;
  // The referenced Secret's value inline, in place of the reference the agent could not follow.
  const spec =
    instance.spec.cloudInit?.userDataSecretRef !== undefined && userDataSecret && 'userData' in userDataSecret
      ? { ...instance.spec, cloudInit: { userData: userDataSecret.userData } }
      : instance.spec;
  const placed = interfaces.flatMap(({ network, mac, ipAddress }) =>
    mac === undefined || ipAddress === undefined ? [] : [{ network, mac, ipAddress }],
  );
  return {
    agent: { role: 'libvirt', name: host },
    job: {
      type,
      object: {
        apiVersion,
        kind,
        metadata: {
          name: metadata.name ?? '',
          namespace: metadata.namespace ?? '',
          uid: metadata.uid ?? '',
          generation: generationOf(instance),
        },
        spec,
        status: { host, interfaces: placed },
        networks: placed.flatMap(({ network }) => jobNetwork(instance, network, networks)),
      },
    },
  };
}

/** The Network named `name` in the Instance's namespace, as its guest configures it; none when missing or broken. */
function jobNetwork(instance: Instance, name: string, networks: readonly Network[]): InstanceJobNetwork[] {
  const network = networks.find(
    (candidate) =>
      candidate.metadata.namespace === instance.metadata.namespace && candidate.metadata.name === name,
  );
  if (network === undefined) return [];
  let gateway: string;
  try {
    ({ gateway } = networkAddressing(network));
  } catch (err) {
    // A broken Network is a problem allocateInterfaces reports; the job does without it.
    if (err instanceof AllocationError) return [];
    throw err;
  }
  return [{ name, cidr: network.spec.cidr, gateway, dns: network.spec.dns ?? [gateway] }];
}

function notReady(reason: string, message: string, eventType?: InstanceEvent['type']): Finding {
  return {
    condition: { type: 'Ready', status: 'False', reason, message },
    ...(eventType ? { event: { type: eventType, reason } } : {}),
  };
}

function notProvisioned(reason: string, message: string): Finding {
  return { condition: { type: 'Provisioned', status: 'False', reason, message } };
}

function provisioningProblem(problem: SpecProblem): Finding {
  return {
    ...notProvisioned(problem.reason, problem.message),
    event: { type: 'Warning', reason: problem.reason },
  };
}

/** Ready while the host cannot be asked. */
function unknownReadiness(reason: string, message: string): Finding {
  return { condition: { type: 'Ready', status: 'Unknown', reason, message } };
}

// --- hosts ----------------------------------------------------------------------------------------

/**
 * HostReachable for the Instance's host, from the Host's Ready condition (the hub turns it
 * Unknown once the agent has been gone longer than its grace period). When the Instance is being
 * deleted and the host cannot be reached, the message names the way out.
 */
function hostReachability(
  instance: Instance,
  name: string,
  hosts: readonly Host[],
  deleting: boolean,
): { reachable: boolean; finding: Finding } {
  const host = hosts.find((candidate) => candidate.metadata.name === name);
  const ready = getCondition(host?.status?.conditions, 'Ready');
  if (host !== undefined && ready?.status === 'True') {
    return {
      reachable: true,
      finding: {
        condition: {
          type: 'HostReachable',
          status: 'True',
          reason: 'HostReady',
          message: `Host ${name} is Ready`,
        },
      },
    };
  }
  const [reason, what] =
    host === undefined
      ? ['HostDeleted', `Host ${name} no longer exists`]
      : [
          'HostNotReady',
          `Host ${name} is not Ready (${ready ? `${ready.reason}: ${ready.message}` : 'it reports no Ready condition'})`,
        ];
  const { name: instanceName, namespace } = instance.metadata;
  const force = deleting
    ? ` The Instance is deleted once the agent of ${name} has removed its domain and disks; to delete it now and leave them behind, remove its finalizer: kubectl patch instance ${instanceName} -n ${namespace} --type json -p '[{"op":"remove","path":"/metadata/finalizers"}]'`
    : '';
  return {
    reachable: false,
    finding: {
      condition: {
        type: 'HostReachable',
        status: 'False',
        reason,
        message: `${what}; the Instance stays bound to it because its disks are local to it.${force}`,
      },
      event: { type: 'Warning', reason },
    },
  };
}

interface Resources {
  cpus: number;
  memory: bigint;
}

/** Why a Host cannot take the Instance, in the order they are checked and reported. */
const unfitReasons = {
  notReady: 'not Ready',
  cordoned: 'cordoned (spec.unschedulable)',
  unselected: 'not matching spec.nodeSelector',
  noResources: 'without allocatable resources',
  cpusTotal: 'with fewer allocatable cpus than spec.cpus',
  memoryTotal: 'with less allocatable memory than spec.memory',
  cpus: 'with too few free cpus',
  memory: 'with too little free memory',
} as const;

type UnfitReason = keyof typeof unfitReasons;

/** The Host the Instance goes to, or why none fits (counted per reason, as kube-scheduler does). */
function schedule(
  instance: Instance,
  hosts: readonly Host[],
  instances: readonly Instance[],
): string | { problem: string } {
  const { spec } = instance;
  const wanted: Resources = { cpus: spec.cpus, memory: parseQuantity(spec.memory) };
  const candidates = hosts.filter((host) => spec.host === undefined || host.metadata.name === spec.host);
  if (candidates.length === 0) {
    return {
      problem:
        spec.host === undefined
          ? 'there are no Hosts: enroll a hypervisor with the libvirt agent'
          : `Host ${spec.host} (spec.host) does not exist`,
    };
  }
  const fits: { name: string; load: number }[] = [];
  const unfit = new Map<UnfitReason, number>();
  const usage = usageByHost(instance, instances);
  for (const host of candidates) {
    const verdict = loadWith(host, wanted, instance, usage.get(host.metadata.name ?? ''));
    if (typeof verdict === 'number') fits.push({ name: host.metadata.name ?? '', load: verdict });
    else unfit.set(verdict, (unfit.get(verdict) ?? 0) + 1);
  }
  const [best] = fits.sort((a, b) => a.load - b.load || a.name.localeCompare(b.name));
  if (best) return best.name;
  const counts = (Object.keys(unfitReasons) as UnfitReason[]).flatMap((reason) => {
    const count = unfit.get(reason);
    return count === undefined ? [] : [`${count} ${unfitReasons[reason]}`];
  });
  return {
    problem: `0/${candidates.length} Hosts fit ${spec.cpus} ${spec.cpus === 1 ? 'cpu' : 'cpus'} and ${spec.memory} of memory${
      spec.host === undefined ? '' : ` (spec.host ${spec.host})`
    }: ${counts.join(', ')}${tooLarge(instance, wanted, candidates)}`,
  };
}

/**
 * What to ask for instead when the Instance is larger than every Host: waiting cannot help, only a
 * smaller spec or a larger Host can. Empty when some Host could hold it once freed.
 */
function tooLarge(instance: Instance, wanted: Resources, hosts: readonly Host[]): string {
  const sized = hosts.flatMap((host) => {
    const allocatable = host.status?.allocatable ?? host.status?.capacity;
    return allocatable === undefined
      ? []
      : [
          {
            name: host.metadata.name ?? '',
            cpus: allocatable.cpus,
            memory: parseQuantity(allocatable.memory),
          },
        ];
  });
  if (sized.length === 0) return '';
  const hints: string[] = [];
  const mostMemory = sized.reduce((a, b) => (b.memory > a.memory ? b : a));
  if (mostMemory.memory < wanted.memory) {
    hints.push(
      `spec.memory ${instance.spec.memory} is more than any Host has: the largest, ${mostMemory.name}, ` +
        `has ${binaryQuantity(mostMemory.memory)} allocatable`,
    );
  }
  const mostCpus = sized.reduce((a, b) => (b.cpus > a.cpus ? b : a));
  if (mostCpus.cpus < wanted.cpus) {
    hints.push(
      `spec.cpus ${wanted.cpus} is more than any Host has: the largest, ${mostCpus.name}, has ${mostCpus.cpus} allocatable`,
    );
  }
  return hints.map((hint) => `; ${hint}`).join('');
}

/** Bytes in the largest binary unit that keeps a whole part, one decimal at most: 7.6Gi, 512Mi. */
function binaryQuantity(bytes: bigint): string {
  const units = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi'];
  let unit = 0;
  while (unit < units.length - 1 && bytes >= 1024n ** BigInt(unit + 1)) unit++;
  const tenths = (bytes * 10n) / 1024n ** BigInt(unit);
  const whole = tenths / 10n;
  const fraction = tenths % 10n;
  return `${whole}${fraction === 0n ? '' : `.${fraction}`}${units[unit]}`;
}

/** Why `host` cannot take `wanted`, or how loaded it would be with it (0 to 1, CPU and memory alike). */
function loadWith(
  host: Host,
  wanted: Resources,
  instance: Instance,
  used: Resources = { cpus: 0, memory: 0n },
): number | UnfitReason {
  if (getCondition(host.status?.conditions, 'Ready')?.status !== 'True') return 'notReady';
  if (host.spec.unschedulable) return 'cordoned';
  const labels = host.metadata.labels ?? {};
  const selector = Object.entries(instance.spec.nodeSelector ?? {});
  if (!selector.every(([key, value]) => labels[key] === value)) return 'unselected';
  const allocatable = host.status?.allocatable ?? host.status?.capacity;
  if (allocatable === undefined) return 'noResources';
  const total: Resources = { cpus: allocatable.cpus, memory: parseQuantity(allocatable.memory) };
  if (wanted.cpus > total.cpus) return 'cpusTotal';
  if (wanted.memory > total.memory) return 'memoryTotal';
  if (used.cpus + wanted.cpus > total.cpus) return 'cpus';
  if (used.memory + wanted.memory > total.memory) return 'memory';
  const memoryShare = Number(((used.memory + wanted.memory) * 1_000_000n) / total.memory) / 1_000_000;
  return ((used.cpus + wanted.cpus) / total.cpus + memoryShare) / 2;
}

/** What the Instances bound to each Host (other than `instance`) request, in one pass over them all. */
function usageByHost(instance: Instance, instances: readonly Instance[]): Map<string, Resources> {
  const usage = new Map<string, Resources>();
  for (const other of instances) {
    const host = other.status?.host;
    if (host === undefined || objectKey(other) === objectKey(instance)) continue;
    const sum = usage.get(host) ?? { cpus: 0, memory: 0n };
    usage.set(host, {
      cpus: sum.cpus + other.spec.cpus,
      memory: sum.memory + parseQuantity(other.spec.memory),
    });
  }
  return usage;
}

// --- addresses ------------------------------------------------------------------------------------

/** Why the spec cannot be provisioned; `reason` is the condition reason and Event reason. */
interface SpecProblem {
  reason: string;
  message: string;
}

/**
 * The Instance's interfaces: per spec.networks entry, the MAC and address the Network allocator
 * gives it next to the other Instances' reservations. An entry that cannot be served keeps what
 * status recorded (the reservation holds while the problem lasts) and adds a problem.
 */
function allocateInterfaces(
  instance: Instance,
  networks: readonly Network[],
  instances: readonly Instance[],
): { interfaces: InstanceInterface[]; problems: SpecProblem[] } {
  const namespace = instance.metadata.namespace;
  const interfaces: InstanceInterface[] = [];
  const problems: SpecProblem[] = [];
  (instance.spec.networks ?? []).forEach((attachment, index) => {
    const recorded = instance.status?.interfaces?.find((nic) => nic.network === attachment.name);
    const keepRecorded = (problem: SpecProblem) => {
      problems.push(problem);
      if (recorded) interfaces.push(recorded);
    };
    const network = networks.find(
      (candidate) =>
        candidate.metadata.namespace === namespace && candidate.metadata.name === attachment.name,
    );
    if (network === undefined) {
      keepRecorded({
        reason: 'NetworkNotFound',
        message: `spec.networks[${index}].name: Network ${namespace}/${attachment.name} does not exist`,
      });
      return;
    }
    let addressing: ReturnType<typeof networkAddressing>;
    try {
      addressing = networkAddressing(network);
    } catch (err) {
      if (!(err instanceof AllocationError)) throw err;
      keepRecorded({ reason: 'InvalidNetwork', message: `Network ${objectKey(network)}: ${err.message}` });
      return;
    }
    const reserved = reservationsAgainst(instance, attachment.name, instances);
    const { leases, problems: refused } = allocateLeases(network, addressing, [instance], reserved);
    const [lease] = leases;
    if (lease) interfaces.push({ network: attachment.name, mac: lease.mac, ipAddress: lease.address });
    for (const problem of refused) {
      const reason = problem.field.endsWith('.mac')
        ? 'MACUnavailable'
        : attachment.address !== undefined
          ? 'AddressUnavailable'
          : 'NetworkFull';
      keepRecorded({ reason, message: `${problem.field}: ${problem.message}` });
    }
  });
  return { interfaces, problems };
}

/** An address or MAC an Instance holds on a Network: recorded in its status, or asked for in its spec. */
interface Claim {
  field: 'address' | 'mac';
  value: string;
  held: boolean;
}

function claimsOn(instance: Instance, network: string): Claim[] {
  const recorded = instance.status?.interfaces?.find((nic) => nic.network === network);
  const attachment = instance.spec.networks?.find((entry) => entry.name === network);
  const claims: [Claim['field'], string | undefined, boolean][] = [
    ['address', recorded?.ipAddress, true],
    ['mac', recorded?.mac, true],
    ['address', attachment?.address, false],
    ['mac', attachment?.mac, false],
  ];
  return claims.flatMap(([field, value, held]) => (value === undefined ? [] : [{ field, value, held }]));
}

/**
 * What the other Instances of the namespace hold on `network` that `instance` must stay clear
 * of. Where both claim the same value, a held claim beats a requested one and, between two of a
 * kind, the older Instance wins: so a reservation is never taken away, and two Instances racing
 * for one address agree on who gets it.
 */
function reservationsAgainst(
  instance: Instance,
  network: string,
  instances: readonly Instance[],
): LeaseReservation[] {
  const mine = claimsOn(instance, network);
  const { namespace, name } = instance.metadata;
  return instances.flatMap((other) => {
    if (other.metadata.namespace !== namespace || other.metadata.name === name) return [];
    const claims = claimsOn(other, network);
    if (claims.length === 0) return [];
    // Only a tie needs the creation order, which is the costly part over thousands of Instances.
    let otherIsOlder: boolean | undefined;
    return claims
      .filter((claim) => {
        const own = mine.find(
          (candidate) => candidate.field === claim.field && candidate.value === claim.value,
        );
        if (own === undefined) return true;
        if (own.held !== claim.held) return claim.held;
        otherIsOlder ??= inCreationOrder([instance, other])[0] === other;
        return otherIsOlder;
      })
      .map((claim) => ({ instance: objectKey(other), [claim.field]: claim.value }));
  });
}
