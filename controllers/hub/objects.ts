/**
 * The hub's side of the Kubernetes API (client-node, so it works against Loam's own API server
 * and a cluster's alike): agents' Hosts and Routers, their status, their heartbeat Leases, and
 * informers that tell the hub when one changes or goes away.
 */
import {
  CustomObjectsApi,
  type Informer,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  KubernetesObjectApi,
  makeInformer,
  type ObjectCache,
  PatchStrategy,
} from '@kubernetes/client-node';
import { group, hostKind, routerKind, version } from '../../crds/v1alpha1/index.js';
import type { AgentRole } from '../pki/certificates.js';
import { isApiStatus } from '../runtime/retry.js';
import { type AgentRef, agentKind, agentLeaseName } from './identity.js';
import type { AgentStatus } from './status.js';

export interface AgentObject extends KubernetesObject {
  spec?: Record<string, unknown>;
  status?: AgentStatus;
}

export type AgentInformer = Informer<AgentObject> & ObjectCache<AgentObject>;

const plurals: Record<AgentRole, string> = { libvirt: hostKind.plural, network: routerKind.plural };
const leaseNamespace = 'kube-system';

/** metav1.MicroTime: RFC 3339 with microseconds. */
function microTime(date: Date): string {
  return date.toISOString().replace(/Z$/, '000Z');
}

export class AgentObjects {
  private readonly custom: CustomObjectsApi;
  /** For built-in kinds (Secrets, Leases); also what bootstrap tokens go through. */
  readonly objectApi: KubernetesObjectApi;

  constructor(private readonly kubeConfig: KubeConfig) {
    this.custom = kubeConfig.makeApiClient(CustomObjectsApi);
    this.objectApi = KubernetesObjectApi.makeApiClient(kubeConfig);
  }

  /** The agent's Host or Router; undefined when there is none. */
  async get(agent: AgentRef): Promise<AgentObject | undefined> {
    try {
      return (await this.custom.getClusterCustomObject({
        group,
        version,
        plural: plurals[agent.role],
        name: agent.name,
      })) as AgentObject;
    } catch (err) {
      if (isApiStatus(err, 404)) return undefined;
      throw err;
    }
  }

  /**
   * The agent's Host or Router, created if missing. A Router's driver is not known at enrollment
   * (EnrollRequest has no field for it), so it starts as linux and an admin may change it.
   */
  async ensure(agent: AgentRef): Promise<AgentObject> {
    const body: AgentObject = {
      apiVersion: `${group}/${version}`,
      kind: agentKind(agent.role),
      metadata: { name: agent.name },
      spec: agent.role === 'network' ? { driver: 'linux' } : {},
    };
    try {
      return (await this.custom.createClusterCustomObject({
        group,
        version,
        plural: plurals[agent.role],
        body,
      })) as AgentObject;
    } catch (err) {
      if (!isApiStatus(err, 409)) throw err;
      const existing = await this.get(agent);
      if (!existing) throw err;
      return existing;
    }
  }

  /** Writes `object.status` through the status subresource, failing with 409 if it changed since read. */
  async replaceStatus(role: AgentRole, object: AgentObject): Promise<void> {
    await this.custom.replaceClusterCustomObjectStatus({
      group,
      version,
      plural: plurals[role],
      name: object.metadata?.name ?? '',
      body: object,
    });
  }

  /** Renews (or takes) the agent's Lease `loam-agent-<role>-<name>` in kube-system. */
  async renewLease(agent: AgentRef, durationSeconds: number, now: Date): Promise<void> {
    const lease = {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: agentLeaseName(agent), namespace: leaseNamespace },
      spec: { holderIdentity: agent.name, leaseDurationSeconds: durationSeconds, renewTime: microTime(now) },
    };
    try {
      await this.objectApi.patch(
        lease,
        undefined,
        undefined,
        'loam-hub',
        undefined,
        PatchStrategy.MergePatch,
      );
    } catch (err) {
      if (!isApiStatus(err, 404)) throw err;
      await this.objectApi.create({ ...lease, spec: { ...lease.spec, acquireTime: microTime(now) } });
    }
  }

  /** An informer over all Hosts (libvirt) or Routers (network); not started. */
  informer(role: AgentRole): AgentInformer {
    const plural = plurals[role];
    return makeInformer<AgentObject>(
      this.kubeConfig,
      `/apis/${group}/${version}/${plural}`,
      () =>
        this.custom.listClusterCustomObject({ group, version, plural }) as Promise<
          KubernetesListObject<AgentObject>
        >,
    );
  }
}
