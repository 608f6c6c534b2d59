/**
 * Discovery documents, derived from the served kinds: /version, /api, /api/v1, /apis and each
 * group and group-version, in the legacy format every kubectl understands, and /api and /apis also
 * in the aggregated format (apidiscovery.k8s.io v2 and v2beta1) that kubectl 1.26+ asks for first.
 */
import type { KindInfo } from '../../crds/kind.js';
import { reviewResources } from './reviews.js';

const kubernetesVersion = { major: '1', minor: '30' };

function groupVersions(kinds: readonly KindInfo[]): Map<string, Set<string>> {
  const groups = new Map<string, Set<string>>();
  for (const k of [...kinds, ...reviewResources]) {
    if (!k.group) continue;
    if (!groups.has(k.group)) groups.set(k.group, new Set());
    groups.get(k.group)?.add(k.version);
  }
  return groups;
}

function groupDocument(name: string, versions: Set<string>) {
  const list = [...versions].map((version) => ({ groupVersion: `${name}/${version}`, version }));
  return { name, versions: list, preferredVersion: list[0] };
}

function resourceList(groupVersion: string, kinds: readonly KindInfo[]) {
  const namespaced = (k: KindInfo) => k.scope === 'Namespaced';
  const subresourceEntry = (k: KindInfo, subresource: string, verbs: string[]) => ({
    name: `${k.plural}/${subresource}`,
    singularName: '',
    namespaced: namespaced(k),
    kind: k.kind,
    verbs,
  });
  const reviews = reviewResources
    .filter((r) => `${r.group}/${r.version}` === groupVersion)
    .map((r) => ({ name: r.plural, singularName: '', namespaced: false, kind: r.kind, verbs: ['create'] }));
  return {
    kind: 'APIResourceList',
    apiVersion: 'v1',
    groupVersion,
    resources: kinds
      .flatMap((k) => [
        {
          name: k.plural,
          singularName: k.singular,
          namespaced: namespaced(k),
          kind: k.kind,
          verbs: ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'],
          ...(k.shortNames.length > 0 ? { shortNames: k.shortNames } : {}),
          ...(k.categories.length > 0 ? { categories: k.categories } : {}),
        },
        ...(k.statusSubresource ? [subresourceEntry(k, 'status', ['get', 'patch', 'update'])] : []),
        // As kube lists pods/log: the parent's kind, read only.
        ...(k.connectSubresources ?? []).map((subresource) => subresourceEntry(k, subresource, ['get'])),
        // As KubeVirt lists virtualmachines/restart: put only.
        ...(k.actionSubresources ?? []).map((subresource) => subresourceEntry(k, subresource, ['update'])),
      ])
      .concat(reviews),
  };
}

/** The discovery document at `path`, or undefined when there is none. */
export function discoveryDocument(path: string, kinds: readonly KindInfo[]): unknown {
  const trimmed = path.replace(/\/+$/, '') || '/';
  const groups = groupVersions(kinds);
  if (trimmed === '/version') {
    return {
      ...kubernetesVersion,
      gitVersion: `v${kubernetesVersion.major}.${kubernetesVersion.minor}.0-loam`,
      gitCommit: '',
      gitTreeState: 'clean',
      buildDate: '',
      goVersion: '',
      compiler: 'node',
      platform: `${process.platform}/${process.arch}`,
    };
  }
  if (trimmed === '/api') return { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [] };
  if (trimmed === '/api/v1')
    return resourceList(
      'v1',
      kinds.filter((k) => k.group === ''),
    );
  if (trimmed === '/apis') {
    return {
      kind: 'APIGroupList',
      apiVersion: 'v1',
      groups: [...groups].map(([name, versions]) => groupDocument(name, versions)),
    };
  }
  const match = /^\/apis\/([^/]+)(?:\/([^/]+))?$/.exec(trimmed);
  if (!match) return undefined;
  const [, group, version] = match as unknown as [string, string, string | undefined];
  const versions = groups.get(group);
  if (!versions) return undefined;
  if (version === undefined) return { kind: 'APIGroup', apiVersion: 'v1', ...groupDocument(group, versions) };
  if (!versions.has(version)) return undefined;
  return resourceList(
    `${group}/${version}`,
    kinds.filter((k) => k.group === group && k.version === version),
  );
}

/** The aggregated discovery versions kubectl asks for: v2 (1.30+) and v2beta1 (1.26–1.32). */
export type AggregatedDiscoveryVersion = 'v2' | 'v2beta1';

/**
 * The aggregated discovery version an Accept header asks for first, if any (kubectl sends
 * `application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList, ..., application/json`).
 */
export function wantsAggregatedDiscovery(accept: string | undefined): AggregatedDiscoveryVersion | undefined {
  for (const mediaType of (accept ?? '').split(',')) {
    const params = new Map(
      mediaType
        .split(';')
        .slice(1)
        .map((p) => p.trim().split('=') as [string, string]),
    );
    const version = params.get('v');
    if (
      params.get('g') === 'apidiscovery.k8s.io' &&
      params.get('as') === 'APIGroupDiscoveryList' &&
      (version === 'v2' || version === 'v2beta1')
    ) {
      return version;
    }
  }
  return undefined;
}

export function aggregatedDiscoveryContentType(version: AggregatedDiscoveryVersion): string {
  return `application/json;g=apidiscovery.k8s.io;v=${version};as=APIGroupDiscoveryList`;
}

/**
 * /api or /apis in the aggregated format: every group with its versions and resources in one
 * document, so kubectl needs one request instead of one per group-version. Built from the same
 * resource lists as the legacy documents.
 */
export function aggregatedDiscovery(
  path: string,
  kinds: readonly KindInfo[],
  version: AggregatedDiscoveryVersion,
): unknown {
  const trimmed = path.replace(/\/+$/, '');
  if (trimmed !== '/api' && trimmed !== '/apis') return undefined;
  const groups: [string, string[]][] =
    trimmed === '/api'
      ? [['', ['v1']]]
      : [...groupVersions(kinds)].map(([name, versions]) => [name, [...versions]]);
  return {
    kind: 'APIGroupDiscoveryList',
    apiVersion: `apidiscovery.k8s.io/${version}`,
    metadata: {},
    items: groups.map(([group, versions]) => ({
      metadata: { name: group, creationTimestamp: null },
      versions: versions.map((v) => ({
        version: v,
        resources: aggregatedResources(group, v, kinds),
        freshness: 'Current',
      })),
    })),
  };
}

function aggregatedResources(group: string, version: string, kinds: readonly KindInfo[]) {
  const list = resourceList(
    group ? `${group}/${version}` : version,
    kinds.filter((k) => k.group === group && k.version === version),
  );
  const responseKind = (kind: string) => ({ group, version, kind });
  const parents = list.resources.filter((r) => !r.name.includes('/'));
  return parents.map((r) => ({
    resource: r.name,
    responseKind: responseKind(r.kind),
    scope: r.namespaced ? 'Namespaced' : 'Cluster',
    singularResource: r.singularName || r.kind.toLowerCase(),
    verbs: r.verbs,
    ...('shortNames' in r && r.shortNames ? { shortNames: r.shortNames } : {}),
    ...('categories' in r && r.categories ? { categories: r.categories } : {}),
    subresources: list.resources
      .filter((s) => s.name.startsWith(`${r.name}/`))
      .map((s) => ({
        subresource: s.name.slice(r.name.length + 1),
        responseKind: responseKind(s.kind),
        verbs: s.verbs,
      })),
  }));
}
