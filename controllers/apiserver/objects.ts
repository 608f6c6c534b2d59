/**
 * What the API server does to an object between the request and the store, pure: server-owned
 * metadata (uid, creationTimestamp, generation, resourceVersion), the status subresource split,
 * name generation, and the checks kube-apiserver makes on apiVersion, kind, name and namespace.
 */
import { randomInt, randomUUID } from 'node:crypto';
import { LoamError } from '../../crds/errors.js';
import type { KindInfo } from '../../crds/kind.js';
import { formatTimestamp } from '../../crds/meta.js';

export interface ObjectMetadata {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  deletionGracePeriodSeconds?: number;
  finalizers?: string[];
  labels?: Record<string, string>;
  [key: string]: unknown;
}

export interface ApiObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMetadata;
  [key: string]: unknown;
}

export function apiVersionOf(kind: KindInfo): string {
  return kind.group ? `${kind.group}/${kind.version}` : kind.version;
}

/** kube-apiserver's alphabet for generateName suffixes: no vowels, no look-alikes. */
const suffixAlphabet = 'bcdfghjklmnpqrstvwxz2456789';

function generatedName(prefix: string): string {
  let suffix = '';
  for (let i = 0; i < 5; i++) suffix += suffixAlphabet[randomInt(suffixAlphabet.length)];
  return prefix + suffix;
}

/** Parses a request body into an object of `kind`, filling apiVersion and kind when left out. */
export function decodeBody(kind: KindInfo, body: unknown): ApiObject {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new LoamError('BadRequest', 'the request body must be a JSON object');
  }
  const obj = structuredClone(body) as Partial<ApiObject>;
  const expected = apiVersionOf(kind);
  if (obj.apiVersion !== undefined && obj.apiVersion !== expected) {
    throw new LoamError(
      'BadRequest',
      `the API version in the data (${String(obj.apiVersion)}) does not match the expected API version (${expected})`,
    );
  }
  if (obj.kind !== undefined && obj.kind !== kind.kind) {
    throw new LoamError(
      'BadRequest',
      `the kind in the data (${String(obj.kind)}) does not match ${kind.kind}`,
    );
  }
  const metadata = obj.metadata ?? {};
  if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata)) {
    throw new LoamError('BadRequest', 'metadata must be an object');
  }
  return { ...obj, apiVersion: expected, kind: kind.kind, metadata };
}

function checkNamespace(kind: KindInfo, obj: ApiObject, namespace: string | undefined): void {
  if (kind.scope === 'Cluster') {
    delete obj.metadata.namespace;
    return;
  }
  if (obj.metadata.namespace !== undefined && obj.metadata.namespace !== namespace) {
    throw new LoamError(
      'BadRequest',
      'the namespace of the provided object does not match the namespace sent on the request',
    );
  }
  obj.metadata.namespace = namespace;
}

/** A new object as it will be stored: server-owned fields set, status dropped where it is a subresource. */
export function prepareCreate(
  kind: KindInfo,
  body: unknown,
  namespace: string | undefined,
  now: Date,
): ApiObject {
  const obj = decodeBody(kind, body);
  checkNamespace(kind, obj, namespace);
  const meta = obj.metadata;
  if (!meta.name && meta.generateName) meta.name = generatedName(meta.generateName);
  meta.uid = randomUUID();
  meta.creationTimestamp = formatTimestamp(now);
  meta.generation = 1;
  delete meta.resourceVersion;
  delete meta.deletionTimestamp;
  delete meta.deletionGracePeriodSeconds;
  if (kind.statusSubresource) delete obj.status;
  // kube-apiserver's namespace strategy: a new Namespace is Active, held on deletion until emptied.
  if (isNamespace(kind)) {
    obj.spec = { finalizers: [namespaceFinalizer] };
    obj.status = { phase: 'Active' };
  }
  return obj;
}

/**
 * The object a PUT (or patch) of the main resource stores: the caller's content with the
 * server-owned metadata and, where status is a subresource, the status of `existing`.
 * The generation moves only when the desired state changed.
 */
export function prepareUpdate(kind: KindInfo, existing: ApiObject, body: unknown, name: string): ApiObject {
  const obj = decodeBody(kind, body);
  checkNamespace(kind, obj, existing.metadata.namespace);
  const meta = obj.metadata;
  if (meta.name !== undefined && meta.name !== name) throw nameMismatch(meta.name, name);
  if (meta.uid !== undefined && meta.uid !== existing.metadata.uid) {
    throw new LoamError(
      'Conflict',
      `Precondition failed: UID in precondition: ${meta.uid}, UID in object meta: ${existing.metadata.uid}`,
    );
  }
  meta.name = name;
  for (const field of [
    'uid',
    'creationTimestamp',
    'deletionTimestamp',
    'deletionGracePeriodSeconds',
  ] as const) {
    if (existing.metadata[field] === undefined) delete meta[field];
    else meta[field] = existing.metadata[field] as never;
  }
  if (kind.statusSubresource) {
    if (existing.status === undefined) delete obj.status;
    else obj.status = existing.status;
  }
  // Only the namespace lifecycle clears a Namespace's spec.finalizers (kube's /finalize).
  if (isNamespace(kind)) obj.spec = existing.spec;
  const generation = existing.metadata.generation ?? 1;
  meta.generation = desiredState(obj) === desiredState(existing) ? generation : generation + 1;
  return obj;
}

/** A status-subresource write: only status is taken from the caller. */
export function prepareStatusUpdate(
  kind: KindInfo,
  existing: ApiObject,
  body: unknown,
  name: string,
): ApiObject {
  const obj = decodeBody(kind, body);
  if (obj.metadata.name !== undefined && obj.metadata.name !== name)
    throw nameMismatch(obj.metadata.name, name);
  const updated: ApiObject = { ...existing, metadata: { ...existing.metadata } };
  if (obj.status === undefined) delete updated.status;
  else updated.status = obj.status;
  return updated;
}

/** Everything but metadata and status, canonically: what `generation` tracks. */
function desiredState(obj: ApiObject): string {
  const { metadata: _m, status: _s, ...rest } = obj;
  return canonicalJson(rest);
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export function nameMismatch(bodyName: string | undefined, urlName: string | undefined): LoamError {
  return new LoamError(
    'BadRequest',
    `the name of the object (${bodyName}) does not match the name on the URL (${urlName})`,
  );
}

/** The finalizer kube-apiserver puts in every Namespace's spec: its content must go first. */
export const namespaceFinalizer = 'kubernetes';

function isNamespace(kind: KindInfo): boolean {
  return kind.group === '' && kind.plural === 'namespaces';
}

/** Whether something still holds a deleted object: metadata.finalizers, or a Namespace's spec.finalizers. */
export function finalizersPending(kind: KindInfo, obj: ApiObject): boolean {
  const spec = obj.spec as { finalizers?: string[] } | undefined;
  return (
    (obj.metadata.finalizers?.length ?? 0) > 0 || (isNamespace(kind) && (spec?.finalizers?.length ?? 0) > 0)
  );
}

/** The resourceVersion a client sends back for compare-and-swap, if any. */
export function expectedRevision(obj: ApiObject): number | undefined {
  const rv = obj.metadata.resourceVersion;
  if (rv === undefined || rv === '') return undefined;
  const revision = Number(rv);
  if (!Number.isSafeInteger(revision) || revision < 1) {
    throw new LoamError('BadRequest', `metadata.resourceVersion: invalid value ${JSON.stringify(rv)}`);
  }
  return revision;
}
