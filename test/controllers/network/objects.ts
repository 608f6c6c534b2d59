/** Valid, defaulted API objects for network tests, built through the real schemas. */
import {
  apiVersion,
  type Instance,
  instanceKind,
  type Network,
  networkKind,
  type Router,
  routerKind,
  type WireGuardPeer,
  wireguardPeerKind,
} from '../../../crds/v1alpha1/index.js';
import { validateObject } from '../../../crds/validate.js';

export const publicKeys = [
  'VERkZPUtIlMn81ky2RaB1tWypMiXNzaC7rhu0D+Hrx0=',
  'xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=',
  'TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=',
];

/** Object metadata for a namespaced test object; `created` orders objects like creationTimestamp. */
function meta(name: string, namespace: string, created?: number, uid?: string) {
  return {
    name,
    namespace,
    ...(created === undefined
      ? {}
      : { creationTimestamp: new Date(Date.UTC(2025, 0, 1, 0, created)).toISOString() }),
    ...(uid === undefined ? {} : { uid }),
  };
}

export interface Extra {
  namespace?: string;
  created?: number;
  uid?: string;
  status?: Record<string, unknown>;
}

export function network(name: string, spec: Record<string, unknown>, extra: Extra = {}): Network {
  return validateObject(networkKind, {
    apiVersion,
    kind: 'Network',
    metadata: meta(name, extra.namespace ?? 'default', extra.created, extra.uid),
    spec,
    ...(extra.status ? { status: extra.status } : {}),
  });
}

export function router(spec: Record<string, unknown> = {}, name = 'edge-1'): Router {
  return validateObject(routerKind, {
    apiVersion,
    kind: 'Router',
    metadata: { name },
    spec: { driver: 'linux', ...spec },
  });
}

export function instance(name: string, networks: Record<string, unknown>[], extra: Extra = {}): Instance {
  return validateObject(instanceKind, {
    apiVersion,
    kind: 'Instance',
    metadata: meta(name, extra.namespace ?? 'default', extra.created, extra.uid),
    spec: { kernel: { url: 'https://example.org/kernel', sha256: 'a'.repeat(64) }, networks },
    ...(extra.status ? { status: extra.status } : {}),
  });
}

export function peer(name: string, spec: Record<string, unknown>, extra: Extra = {}): WireGuardPeer {
  return validateObject(wireguardPeerKind, {
    apiVersion,
    kind: 'WireGuardPeer',
    metadata: meta(name, extra.namespace ?? 'default', extra.created, extra.uid),
    spec,
    ...(extra.status ? { status: extra.status } : {}),
  });
}
