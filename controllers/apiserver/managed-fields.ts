/**
 * Server-side apply and metadata.managedFields, as kube-apiserver does them (its fieldmanager on top
 * of sigs.k8s.io/structured-merge-diff), pure: which manager owns which field, how an apply
 * configuration merges into the live object, what it removes, and when it conflicts.
 *
 * Ownership is per field path, typed by the kind's schema: structs and granular maps are owned field
 * by field, list-maps item by item (by key), sets value by value, and anything atomic (scalars,
 * atomic lists and maps, fields the schema does not declare) as a whole.
 */
import { type JsonSchema, structuralSchema } from '../../crds/crd.js';
import { type ErrorCause, LoamError } from '../../crds/errors.js';
import type { KindInfo } from '../../crds/kind.js';
import { formatTimestamp } from '../../crds/meta.js';
import { type ApiObject, apiVersionOf } from './objects.js';

export interface ManagedFieldsEntry {
  manager: string;
  operation: 'Apply' | 'Update';
  apiVersion: string;
  time: string;
  fieldsType: 'FieldsV1';
  fieldsV1: Record<string, unknown>;
  subresource?: string;
}

export interface FieldManagerOptions {
  manager: string;
  subresource?: 'status';
  now: Date;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) {
    return Array.isArray(b) && a.length === b.length && a.every((v, i) => deepEqual(v, b[i]));
  }
  if (!isObject(a) || !isObject(b)) return false;
  const keys = Object.keys(a);
  return (
    keys.length === Object.keys(b).length && keys.every((k) => Object.hasOwn(b, k) && deepEqual(a[k], b[k]))
  );
}

const compareStrings = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

// --- Field sets ----------------------------------------------------------------------------------

/**
 * A set of field paths, as a tree keyed by serialized path elements: `f:<field>` for a struct field
 * or map key, `k:<key fields as JSON>` for a list-map item, `v:<JSON value>` for a set item, `i:<n>`
 * for a list index.
 */
export interface FieldSet {
  /** Whether the path ending here is itself in the set (FieldsV1 writes `{}`, or `".": {}` beside children). */
  member: boolean;
  children: Map<string, FieldSet>;
}

const emptySet = (): FieldSet => ({ member: false, children: new Map() });
const isEmpty = (set: FieldSet) => !set.member && set.children.size === 0;

function insert(set: FieldSet, path: readonly string[]): void {
  if (path.length === 0) return;
  let node = set;
  for (const pe of path) {
    let child = node.children.get(pe);
    if (!child) {
      child = emptySet();
      node.children.set(pe, child);
    }
    node = child;
  }
  node.member = true;
}

/** A new set holding each path for which `keep(in a, in b)` holds. */
function combine(
  a: FieldSet | undefined,
  b: FieldSet | undefined,
  keep: (inA: boolean, inB: boolean) => boolean,
): FieldSet {
  const out: FieldSet = { member: keep(a?.member ?? false, b?.member ?? false), children: new Map() };
  for (const pe of new Set([...(a?.children.keys() ?? []), ...(b?.children.keys() ?? [])])) {
    const child = combine(a?.children.get(pe), b?.children.get(pe), keep);
    if (!isEmpty(child)) out.children.set(pe, child);
  }
  return out;
}

const union = (a: FieldSet, b: FieldSet) => combine(a, b, (x, y) => x || y);
const difference = (a: FieldSet, b: FieldSet) => combine(a, b, (x, y) => x && !y);
const intersection = (a: FieldSet, b: FieldSet) => combine(a, b, (x, y) => x && y);

