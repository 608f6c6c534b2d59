/**
 * The jobs the Network controller sends a router agent, as both router drivers' tests build them:
 * a Network of `tenant` placed on Router edge-1 on a VXLAN segment, its gateway the cidr's first
 * address, and a generation (and config hash) that goes up with every apply built.
 */
import type { AgentJob } from '../../../agents/runtime/driver.js';
import type { Lease } from '../../../controllers/network/allocate.js';
import type { NetworkJobObject, RouterPeer } from '../../../controllers/network/reconcile.js';
import type { RouterSpec } from '../../../crds/v1alpha1/index.js';
import { network as networkObject, router } from '../../controllers/network/objects.js';

let generation = 0;

/** The generation of the last apply built. */
export function latestGeneration(): number {
  return generation;
}

export function networkApplyJob(options: {
  tenant: string;
  name: string;
  spec: Record<string, unknown>;
  segment: number;
  driver?: RouterSpec['driver'];
  leases?: Lease[];
  peers?: RouterPeer[];
}): AgentJob {
  const { tenant, name, spec, segment } = options;
  const network = networkObject(name, spec, { namespace: tenant });
  const { unschedulable: _, ...routerSpec } = router(options.driver ? { driver: options.driver } : {}).spec;
  generation += 1;
  const object: NetworkJobObject = {
    apiVersion: network.apiVersion,
    kind: network.kind,
    metadata: {
      name,
      namespace: tenant,
      uid: `00000000-0000-4000-8000-${String(segment).padStart(12, '0')}`,
      generation,
      annotations: { 'loam.dev/config-hash': `hash-${generation}` },
    },
    spec: network.spec,
    status: {
      router: 'edge-1',
      segment: { type: 'vxlan', id: segment },
      gateway: String(spec.cidr).replace(/\.0\/\d+$/, '.1'),
    },
    router: {
      apiVersion: network.apiVersion,
      kind: 'Router',
      metadata: { name: 'edge-1' },
      spec: routerSpec,
    },
    leases: options.leases ?? [],
    peers: options.peers ?? [],
  };
  return {
    id: `apply-${generation}`,
    type: 'network.apply',
    object: object as never,
    key: `Network/${tenant}/${name}`,
  };
}

export function networkDeleteJob(tenant: string, name: string): AgentJob {
  return {
    id: `delete-${name}`,
    type: 'network.delete',
    object: { kind: 'Network', metadata: { name, namespace: tenant, uid: 'x' } },
    key: `Network/${tenant}/${name}`,
  };
}
