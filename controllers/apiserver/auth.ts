/**
 * Who is asking, and may they. Authentication by client certificate (user = CN, groups = O, as
 * Kubernetes reads them), else by bearer token (controllers/pki/tokens.ts). Authorization: the
 * admin group may do anything; a tenant credential carries `loam:namespace:<ns>` groups and is
 * confined to those namespaces.
 */
import type { KeyObject } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { LoamError } from '../../crds/errors.js';
import { verifyToken } from '../pki/tokens.js';
import type { ResourceRequest } from './routing.js';
import { groupResource, qualifiedName } from './status.js';

export const adminGroup = 'system:masters';
/** Who may read /metrics besides admins, as in Kubernetes. */
export const monitoringGroup = 'system:monitoring';
export const tenantGroupPrefix = 'loam:namespace:';

export interface User {
  name: string;
  groups: string[];
}

/** Group every authenticated user is in, as in Kubernetes. */
const authenticatedGroup = 'system:authenticated';

/** The user a verified client certificate names, if the connection has one. */
export function certificateUser(socket: TLSSocket): User | undefined {
  const cert = socket.authorized ? socket.getPeerCertificate() : undefined;
  const cn = cert?.subject?.CN;
  if (!cert || !cn) return undefined;
  const name = Array.isArray(cn) ? (cn[0] as string) : cn;
  const o = cert.subject.O;
  const groups = o === undefined ? [] : Array.isArray(o) ? o : [o];
  return { name, groups: [...groups, authenticatedGroup] };
}

/** The user a valid `Authorization: Bearer` token names, if there is one. */
export function tokenUser(authorization: string | undefined, tokenKey: KeyObject): User | undefined {
  const bearer = /^Bearer (\S+)$/i.exec(authorization ?? '');
  const subject = bearer ? verifyToken(tokenKey, bearer[1] as string) : undefined;
  return subject ? { name: subject.user, groups: [...subject.groups, authenticatedGroup] } : undefined;
}

export function tenantNamespaces(user: User): string[] {
  return user.groups
    .filter((g) => g.startsWith(tenantGroupPrefix))
    .map((g) => g.slice(tenantGroupPrefix.length));
}

/** Throws Forbidden, worded as kube-apiserver's RBAC denial, unless `user` may make `req`. */
export function authorize(user: User, req: ResourceRequest): void {
  if (user.groups.includes(adminGroup)) return;
  const namespaces = tenantNamespaces(user);
  const { kind } = req;
  const allowed =
    kind.scope === 'Namespaced'
      ? req.namespace !== undefined && namespaces.includes(req.namespace)
      : // A tenant may read its own Namespace objects and nothing else cluster-wide.
        kind.plural === 'namespaces' &&
        kind.group === '' &&
        req.verb === 'get' &&
        namespaces.includes(req.name ?? '');
  if (allowed) return;
  const resource = req.subresource ? `${kind.plural}/${req.subresource}` : kind.plural;
  const where = req.namespace === undefined ? 'at the cluster scope' : `in the namespace "${req.namespace}"`;
  throw new LoamError(
    'Forbidden',
    `${req.name ? qualifiedName(kind, req.name) : groupResource(kind)} is forbidden: User "${user.name}" cannot ${req.verb} resource "${resource}" in API group "${kind.group}" ${where}`,
  );
}
