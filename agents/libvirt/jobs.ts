/**
 * The libvirt agent's jobs on domains: a pure plan (observed domain + desired state -> actions)
 * and a thin shell that observes, plans and runs the actions over a Hypervisor. Jobs carry the
 * whole desired object and may arrive twice, so every plan is idempotent: applying what is
 * already there plans nothing, and deleting what is gone plans nothing.
 *
 * Disks, images, kernels and seed ISOs are prepared before a job gets here: DomainInputs names
 * the files they produced.
 */

import { isLoamError, LoamError } from '../../crds/errors.js';
import type { ActionSubresource } from '../../crds/kind.js';
import type { Instance, runStrategies } from '../../crds/v1alpha1/instance.js';
import {
  buildDomain,
  type DesiredDomain,
  type DomainFacts,
  type DomainInputs,
  parseDomainXml,
} from './domain-xml.js';
import { type DomainStatus, type Hypervisor, isActive } from './hypervisor.js';

export type RunStrategy = (typeof runStrategies)[number];

/** A domain as the agent finds it. */
export interface ObservedDomain {
  status: DomainStatus;
  /** The persistent definition: what the next start uses. */
  defined: DomainFacts;
  /** What the running domain was started with; undefined when it is shut off. */
  live?: DomainFacts;
}

export type DomainAction =
  | { type: 'define'; xml: string }
  | { type: 'start' }
  | { type: 'shutdown' }
  | { type: 'destroy' }
  | { type: 'reboot' }
  | { type: 'reset' }
  | { type: 'undefine' };

/** Power actions a person asks for (start, stop = ACPI shutdown then destroy, reboot, reset). */
export type PowerAction = ActionSubresource;

/** A crashed domain still has its QEMU process (on_crash preserve): it must be destroyed before a start. */
const startActions = (status: DomainStatus | undefined): DomainAction[] =>
  status?.state === 'crashed' ? [{ type: 'destroy' }, { type: 'start' }] : [{ type: 'start' }];

function crashed(status: DomainStatus): boolean {
  return status.state === 'crashed' || (status.state === 'shutoff' && status.reason === 'crashed');
}

/**
 * What makes the domain match `desired` under `runStrategy`:
 * - the definition is (re)written when its hash or generation differs from the desired one;
 * - Always: start whenever it is off; RerunOnFailure: start when new or after a crash, not after
 *   the guest powered itself off; Halted: shut it down; Manual: leave the power state alone.
 * A running domain keeps its live definition until it restarts (see restartRequired).
 */
export function planApply(
  observed: ObservedDomain | undefined,
  desired: DesiredDomain,
  runStrategy: RunStrategy,
): DomainAction[] {
  if (observed !== undefined) checkOwner(observed, desired.identity.uid);
  const actions: DomainAction[] = [];
  const defined = observed?.defined.identity;
  if (defined?.specHash !== desired.identity.specHash || defined.generation !== desired.identity.generation) {
    actions.push({ type: 'define', xml: desired.xml });
  }
  const status = observed?.status;
  const running = status !== undefined && isRunning(status);
  if (runStrategy === 'Always' && !running) actions.push(...startActions(status));
  if (runStrategy === 'RerunOnFailure' && (status === undefined || crashed(status))) {
    actions.push(...startActions(status));
  }
  if (runStrategy === 'Halted' && running) actions.push({ type: 'shutdown' });
  return actions;
}

/**
 * Whether the domain runs with an older definition than `desired`, which only a restart
 * applies. Reported (KubeVirt's RestartRequired), never acted on behind the user's back.
 */
export function restartRequired(observed: ObservedDomain | undefined, desired: DesiredDomain): boolean {
  if (observed === undefined || !isRunning(observed.status)) return false;
  return observed.live?.identity?.specHash !== desired.identity.specHash;
}

/** Up, in any state but a crash whose process libvirt kept. */
function isRunning(status: DomainStatus): boolean {
  return isActive(status) && status.state !== 'crashed';
}

/** Destroy (no grace: the Instance is going away) and undefine; nothing when it is gone already. */
export function planDelete(observed: ObservedDomain | undefined): DomainAction[] {
  if (observed === undefined) return [];
  return isActive(observed.status) ? [{ type: 'destroy' }, { type: 'undefine' }] : [{ type: 'undefine' }];
}

/**
 * The actions for a power request on the domain of the Instance with `uid`; nothing when the
 * domain is already where it was asked to be.
 */
export function planPower(
  observed: ObservedDomain | undefined,
  uid: string,
  action: PowerAction,
): DomainAction[] {
  if (observed === undefined)
    throw new LoamError('NotFound', `no domain to ${action}: apply the Instance first`);
  checkOwner(observed, uid);
  const { status } = observed;
  const running = isRunning(status);
  switch (action) {
    case 'start':
      return running ? [] : startActions(status);
    case 'stop':
      return isActive(status) ? [{ type: 'shutdown' }] : [];
    case 'reboot':
    case 'reset':
      // Not a start: under runStrategy Halted or Manual, starting is for the person to decide.
      if (!running) {
        throw new LoamError(
          'Conflict',
          `domain ${observed.defined.name} is not running (it is ${status.state})`,
        );
      }
      return [{ type: action }];
  }
}

