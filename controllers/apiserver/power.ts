/**
 * Action subresources: `PUT .../instances/{name}/{start,stop,reboot,reset}`, as KubeVirt serves
 * virtualmachines/start|stop|restart and virtualmachineinstances/softreboot. A reboot or reset
 * (and start or stop under runStrategy Manual, where nothing else powers the domain) is a job
 * the API server sends through the hub to the agent of the Instance's Host and waits for; start
 * and stop under the other run strategies change spec.runStrategy, as KubeVirt's do, since the
 * controller would otherwise undo them. The answer is a Status: Success once the agent did it
 * or the new run strategy is stored; refusals are Statuses with their HTTP codes.
 */

import { status as grpcStatus } from '@grpc/grpc-js';
import { errorFromGrpc, LoamError } from '../../crds/errors.js';
import type { ActionSubresource, KindInfo } from '../../crds/kind.js';
import type { Instance, runStrategies } from '../../crds/v1alpha1/instance.js';
import type { Hub } from '../hub/hub.js';
import { agentHub, instanceConflict, runningHost } from './instance-agent.js';
import { patchTypes, type Resources, type WriteOptions } from './resources.js';
import type { ResourceRequest } from './routing.js';

/** What a power action needs of the agent hub. */
export type JobHub = Pick<Hub, 'dispatch'>;

/** The object of the instance.power job an agent runs for a power action (agents/libvirt/driver.ts). */
export interface PowerJobObject {
  apiVersion?: string;
  kind?: string;
  metadata: { namespace?: string; name?: string; uid?: string };
  action: ActionSubresource;
}

/**
 * How long the API server waits for the agent: a stop gives the guest the agent's shutdown
 * timeout (60 s by default) to power off before destroying it.
 */
const powerJobDeadlineMs = 120_000;

type RunStrategy = (typeof runStrategies)[number];

/** What an action on an Instance comes to. */
export type ActionPlan =
  | { job: ActionSubresource; host: string }
  | { runStrategy: RunStrategy; message: string };

/**
 * Pure: what `action` does to `instance`, or a Conflict saying why it cannot. Under Always and
 * RerunOnFailure a stop becomes runStrategy Halted and under Halted a start becomes Always (the
 * controller keeps the domain that way); a start under Always, a stop under Halted, or a start of
 * what runs already has nothing to do.
 */
export function planAction(kind: KindInfo, instance: Instance, action: ActionSubresource): ActionPlan {
  const strategy = instance.spec.runStrategy;
  const phase = instance.status?.phase ?? 'Pending';
  const refuse = (why: string) => instanceConflict(kind, instance, why);
  if (instance.metadata.deletionTimestamp !== undefined) throw refuse('the Instance is being deleted');
  switch (action) {
    case 'start': {
      if (strategy === 'Halted') {
        return { runStrategy: 'Always', message: 'spec.runStrategy changed from Halted to Always' };
      }
      if (strategy === 'Always') throw refuse('runStrategy Always keeps the Instance running already');
      if (phase === 'Running') throw refuse('the Instance is running already');
      const host = instance.status?.host;
      if (host === undefined) throw refuse(`the Instance is not scheduled to a Host (phase ${phase})`);
      return { job: action, host };
    }
    case 'stop':
      if (strategy === 'Halted') throw refuse('runStrategy Halted keeps the Instance stopped already');
      if (strategy !== 'Manual') {
        return { runStrategy: 'Halted', message: `spec.runStrategy changed from ${strategy} to Halted` };
      }
      return { job: action, host: runningHost(kind, instance) };
    case 'reboot':
    case 'reset':
      return { job: action, host: runningHost(kind, instance) };
  }
}

/**
 * Carries out `route`'s action on its Instance and answers with a Success Status. The agent's
 * refusals become errors with their codes; a domain the agent does not have is a Conflict (the
 * Instance is not where its status says, or not yet).
 */
export async function performAction(
  route: ResourceRequest & { subresource: ActionSubresource },
  resources: Resources,
  hub: JobHub | undefined,
  write: WriteOptions,
): Promise<unknown> {
  const { kind, subresource: action } = route;
  const instance = (await resources.get(route)) as unknown as Instance;
  const { name = '', namespace = '', uid = '', resourceVersion } = instance.metadata;
  const plan = planAction(kind, instance, action);
  if ('runStrategy' in plan) {
    // At the version the plan was made from: a concurrent change is a Conflict, not overwritten.
    const main: ResourceRequest = { type: 'resource', kind, verb: 'patch', namespace, name };
    await resources.patch(
      main,
      patchTypes.merge,
      { metadata: { resourceVersion }, spec: { runStrategy: plan.runStrategy } },
      write,
    );
    return success(`${namespace}/${name}: ${plan.message}${write.dryRun ? ' (dry run: not stored)' : ''}`);
  }
  if (write.dryRun)
    return success(`${namespace}/${name}: ${action} on Host ${plan.host} (dry run: not done)`);
  const agents = agentHub(hub);
  // One at a time per Instance: the agent runs them one after the other anyway, and each waits
  // holding one of the Host's job slots, which the controller needs for every other Instance there.
  if (actionsInFlight.has(uid)) {
    throw instanceConflict(
      kind,
      instance,
      'another power action on it is in progress; try again once it is done',
    );
  }
  actionsInFlight.add(uid);
  let result: Awaited<ReturnType<JobHub['dispatch']>>;
  try {
    result = await agents.dispatch(
      { role: 'libvirt', name: plan.host },
      {
        type: 'instance.power',
        object: {
          apiVersion: instance.apiVersion,
          kind: kind.kind,
          metadata: { namespace, name, uid },
          action,
        } satisfies PowerJobObject,
        deadline: new Date(Date.now() + powerJobDeadlineMs),
      },
    );
  } finally {
    actionsInFlight.delete(uid);
  }
  if (result.code !== grpcStatus.OK) throw agentRefusal(kind, instance, plan.host, action, result);
  return success(`${namespace}/${name}: ${action} done on Host ${plan.host}`);
}

/**
 * The uids of the Instances with a power action at their agent now. Per process, as the hub is
 * (only the leader's API server sends jobs), and uids are unique across servers in one process.
 */
const actionsInFlight = new Set<string>();

/**
 * The agent's answer as the requester's error: what is about the domain's state is a Conflict,
 * and the agent's internal failures are not passed on word for word (its log has them).
 */
function agentRefusal(
  kind: KindInfo,
  instance: Instance,
  host: string,
  action: ActionSubresource,
  result: { code: number; message: string },
): LoamError {
  const err = errorFromGrpc(result.code, result.message);
  switch (result.code) {
    case grpcStatus.NOT_FOUND:
      return instanceConflict(kind, instance, `Host ${host} has no domain for it: ${err.message}`);
    case grpcStatus.ABORTED:
    case grpcStatus.FAILED_PRECONDITION:
      return instanceConflict(kind, instance, `Host ${host} could not ${action} it: ${err.message}`);
    case grpcStatus.UNIMPLEMENTED:
      return new LoamError('Unavailable', `the agent of Host ${host} does not run power actions (too old?)`);
    case grpcStatus.INTERNAL:
    case grpcStatus.UNKNOWN:
      return new LoamError(
        'Internal',
        `Host ${host} could not ${action} it: the agent failed (its log says why)`,
      );
    default:
      return new LoamError(err.code, `Host ${host} could not ${action} it: ${err.message}`);
  }
}

function success(message: string) {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', message, code: 200 };
}
