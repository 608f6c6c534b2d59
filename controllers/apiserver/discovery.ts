/**
 * Discovery documents, derived from the served kinds: /version, /api, /api/v1, /apis and each
 * group and group-version, in the legacy (unaggregated) format every kubectl understands.
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
        ...(k.statusSubresource
          ? [
              {
                name: `${k.plural}/status`,
                singularName: '',
                namespaced: namespaced(k),
                kind: k.kind,
                verbs: ['get', 'patch', 'update'],
              },
            ]
          : []),
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
