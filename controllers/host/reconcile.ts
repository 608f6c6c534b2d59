/**
 * The Host controller's decision, pure: which Loam domains on a host no Instance wants, that is,
 * whose Instance (namespace, name and uid, from the domain's metadata) does not exist. Such
 * orphans are left behind when an Instance goes without its domain (its finalizer removed by hand
 * while its Host was unreachable) or made outside Loam with its metadata. They are only reported,
 * in `status.orphanedDomains` and by a Warning Event per orphan when it shows up: Loam removes a
 * domain only when an Instance asks it to. Everything else in a Host's status is the hub's; this
 * writes only `status.orphanedDomains`, by a merge patch, so neither overwrites the other.
 */
import {
  type Host,
  instanceKind,
  maxOrphanedDomains,
  type OrphanedDomain,
} from '../../crds/v1alpha1/index.js';
import type { RecordedEvent } from '../runtime/writes.js';

export interface HostReconcileInput {
  host: Host;
  /**
   * What the host's agent runs, as its inventory lists it (Instances and the Networks it
   * attaches); undefined while the agent has not reported since this control plane started, when
   * nothing can be judged.
   */
  inventory: readonly { kind: string; namespace: string; name: string; uid: string }[] | undefined;
  /** The uid of the Instance namespace/name, or undefined when there is none. */
  instanceUid: (namespace: string, name: string) => string | undefined;
}

export interface HostReconcileResult {
  /** The status fields to merge (null removes the list); undefined when status already says so. */
  patch?: { orphanedDomains: OrphanedDomain[] | null };
  events: RecordedEvent[];
  /** How many orphans there are (status lists at most maxOrphanedDomains); undefined when not judged. */
  orphans?: number;
}

const sameDomain = (a: OrphanedDomain, b: OrphanedDomain) =>
  a.uid === b.uid && a.namespace === b.namespace && a.name === b.name;

const compareDomains = (a: OrphanedDomain, b: OrphanedDomain) =>
  a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name) || a.uid.localeCompare(b.uid);

export function reconcileHost(input: HostReconcileInput): HostReconcileResult {
  if (input.inventory === undefined) return { events: [] };
  const orphans = input.inventory
    .filter((ref) => {
      if (ref.kind !== instanceKind.kind) return false;
      const uid = input.instanceUid(ref.namespace, ref.name);
      // An agent that names no uid cannot tell one Instance of a name from another: not judged.
      return uid === undefined || (ref.uid !== '' && ref.uid !== uid);
    })
    .map(({ namespace, name, uid }) => ({ namespace, name, uid }))
    .sort(compareDomains);
  const listed = orphans.slice(0, maxOrphanedDomains);
  const current = input.host.status?.orphanedDomains ?? [];
  const events: RecordedEvent[] = listed
    .filter((orphan) => !current.some((known) => sameDomain(known, orphan)))
    .map(({ namespace, name, uid }) => ({
      type: 'Warning',
      reason: 'OrphanedDomain',
      message:
        `a domain with the Loam metadata of Instance ${namespace}/${name} (uid ${uid}) is defined here, ` +
        `but that Instance does not exist; Loam leaves it alone: remove it on the host with ` +
        `virsh destroy ${uid} and virsh undefine ${uid}`,
    }));
  const unchanged =
    listed.length === current.length &&
    listed.every((orphan, i) => sameDomain(orphan, current[i] as OrphanedDomain));
  return {
    ...(unchanged ? {} : { patch: { orphanedDomains: listed.length > 0 ? listed : null } }),
    events,
    orphans: orphans.length,
  };
}