/** JSON as Go's encoding/json writes it (HTML characters and line separators escaped): FieldsV1 keys use it. */
function goJson(value: unknown): string {
  return JSON.stringify(value).replace(
    /[<>&\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/** The `k:` body for an item: its key fields, sorted by name. */
function keyJson(item: Record<string, unknown>, keys: readonly string[]): string {
  const present = [...keys].sort().filter((key) => Object.hasOwn(item, key) && item[key] !== undefined);
  return goJson(Object.fromEntries(present.map((key) => [key, item[key]])));
}

// As structured-merge-diff orders values: numbers, strings, booleans, then the rest; lists item by item.
const typeRanks: Record<string, number> = { number: 0, string: 1, boolean: 2 };

function compareValues(a: unknown, b: unknown): number {
  if (Array.isArray(a) && Array.isArray(b)) {
    for (const [i, item] of a.entries()) {
      const order = i < b.length ? compareValues(item, b[i]) : 1;
      if (order !== 0) return order;
    }
    return a.length - b.length;
  }
  const rank = (v: unknown) => typeRanks[typeof v] ?? 3;
  if (rank(a) !== rank(b)) return rank(a) - rank(b);
  if (typeof a === 'number' || typeof a === 'boolean') return Number(a) - Number(b);
  return compareStrings(typeof a === 'string' ? a : goJson(a), typeof b === 'string' ? b : goJson(b));
}

// Path elements go by kind (fields, keys, values, indexes), then by content; key fields as
// [name, value, name, value...], names sorted.
function comparePathElements(a: string, b: string): number {
  const kinds = 'fkvi';
  if (a.charAt(0) !== b.charAt(0)) return kinds.indexOf(a.charAt(0)) - kinds.indexOf(b.charAt(0));
  const content = (pe: string): unknown => {
    const body = pe.slice(2);
    if (pe.startsWith('f:')) return body;
    if (pe.startsWith('i:')) return Number(body);
    return pe.startsWith('k:') ? Object.entries(JSON.parse(body)).flat() : JSON.parse(body);
  };
  return compareValues(content(a), content(b));
}

const sortedChildren = (set: FieldSet) => [...set.children].sort(([a], [b]) => comparePathElements(a, b));

/** A path element as kube prints it in conflicts: `.name`, `[name="lan"]`, `[="x"]`, `[0]`. */
function describePathElement(pe: string): string {
  const body = pe.slice(2);
  switch (pe.charAt(0)) {
    case 'f':
      return `.${body}`;
    case 'k':
      return `[${Object.entries(JSON.parse(body))
        .map(([name, value]) => `${name}=${JSON.stringify(value)}`)
        .join(',')}]`;
    case 'v':
      return `[=${JSON.stringify(JSON.parse(body))}]`;
    default:
      return `[${body}]`;
  }
}

/** The paths in `set` as kube prints them (`.spec.networks[name="lan"].address`), in its order. */
export function fieldPaths(set: FieldSet, prefix = ''): string[] {
  const children = sortedChildren(set);
  return [
    ...children.filter(([, child]) => child.member).map(([pe]) => prefix + describePathElement(pe)),
    ...children.flatMap(([pe, child]) => fieldPaths(child, prefix + describePathElement(pe))),
  ];
}

/** FieldsV1 exactly as kube writes it: keys in structured-merge-diff's order, `"."` first. */
export function encodeFieldsV1(set: FieldSet): Record<string, unknown> {
  return Object.fromEntries(
    sortedChildren(set).map(([pe, child]) => {
      const grandchildren = encodeFieldsV1(child);
      return [pe, child.member && child.children.size > 0 ? { '.': {}, ...grandchildren } : grandchildren];
    }),
  );
}

/** Reads FieldsV1, normalizing `k:` and `v:` keys so equal paths compare equal. Throws when malformed. */
export function decodeFieldsV1(fieldsV1: unknown): FieldSet {
  const set = decodeNode(fieldsV1);
  set.member = false;
  return set;
}

function decodeNode(node: unknown): FieldSet {
  if (!isObject(node)) throw new Error('a FieldsV1 node must be an object');
  const set = emptySet();
  for (const [key, child] of Object.entries(node)) {
    if (key === '.') {
      set.member = true;
      continue;
    }
    const pe = canonicalPathElement(key);
    if (pe === undefined) continue;
    const decoded = decodeNode(child);
    // A node without children can only be there for itself.
    if (decoded.children.size === 0) decoded.member = true;
    set.children.set(pe, decoded);
  }
  return set;
}

function canonicalPathElement(key: string): string | undefined {
  const body = key.slice(2);
  switch (key.slice(0, 2)) {
    case 'f:':
      return key;
    case 'k:': {
      const fields = JSON.parse(body);
      if (!isObject(fields)) throw new Error(`${key}: the key fields must be an object`);
      return `k:${keyJson(fields, Object.keys(fields))}`;
    }
    case 'v:':
      return `v:${goJson(JSON.parse(body))}`;
    case 'i:':
      if (!/^(0|[1-9]\d*)$/.test(body)) throw new Error(`${key}: not a list index`);
      return key;
    default:
      return undefined; // a kind of path element from a later version: dropped, as structured-merge-diff does
  }
}

// --- Type tree -----------------------------------------------------------------------------------

type TypeNode =
  /** A scalar, an atomic list or map, or a value the schema does not describe: owned and replaced whole. */
  | { kind: 'leaf' }
  /** Never owned, never merged: server-owned metadata, and the other side of a status subresource. */
  | { kind: 'ignored' }
  | { kind: 'struct'; fields: ReadonlyMap<string, TypeNode>; others?: TypeNode }
  /** A granular map: each key owned on its own. */
  | { kind: 'map'; values: TypeNode }
  /** x-kubernetes-list-type: set, of scalars. */
  | { kind: 'set' }
  /** x-kubernetes-list-type: map, items identified by their key fields. */
  | { kind: 'listMap'; keys: readonly string[]; items: TypeNode };

type StructType = Extract<TypeNode, { kind: 'struct' }>;

const leaf: TypeNode = { kind: 'leaf' };
const ignored: TypeNode = { kind: 'ignored' };
const struct = (fields: Record<string, TypeNode>): StructType => ({
  kind: 'struct',
  fields: new Map(Object.entries(fields)),
});

/** Metadata that names the object or that the server owns: never owned by a manager. */
const serverOwnedMetadata = (
  'name namespace uid resourceVersion generation creationTimestamp ' +
  'deletionTimestamp deletionGracePeriodSeconds managedFields selfLink'
).split(' ');

/** ObjectMeta typed as Kubernetes types it (CRD schemas leave metadata a bare object). */
const metadataType = struct({
  ...Object.fromEntries(serverOwnedMetadata.map((field) => [field, ignored])),
  labels: { kind: 'map', values: leaf },
  annotations: { kind: 'map', values: leaf },
  finalizers: { kind: 'set' },
  ownerReferences: { kind: 'listMap', keys: ['uid'], items: struct({}) },
});

function typeOf(schema: JsonSchema): TypeNode {
  if (schema.type === 'array') {
    const listType = schema['x-kubernetes-list-type'];
    if (listType === 'set') return { kind: 'set' };
    if (listType !== 'map') return leaf;
    const keys = schema['x-kubernetes-list-map-keys'] as string[];
    return { kind: 'listMap', keys, items: typeOf((schema.items ?? {}) as JsonSchema) };
  }
  if (schema.type !== 'object' || schema['x-kubernetes-map-type'] === 'atomic') return leaf;
  if (isObject(schema.properties)) {
    return struct(
      Object.fromEntries(
        Object.entries(schema.properties).map(([name, field]) => [name, typeOf(field as JsonSchema)]),
      ),
    );
  }
  if (isObject(schema.additionalProperties))
    return { kind: 'map', values: typeOf(schema.additionalProperties) };
  return leaf;
}

/** Per kind: what a write to the main resource, and one to /status, may own. */
const typesByKind = new WeakMap<KindInfo, { main: StructType; status: StructType }>();

function typesOf(kind: KindInfo) {
  let types = typesByKind.get(kind);
  if (!types) {
    const root = typeOf(structuralSchema(kind));
    const fields = new Map(root.kind === 'struct' ? root.fields : []);
    const status = fields.get('status') ?? leaf;
    fields.set('apiVersion', ignored).set('kind', ignored).set('metadata', metadataType);
    // With a status subresource each side owns only its part (kube's reset fields): the main
    // resource never status, /status nothing but status.
    if (kind.statusSubresource) fields.set('status', ignored);
    types = {
      main: { kind: 'struct', fields },
      status: { kind: 'struct', fields: new Map([['status', status]]), others: ignored },
    };
    typesByKind.set(kind, types);
  }
  return types;
}

const trackedType = (kind: KindInfo, subresource: string | undefined) =>
  subresource === 'status' ? typesOf(kind).status : typesOf(kind).main;

// --- Values under a type -------------------------------------------------------------------------

type Child = { pe: string; value: unknown };

/** The children of `value` by path element; undefined for a leaf, or a value not shaped like its type. */
function childrenOf(value: unknown, type: TypeNode): Child[] | undefined {
  switch (type.kind) {
    case 'struct':
    case 'map':
      if (!isObject(value)) return undefined;
      return Object.entries(value)
        .filter(([, child]) => child !== undefined)
        .map(([key, child]) => ({ pe: `f:${key}`, value: child }));
    case 'set':
      return Array.isArray(value)
        ? value.map((item) => ({ pe: `v:${goJson(item)}`, value: item }))
        : undefined;
    case 'listMap':
      return Array.isArray(value)
        ? value.map((item) => ({ pe: `k:${keyJson(isObject(item) ? item : {}, type.keys)}`, value: item }))
        : undefined;
    default:
      return undefined;
  }
}

function childType(type: TypeNode, pe: string): TypeNode {
  switch (type.kind) {
    case 'struct':
      return type.fields.get(pe.slice(2)) ?? type.others ?? leaf;
    case 'map':
      return type.values;
    case 'listMap':
      return type.items;
    default:
      return leaf;
  }
}

/** Children by path element; a repeated item counts once, as its first occurrence. */
function byPathElement(children: readonly Child[]): Map<string, unknown> {
  const out = new Map<string, unknown>();
  for (const { pe, value } of children) if (!out.has(pe)) out.set(pe, value);
  return out;
}

/** A value shaped like `like` (an object, or a list) holding the `children` that have a value. */
function assemble(like: unknown, children: readonly Child[]): unknown {
  const present = children.filter((child) => child.value !== undefined);
  if (Array.isArray(like)) return present.map((child) => child.value);
  return Object.fromEntries(present.map((child) => [child.pe.slice(2), child.value]));
}

/** Whether the value holds fields nobody owns (metadata): then it is never removed whole. */
const holdsIgnored = (type: TypeNode) =>
  type.kind === 'struct' && [...type.fields.values()].some((field) => field.kind === 'ignored');

// --- The three walks: fields of a configuration, differences, merge and removal --------------------

/** The fields an apply configuration sets. Rejects list-map items without their keys and repeated items. */
function collectFields(value: unknown, type: TypeNode, path: string[], into: FieldSet): void {
  if (type.kind === 'ignored') return;
  const children = childrenOf(value, type);
  if (children === undefined) {
    insert(into, path);
    return;
  }
  const bad = (problem: string) =>
    new LoamError('BadRequest', `${path.map(describePathElement).join('')}: ${problem}`);
  const seen = new Set<string>();
  for (const [index, child] of children.entries()) {
    const item = isObject(child.value) ? child.value : {};
    const missing = type.kind === 'listMap' && type.keys.find((key) => item[key] === undefined);
    if (missing)
      throw bad(
        `element ${index}: associative list with keys has an element that omits key field "${missing}"`,
      );
    if (seen.has(child.pe)) throw bad(`duplicate entries for key ${describePathElement(child.pe)}`);
    seen.add(child.pe);
    const childPath = [...path, child.pe];
    collectFields(child.value, childType(type, child.pe), childPath, into);
    // Map entries and list items are owned themselves; struct fields only through what they hold.
    if (type.kind !== 'struct') insert(into, childPath);
  }
}

type Diff = { added: FieldSet; modified: FieldSet; removed: FieldSet };

function compare(lhs: unknown, rhs: unknown, type: TypeNode, path: string[], diff: Diff): void {
  if (type.kind === 'ignored' || (lhs === undefined && rhs === undefined)) return;
  const left = lhs === undefined ? [] : childrenOf(lhs, type);
  const right = rhs === undefined ? [] : childrenOf(rhs, type);
  if (left === undefined || right === undefined || (left.length === 0 && right.length === 0)) {
    // A leaf, or an empty map or list (compared whole to keep empty apart from absent).
    if (lhs === undefined) insert(diff.added, path);
    else if (rhs === undefined) insert(diff.removed, path);
    else if (!deepEqual(lhs, rhs)) insert(diff.modified, path);
    return;
  }
  const [l, r] = [byPathElement(left), byPathElement(right)];
  for (const pe of new Set([...l.keys(), ...r.keys()])) {
    compare(l.get(pe), r.get(pe), childType(type, pe), [...path, pe], diff);
  }
  // A struct, map or item that appears or goes is itself added or removed.
  if (lhs === undefined) insert(diff.added, path);
  else if (rhs === undefined) insert(diff.removed, path);
}

const metadataItself = emptySet();
insert(metadataItself, ['f:metadata']);

/** The fields `next` adds, changes and removes relative to `live` (undefined: no object yet). */
function diffObjects(live: unknown, next: unknown, type: TypeNode): Diff {
  const diff: Diff = { added: emptySet(), modified: emptySet(), removed: emptySet() };
  compare(live, next, type, [], diff);
  // Only fields in metadata are owned, never metadata itself (kube's StripMeta).
  return {
    ...diff,
    added: difference(diff.added, metadataItself),
    removed: difference(diff.removed, metadataItself),
  };
}

/**
 * The order of a merged list, as structured-merge-diff merges: the configuration's order for its
 * items, live-only items kept where they were relative to the items both have.
 */
function mergedOrder(live: readonly string[], config: readonly string[]): string[] {
  const inLive = new Set(live);
  const inConfig = new Set(config);
  const shared = config.filter((pe) => inLive.has(pe));
  const out: string[] = [];
  let next = 0;
  let l = 0;
  const takeLiveOnly = () => {
    for (; l < live.length && live[l] !== shared[next]; l++) {
      const pe = live[l] as string;
      if (!inConfig.has(pe)) out.push(pe);
    }
  };
  for (const pe of config) {
    takeLiveOnly();
    out.push(pe);
    if (pe === shared[next]) {
      next++;
      l++;
    }
  }
  takeLiveOnly();
  return out;
}

/** `live` with `config` merged in: structs and granular maps by field, list-maps by key, sets by value. */
function merge(live: unknown, config: unknown, type: TypeNode): unknown {
  if (config === undefined || type.kind === 'ignored') return live;
  if (live === undefined) return config;
  const liveChildren = childrenOf(live, type);
  const configChildren = childrenOf(config, type);
  if (liveChildren === undefined || configChildren === undefined) return config;
  const [l, c] = [byPathElement(liveChildren), byPathElement(configChildren)];
  const order = Array.isArray(live)
    ? mergedOrder([...l.keys()], [...c.keys()])
    : [...new Set([...l.keys(), ...c.keys()])];
  return assemble(
    live,
    order.map((pe) => ({ pe, value: merge(l.get(pe), c.get(pe), childType(type, pe)) })),
  );
}

/**
 * `value` without what the applier owned last time and nobody owns now (`owned` includes its new
 * configuration). A struct field counts as owned when anything under it is, so a struct left with
 * no owned field goes whole; a list or map item must be owned itself.
 */
function prune(value: unknown, type: TypeNode, last: FieldSet, owned: FieldSet | undefined): unknown {
  const children = childrenOf(value, type);
  if (children === undefined) return value;
  const ownsItself = (node: FieldSet | undefined) =>
    node !== undefined && (node.member || (type.kind === 'struct' && node.children.size > 0));
  const kept: Child[] = [];
  for (const child of children) {
    const fieldType = childType(type, child.pe);
    const lastChild = last.children.get(child.pe);
    if (fieldType.kind === 'ignored' || lastChild === undefined) {
      kept.push(child);
      continue;
    }
    const ownedChild = owned?.children.get(child.pe);
    if (ownsItself(lastChild) && !ownsItself(ownedChild) && !holdsIgnored(fieldType)) continue; // removed
    kept.push({ pe: child.pe, value: prune(child.value, fieldType, lastChild, ownedChild) });
  }
  return assemble(value, kept);
}

// --- managedFields entries -----------------------------------------------------------------------

/** A managedFields entry with its fields decoded. */
type Entry = Omit<ManagedFieldsEntry, 'fieldsType' | 'fieldsV1'> & { fields: FieldSet };

function isEntry(entry: unknown): entry is Omit<ManagedFieldsEntry, 'fieldsV1'> & { fieldsV1?: unknown } {
  if (!isObject(entry)) return false;
  const { manager, operation, apiVersion, time, fieldsType, subresource = '' } = entry;
  return (
    [manager, apiVersion, time, subresource].every((field) => typeof field === 'string') &&
    apiVersion !== '' &&
    (operation === 'Apply' || operation === 'Update') &&
    fieldsType === 'FieldsV1'
  );
}

/** The entries in `managedFields`, or undefined when it is not a list of well-formed entries. */
function decodeEntries(managedFields: unknown): Entry[] | undefined {
  if (!Array.isArray(managedFields) || !managedFields.every(isEntry)) return undefined;
  try {
    return managedFields.map(({ manager, operation, apiVersion, time, subresource, fieldsV1 }) => {
      return { manager, operation, apiVersion, time, subresource, fields: decodeFieldsV1(fieldsV1 ?? {}) };
    });
  } catch {
    return undefined; // malformed FieldsV1
  }
}

function encodeEntry(entry: Entry): ManagedFieldsEntry {
  return {
    manager: entry.manager,
    operation: entry.operation,
    apiVersion: entry.apiVersion,
    time: entry.time,
    fieldsType: 'FieldsV1',
    fieldsV1: encodeFieldsV1(entry.fields),
    ...(entry.subresource ? { subresource: entry.subresource } : {}),
  };
}

const isEntryOf = (entry: Entry, manager: string, operation: Entry['operation'], subresource?: string) =>
  entry.manager === manager &&
  entry.operation === operation &&
  (entry.subresource ?? '') === (subresource ?? '');

/** `entry` no longer owning what another write took over or removed. */
const disowning = (entry: Entry, { added, modified, removed }: Diff): Entry => ({
  ...entry,
  fields: difference(entry.fields, union(union(added, modified), removed)),
});

/** `obj` with `entries` (those owning anything) as its managedFields. */
function withManagedFields(obj: ApiObject, entries: readonly Entry[]): ApiObject {
  const { managedFields: _replaced, ...metadata } = obj.metadata;
  const kept = entries.filter((entry) => !isEmpty(entry.fields));
  return {
    ...obj,
    metadata: kept.length > 0 ? { ...metadata, managedFields: kept.map(encodeEntry) } : metadata,
  };
}

/**
 * The entries an update starts from: the caller's when it sends its own (kubectl rewrites them to
 * move client-side apply ownership to server-side apply), none when it sends `[{}]`, live's
 * otherwise (an empty list too, so clients unaware of the field cannot drop it). Writes to a
 * subresource cannot change them.
 */
function startingEntries(live: ApiObject | undefined, next: ApiObject, subresource?: string): Entry[] {
  const fromLive = () => decodeEntries(live?.metadata.managedFields) ?? [];
  const requested = next.metadata.managedFields;
  if (subresource !== undefined) return fromLive();
  const [first, ...rest] = Array.isArray(requested) ? requested : [];
  if (rest.length === 0 && isObject(first) && Object.keys(first).length === 0) return [];
  const own = decodeEntries(requested);
  return own !== undefined && own.length > 0 ? own : fromLive();
}

/** Records a non-apply write (create, update, merge/json patch, status write) by `manager`: returns `next` with managedFields updated. */
export function trackUpdate(
  kind: KindInfo,
  live: ApiObject | undefined,
  next: ApiObject,
  options: FieldManagerOptions,
): ApiObject {
  const entries = startingEntries(live, next, options.subresource);
  // As in kube, updates never start tracking an existing object: one without entries (or whose
  // entries a client just cleared) stays untracked until something applies to it.
  if (live !== undefined && entries.length === 0) return withManagedFields(next, []);
  const { manager, subresource } = options;
  const diff = diffObjects(live, next, trackedType(kind, subresource));
  const changed = union(diff.added, diff.modified);
  const updated = entries.map((entry) => disowning(entry, diff));
  if (isEmpty(changed)) return withManagedFields(next, updated);
  // The writer's entry takes what it changed; its time says when it last changed something.
  const time = formatTimestamp(options.now);
  const own = updated.find((entry) => isEntryOf(entry, manager, 'Update', subresource));
  if (own) {
    Object.assign(own, { apiVersion: next.apiVersion, time, fields: union(own.fields, changed) });
  } else {
    updated.push({
      manager,
      operation: 'Update',
      apiVersion: next.apiVersion,
      time,
      subresource,
      fields: changed,
    });
  }
  return withManagedFields(next, updated);
}

// --- Apply ---------------------------------------------------------------------------------------

/** An apply configuration's `null` means "not specified": it neither sets nor owns the field. */
function withoutNulls(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutNulls);
  if (!isObject(value)) return value;
  return Object.fromEntries(
    Object.entries(value)
      .filter(([, child]) => child !== null)
      .map(([key, child]) => [key, withoutNulls(child)]),
  );
}

function readApplyConfiguration(kind: KindInfo, applied: unknown): ApiObject {
  const config = withoutNulls(applied);
  const bad = (message: string) => new LoamError('BadRequest', message);
  if (!isObject(config)) throw bad('an apply configuration must be an object');
  const { apiVersion, kind: kindName, metadata } = config;
  if (typeof apiVersion !== 'string' || typeof kindName !== 'string') {
    throw bad('an apply configuration must set apiVersion and kind');
  }
  if (apiVersion !== apiVersionOf(kind)) {
    throw bad(
      `Incorrect version specified in apply patch. Specified patch version: ${apiVersion}, expected: ${apiVersionOf(kind)}`,
    );
  }
  if (kindName !== kind.kind)
    throw bad(`the kind in the apply configuration (${kindName}) does not match ${kind.kind}`);
  if (!isObject(metadata) || typeof metadata.name !== 'string' || metadata.name === '') {
    throw bad('metadata.name: Required value: an apply configuration must name its object');
  }
  if (metadata.managedFields !== undefined) throw bad('metadata.managedFields must be nil');
  return config as ApiObject;
}

/** How kube names a manager in conflicts: `"kubectl"`, `"ctl" with subresource "status" using loam.dev/v1alpha1`. */
function describeManager(entry: Entry): string {
  const subresource = entry.subresource ? ` with subresource ${JSON.stringify(entry.subresource)}` : '';
  const version = entry.operation === 'Update' ? ` using ${entry.apiVersion}` : '';
  return `${JSON.stringify(entry.manager)}${subresource}${version}`;
}

/** kube's manager identifier (what its messages sort by): the entry without time and fields. */
function managerIdentifier({ manager, operation, apiVersion, subresource }: Entry): string {
  return JSON.stringify({
    manager,
    operation,
    apiVersion: operation === 'Update' ? apiVersion : undefined,
    subresource,
  });
}

function conflictError(conflicts: readonly { entry: Entry; fields: FieldSet }[]): LoamError {
  const groups = conflicts
    .map(({ entry, fields }) => ({
      id: managerIdentifier(entry),
      who: describeManager(entry),
      paths: fieldPaths(fields),
    }))
    .sort((a, b) => compareStrings(a.id, b.id));
  const causes: ErrorCause[] = groups.flatMap(({ who, paths }) =>
    paths.map((field) => ({ field, reason: 'FieldManagerConflict', message: `conflict with ${who}` })),
  );
  const [only] = causes;
  const message =
    causes.length === 1 && only
      ? `Apply failed with 1 conflict: ${only.message}: ${only.field}`
      : `Apply failed with ${causes.length} conflicts: ${groups
          .flatMap(({ who, paths }) => [`conflicts with ${who}:`, ...paths.map((path) => `- ${path}`)])
          .join('\n')}`;
  return new LoamError('Conflict', message, { causes });
}

const lastAppliedAnnotation = 'kubectl.kubernetes.io/last-applied-configuration';

/**
 * kube's upgrade from client-side to server-side apply: conflicts only on fields the last
 * client-side apply set (its annotation) are the same user taking them over, so the apply goes
 * ahead as if forced.
 */
function upgradesClientSideApply(
  live: ApiObject | undefined,
  type: TypeNode,
  conflicts: readonly { fields: FieldSet }[],
): boolean {
  const annotations = live?.metadata.annotations as Record<string, string> | undefined;
  const lastApplied = annotations?.[lastAppliedAnnotation];
  if (lastApplied === undefined) return false;
  const allowed = emptySet();
  try {
    collectFields(withoutNulls(JSON.parse(lastApplied)), type, [], allowed);
  } catch {
    // An annotation that is not a valid configuration allows nothing.
    return false;
  }
  return conflicts.every(({ fields }) => isEmpty(difference(fields, allowed)));
}

/** Server-side apply (PATCH application/apply-patch+yaml). `live` undefined = object does not exist yet (apply creates). Returns the object to store, with metadata.managedFields updated. Throws LoamError('Conflict', ...) (crds/errors.ts) on conflicts unless force. */
export function applyConfiguration(
  kind: KindInfo,
  live: ApiObject | undefined,
  applied: unknown,
  options: FieldManagerOptions & { force: boolean },
): ApiObject {
  const config = readApplyConfiguration(kind, applied);
  const type = trackedType(kind, options.subresource);
  const now = formatTimestamp(options.now);
  const entries = decodeEntries(live?.metadata.managedFields) ?? [];
  if (live !== undefined && entries.length === 0) {
    // The first apply to an untracked object: its fields go to "before-first-apply", as in kube, so
    // that changing them conflicts instead of silently taking them over.
    const fields = diffObjects(undefined, live, type).added;
    entries.push({
      manager: 'before-first-apply',
      operation: 'Update',
      apiVersion: live.apiVersion,
      time: now,
      fields,
    });
  }
  const previous = entries.find((entry) => isEntryOf(entry, options.manager, 'Apply', options.subresource));
  const others = entries.filter((entry) => entry !== previous);

  const appliedFields = emptySet();
  collectFields(config, type, [], appliedFields);
  const owned = others.reduce((all, entry) => union(all, entry.fields), appliedFields);
  // Creating, the configuration is the object; otherwise what nobody may own stays as live has it.
  const merged = live === undefined ? config : merge(live, config, type);
  const result = (previous ? prune(merged, type, previous.fields, owned) : merged) as ApiObject;

  // Another manager's field that this apply changes is a conflict; forced, it moves to the applier.
  const diff = diffObjects(live, result, type);
  const changed = union(diff.added, diff.modified);
  const conflicts = others
    .map((entry) => ({ entry, fields: intersection(entry.fields, changed) }))
    .filter(({ fields }) => !isEmpty(fields));
  if (conflicts.length > 0 && !options.force && !upgradesClientSideApply(live, type, conflicts)) {
    throw conflictError(conflicts);
  }

  const { manager, subresource } = options;
  // Like kube, an apply that changes nothing leaves the applier's time alone.
  const time = previous && isEmpty(union(changed, diff.removed)) ? previous.time : now;
  const applier: Entry = {
    manager,
    operation: 'Apply',
    apiVersion: result.apiVersion,
    time,
    subresource,
    fields: appliedFields,
  };
  const updated = entries.map((entry) => (entry === previous ? applier : disowning(entry, diff)));
  if (!previous) updated.push(applier);
  return structuredClone(withManagedFields(result, updated));
}
