/**
 * What the subresources that reach through to an Instance's domain (its console, its power
 * actions) share: the Host whose libvirt agent runs it, and the hub that reaches that agent.
 */
import { LoamError } from '../../crds/errors.js';
import type { KindInfo } from '../../crds/kind.js';
import type { Instance } from '../../crds/v1alpha1/instance.js';
import { qualifiedName } from './status.js';

/** Phases whose Host's agent may have a domain to reach; for Unknown, the hub knows whether it is there. */
const runningPhases: ReadonlySet<string> = new Set(['Running', 'Unknown']);

/** The Host `instance` runs on; Conflict when it is not running on one. */
export function runningHost(kind: KindInfo, instance: Instance): string {
  const { host, phase = 'Pending' } = instance.status ?? {};
  if (host !== undefined && runningPhases.has(phase)) return host;
  const why = host === undefined ? 'is not scheduled to a Host' : `is not running on Host ${host}`;
  throw instanceConflict(kind, instance, `the Instance ${why} (phase ${phase})`);
}

/** Worded as kube's NewConflict, as KubeVirt answers for a VMI that is not running. */
export function instanceConflict(kind: KindInfo, instance: Instance, why: string): LoamError {
  return new LoamError(
    'Conflict',
    `Operation cannot be fulfilled on ${qualifiedName(kind, instance.metadata.name ?? '')}: ${why}`,
  );
}

/** The hub, which runs only on the control plane that leads; Unavailable on the others. */
export function agentHub<Hub>(hub: Hub | undefined): Hub {
  if (hub !== undefined) return hub;
  throw new LoamError(
    'Unavailable',
    'this control plane does not run the agent hub now (another one holds the leadership); try again, or use the API server of the leader',
  );
}
