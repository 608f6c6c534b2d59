/** The loam.dev/v1alpha1 API: every kind, and lookups the API server and generators use. */

import type { KindInfo } from '../kind.js';
import { hostKind } from './host.js';
import { instanceKind } from './instance.js';
import { networkKind } from './network.js';
import { routerKind } from './router.js';
import { wireguardPeerKind } from './wireguardpeer.js';

export { apiVersion, group, version } from './common.js';
export * from './host.js';
export * from './instance.js';
export * from './network.js';
export * from './router.js';
export * from './wireguardpeer.js';

export const kinds: readonly KindInfo[] = [
  instanceKind,
  networkKind,
  wireguardPeerKind,
  hostKind,
  routerKind,
];

const kindsByKind = new Map(kinds.map((info) => [info.kind, info]));
const kindsByPlural = new Map(kinds.map((info) => [info.plural, info]));

/** The kind named `kind` ("Network"), or undefined. */
export function kindByName(kind: string): KindInfo | undefined {
  return kindsByKind.get(kind);
}

/** The kind whose resource is `plural` ("networks"), as in a request path; or undefined. */
export function kindByPlural(plural: string): KindInfo | undefined {
  return kindsByPlural.get(plural);
}
