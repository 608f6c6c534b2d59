/**
 * Frozen, validated API objects for Instance reconcile tests (frozen as the informer caches
 * freeze them, so a reconcile that mutated its input would throw), and a stand-in for the shell
 * that stores a reconcile's result the way the API server would.
 */
import type {
  InstanceReconcileInput,
  InstanceReconcileResult,
} from '../../../controllers/instance/reconcile.js';
import { formatTimestamp } from '../../../crds/meta.js';
import {
  apiVersion,
  type Host,
  hostKind,
  type Instance,
  instanceKind,
  type Network,
  networkKind,
} from '../../../crds/v1alpha1/index.js';
import { validateObject } from '../../../crds/validate.js';

export const now = new Date(Date.UTC(2025, 4, 1, 12, 0));
export const earlier = formatTimestamp(new Date(Date.UTC(2025, 4, 1, 11, 0)));

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

export interface HostOptions {
  cpus?: number;
  memory?: string;
  /** The Ready condition's status; undefined for a Host that reports none. */
  ready?: 'True' | 'Unknown' | undefined;
  unschedulable?: boolean;
  labels?: Record<string, string>;
  /** Report capacity only, as the hub does for an agent that reports no allocatable. */
  capacityOnly?: boolean;
  /** Allocatable below capacity, as a Host that keeps some for itself reports it. */
  allocatable?: { cpus: number; memory: string };
}

/**
 * The Ready condition the hub writes for an agent's Host or Router: connected (True), gone past
 * its grace period (Unknown), or none yet (undefined).
 */
export function readyConditions(ready: 'True' | 'Unknown' | undefined) {
  if (ready === undefined) return [];
  return [
    ready === 'True'
      ? {
          type: 'Ready',
          status: 'True',
          reason: 'AgentConnected',
          message: 'agent 0.1.0 connected',
          lastTransitionTime: earlier,
        }
      : {
          type: 'Ready',
          status: 'Unknown',
          reason: 'AgentDisconnected',
          message: 'agent disconnected and did not reconnect within 40s',
          lastTransitionTime: earlier,
        },
  ];
}

export function host(name: string, options: HostOptions = {}): Host {
  const resources = { cpus: options.cpus ?? 8, memory: options.memory ?? '16Gi' };
  const ready = 'ready' in options ? options.ready : 'True';
  return deepFreeze(
    validateObject(hostKind, {
      apiVersion,
      kind: 'Host',
      metadata: { name, ...(options.labels ? { labels: options.labels } : {}) },
      spec: { unschedulable: options.unschedulable ?? false },
      status: {
        capacity: resources,
        ...(options.capacityOnly ? {} : { allocatable: options.allocatable ?? resources }),
        conditions: readyConditions(ready),
      },
    }),
  );
}

export function network(name: string, spec: Record<string, unknown> = {}, namespace = 'default'): Network {
  return deepFreeze(
    validateObject(networkKind, {
      apiVersion,
      kind: 'Network',
      metadata: { name, namespace },
      spec: { cidr: '10.20.0.0/24', ...spec },
    }),
  );
}

export interface InstanceOptions {
  namespace?: string;
  generation?: number;
  /** Minutes after a fixed origin: orders Instances like creationTimestamp. */
  created?: number;
  status?: Record<string, unknown>;
}

let uids = 0;
const uidsByKey = new Map<string, string>();

/** The same uid for the same namespace/name throughout a run, as an Instance keeps its uid. */
function uidOf(key: string): string {
  let uid = uidsByKey.get(key);
  if (uid === undefined) {
    uid = `6f1c2f3e-0000-4000-8000-${String(++uids).padStart(12, '0')}`;
    uidsByKey.set(key, uid);
  }
  return uid;
}

export function instance(
  name: string,
  spec: Record<string, unknown> = {},
  options: InstanceOptions = {},
): Instance {
  const namespace = options.namespace ?? 'default';
  return deepFreeze(
    validateObject(instanceKind, {
      apiVersion,
      kind: 'Instance',
      metadata: {
        name,
        namespace,
        uid: uidOf(`${namespace}/${name}`),
        generation: options.generation ?? 1,
        creationTimestamp: formatTimestamp(new Date(Date.UTC(2025, 0, 1, 0, options.created ?? 0))),
      },
      spec: { kernel: { url: 'https://example.org/kernel', sha256: 'a'.repeat(64) }, ...spec },
      ...(options.status ? { status: options.status } : {}),
    }),
  );
}

/** A default world: Hosts hv1 and hv2, Ready and connected, a /24 Network lab, nothing in flight. */
export function input(
  subject: Instance,
  overrides: Partial<Omit<InstanceReconcileInput, 'instance'>> = {},
): InstanceReconcileInput {
  return {
    instance: subject,
    hosts: [host('hv1'), host('hv2')],
    networks: [network('lab')],
    instances: [subject],
    connectedAgents: new Set(['hv1', 'hv2']),
    inFlight: [],
    now,
    ...overrides,
  };
}

/**
 * The Instance as stored after the shell executed `result`: the finalizer change and the status
 * written. Validated, so every status a reconcile produces is one the API server accepts.
 */
export function stored(subject: Instance, result: InstanceReconcileResult): Instance {
  const finalizers = subject.metadata.finalizers ?? [];
  const next = {
    ...subject,
    metadata: {
      ...subject.metadata,
      finalizers:
        result.finalizer === 'add'
          ? [...finalizers, 'loam.dev/instance-protection']
          : result.finalizer === 'remove'
            ? finalizers.filter((f) => f !== 'loam.dev/instance-protection')
            : finalizers,
    },
    status: result.status ?? subject.status,
  };
  return deepFreeze(validateObject(instanceKind, JSON.parse(JSON.stringify(next))));
}

/** The same Instance with a new spec, as the API server stores an update: the next generation. */
export function updated(subject: Instance, spec: Record<string, unknown>): Instance {
  return deepFreeze(
    validateObject(instanceKind, {
      ...JSON.parse(JSON.stringify(subject)),
      metadata: { ...subject.metadata, generation: (subject.metadata.generation ?? 0) + 1 },
      spec: { ...subject.spec, ...spec },
    }),
  );
}

/** The same Instance, deleted: deletionTimestamp set, as the API server does while finalizers remain. */
export function deleted(subject: Instance): Instance {
  return deepFreeze(
    validateObject(instanceKind, {
      ...JSON.parse(JSON.stringify(subject)),
      metadata: { ...subject.metadata, deletionTimestamp: earlier },
    }),
  );
}