/** The UUID is the Instance uid, so a domain under it without that identity is not ours to change. */
function checkOwner(observed: ObservedDomain, uid: string): void {
  const identity = observed.defined.identity;
  if (identity?.uid === uid) return;
  throw new LoamError(
    'Conflict',
    `domain ${observed.defined.name} has UUID ${uid} but ${
      identity === undefined ? 'no Loam metadata' : `belongs to ${identity.namespace}/${identity.name}`
    }; leaving it alone`,
  );
}

export interface JobResult {
  /** What was done, in order. */
  actions: DomainAction['type'][];
  restartRequired?: boolean;
  /** The domain afterwards; undefined when there is none. */
  observed?: ObservedDomain;
}

/** A Loam domain found on the host, with the identity from its metadata. */
export interface LoamDomain {
  status: DomainStatus;
  facts: DomainFacts;
}

export interface DomainJobsOptions {
  /** How long a stop waits for the guest to power off before destroying it. */
  shutdownTimeoutMs?: number;
}

/** The shell: observe, plan, act, observe again. */
export class DomainJobs {
  private readonly shutdownTimeoutMs: number;

  constructor(
    private readonly hypervisor: Hypervisor,
    options: DomainJobsOptions = {},
  ) {
    this.shutdownTimeoutMs = options.shutdownTimeoutMs ?? 60_000;
  }

  /** Defines, updates, starts or stops the Instance's domain so it matches the Instance. */
  async apply(instance: Instance, inputs: DomainInputs): Promise<JobResult> {
    const desired = buildDomain(instance, inputs);
    const actions = planApply(await this.observe(desired.uuid), desired, instance.spec.runStrategy);
    await this.run(desired.uuid, actions);
    const observed = await this.observe(desired.uuid);
    return {
      actions: actions.map((action) => action.type),
      restartRequired: restartRequired(observed, desired),
      observed,
    };
  }

  async delete(uid: string): Promise<JobResult> {
    const actions = planDelete(await this.observe(uid));
    await this.run(uid, actions);
    return { actions: actions.map((action) => action.type) };
  }

  async power(uid: string, action: PowerAction): Promise<JobResult> {
    const actions = planPower(await this.observe(uid), uid, action);
    await this.run(uid, actions);
    return { actions: actions.map((a) => a.type), observed: await this.observe(uid) };
  }

  /** The domain with this UUID, or undefined when there is none. */
  async observe(uuid: string): Promise<ObservedDomain | undefined> {
    try {
      const defined = parseDomainXml(await this.hypervisor.dumpxml(uuid, { inactive: true }));
      const status = await this.hypervisor.state(uuid);
      const live = isActive(status) ? parseDomainXml(await this.hypervisor.dumpxml(uuid)) : undefined;
      return live === undefined ? { status, defined } : { status, defined, live };
    } catch (err) {
      if (isLoamError(err, 'NotFound')) return undefined;
      throw err;
    }
  }

  /** Every domain carrying Loam metadata, e.g. for the inventory an agent reports on (re)connect. */
  async inventory(): Promise<LoamDomain[]> {
    const found: LoamDomain[] = [];
    for (const status of await this.hypervisor.list()) {
      try {
        const facts = parseDomainXml(await this.hypervisor.dumpxml(status.name, { inactive: true }));
        if (facts.identity !== undefined) found.push({ status, facts });
      } catch (err) {
        if (!isLoamError(err, 'NotFound')) throw err; // undefined since the list: not there
      }
    }
    return found;
  }

  /**
   * Runs the actions in order. Races with other actors (a guest powering off, a person with
   * virsh) are absorbed where the outcome is what was wanted anyway: starting a running domain,
   * destroying a stopped one, undefining a missing one.
   */
  private async run(uuid: string, actions: DomainAction[]): Promise<void> {
    const h = this.hypervisor;
    for (const action of actions) {
      try {
        switch (action.type) {
          case 'define':
            await this.define(action.xml);
            break;
          case 'start':
            await h.start(uuid);
            break;
          case 'shutdown':
            await h.shutdown(uuid, { timeoutMs: this.shutdownTimeoutMs });
            break;
          case 'destroy':
            await h.destroy(uuid);
            break;
          case 'reboot':
            await h.reboot(uuid);
            break;
          case 'reset':
            await h.reset(uuid);
            break;
          case 'undefine':
            await h.undefine(uuid);
            break;
        }
      } catch (err) {
        if (!absorbed(action.type, err)) throw err;
      }
    }
  }

  private async define(xml: string): Promise<void> {
    try {
      await this.hypervisor.define(xml);
    } catch (err) {
      if (!isLoamError(err, 'AlreadyExists')) throw err;
      // Same name, another UUID: a domain of an earlier Instance of this name, deleted while
      // this host was away. It is reported as an orphan; only the controller may remove it.
      throw new LoamError(
        'AlreadyExists',
        `${err.message} (a leftover of an earlier Instance of this name?)`,
        {
          cause: err,
        },
      );
    }
  }
}

function absorbed(action: DomainAction['type'], err: unknown): boolean {
  switch (action) {
    case 'start':
      return isLoamError(err, 'Conflict');
    case 'destroy':
      return isLoamError(err, 'Conflict') || isLoamError(err, 'NotFound');
    case 'undefine':
      return isLoamError(err, 'NotFound');
    default:
      return false;
  }
}
