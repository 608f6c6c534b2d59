/**
 * Request routing, pure: turns a method and URL into what is asked of which resource, the way
 * kube-apiserver's RequestInfoResolver does.
 */
import { LoamError } from '../../crds/errors.js';
import type { ActionSubresource, ConnectSubresource, KindInfo } from '../../crds/kind.js';

export type Verb = 'get' | 'list' | 'watch' | 'create' | 'update' | 'patch' | 'delete' | 'deletecollection';

export interface ResourceRequest {
  type: 'resource';
  kind: KindInfo;
  verb: Verb;
  /** Set for namespaced requests; absent for cluster-scoped kinds and lists across all namespaces. */
  namespace?: string;
  name?: string;
  /**
   * status, a connect subresource (a GET upgraded to a WebSocket, served by server.ts) or an
   * action subresource (a PUT, served by power.ts).
   */
  subresource?: 'status' | ConnectSubresource | ActionSubresource;
}

export interface OtherRequest {
  type: 'other';
  path: string;
}

const methodVerbs: Record<string, { item?: Verb; collection?: Verb }> = {
  GET: { item: 'get', collection: 'list' },
  POST: { collection: 'create' },
  PUT: { item: 'update' },
  PATCH: { item: 'patch' },
  DELETE: { item: 'delete', collection: 'deletecollection' },
};

export function routeRequest(
  method: string,
  url: URL,
  kinds: readonly KindInfo[],
): ResourceRequest | OtherRequest {
  const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
  let group: string;
  let rest: string[];
  if (parts[0] === 'api' && parts[1] === 'v1' && parts.length > 2) {
    group = '';
    rest = parts.slice(2);
  } else if (parts[0] === 'apis' && parts.length > 3) {
    group = parts[1] as string;
    rest = parts.slice(3);
  } else {
    return { type: 'other', path: url.pathname };
  }
  const version = group === '' ? 'v1' : (parts[2] as string);
  const inGroupVersion = kinds.filter((k) => k.group === group && k.version === version);
  const find = (plural: string | undefined) => inGroupVersion.find((k) => k.plural === plural);

  let namespace: string | undefined;
  // `namespaces/<ns>/<plural>...` addresses a namespaced resource; `namespaces/<name>[/status]`
  // is the Namespace object itself.
  if (rest[0] === 'namespaces' && rest.length >= 3 && find(rest[2])?.scope === 'Namespaced') {
    namespace = rest[1];
    rest = rest.slice(2);
  }
  const [plural, name, subresource, ...extra] = rest;
  const kind = find(plural);
  if (!kind || extra.length > 0) return { type: 'other', path: url.pathname };
  const connect = kind.connectSubresources?.find((served) => served === subresource);
  const action = kind.actionSubresources?.find((served) => served === subresource);
  const special = connect ?? action;
  if (subresource !== undefined && !(subresource === 'status' && kind.statusSubresource) && !special) {
    return { type: 'other', path: url.pathname };
  }
  // A connect subresource is only ever read, as KubeVirt's console (RBAC's verb get); an action
  // is only ever put, as KubeVirt's restart (RBAC's verb update).
  const verbs = connect
    ? { item: method === 'GET' ? ('get' as const) : undefined }
    : action
      ? { item: method === 'PUT' ? ('update' as const) : undefined }
      : methodVerbs[method];
  let verb = name === undefined ? verbs?.collection : verbs?.item;
  if (!verb)
    throw new LoamError(
      'MethodNotAllowed',
      `the server does not allow this method on the requested resource`,
    );
  if (verb === 'list' && ['1', 'true'].includes(url.searchParams.get('watch') ?? '')) verb = 'watch';
  if (kind.scope === 'Cluster' && namespace !== undefined) return { type: 'other', path: url.pathname };
  const request: ResourceRequest = { type: 'resource', kind, verb };
  if (namespace !== undefined) request.namespace = namespace;
  if (name !== undefined) request.name = name;
  if (subresource === 'status' || special !== undefined) request.subresource = special ?? 'status';
  // A namespaced kind's item must be addressed inside its namespace.
  if (kind.scope === 'Namespaced' && name !== undefined && namespace === undefined) {
    return { type: 'other', path: url.pathname };
  }
  return request;
}

/** A connect subresource (an Instance's console): served only as a WebSocket. */
export function isConnectSubresource(
  route: ResourceRequest,
): route is ResourceRequest & { subresource: ConnectSubresource } {
  return route.kind.connectSubresources?.some((served) => served === route.subresource) ?? false;
}

/** An action subresource (an Instance's reboot): served only as a PUT. */
export function isActionSubresource(
  route: ResourceRequest,
): route is ResourceRequest & { subresource: ActionSubresource } {
  return route.kind.actionSubresources?.some((served) => served === route.subresource) ?? false;
}

/** The store key prefix of a kind, or of one namespace of it; every key below it is one object. */
export function storagePrefix(kind: KindInfo, namespace?: string): string {
  const base = `/registry/${kind.group || 'core'}/${kind.plural}/`;
  return namespace === undefined ? base : `${base}${namespace}/`;
}

export function storageKey(kind: KindInfo, namespace: string | undefined, name: string): string {
  return `${storagePrefix(kind, kind.scope === 'Namespaced' ? namespace : undefined)}${name}`;
}
