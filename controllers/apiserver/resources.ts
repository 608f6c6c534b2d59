/**
 * The verbs on stored objects — get, list, watch, create, update, patch, delete,
 * deletecollection — over the revisioned store, with kube-apiserver's semantics:
 * resourceVersion is the store revision, compare-and-swap on update, finalizers hold a deleted
 * object until they are gone, status is a subresource. HTTP stays in server.ts.
 */
import { namespaceKind } from '../../crds/builtin.js';
import { isLoamError, LoamError } from '../../crds/errors.js';
import { formatTimestamp } from '../../crds/meta.js';
import { group as loamGroup } from '../../crds/v1alpha1/index.js';
import { validateObject, validateUpdate } from '../../crds/validate.js';
import type { KeyValue, Store, WatchEvent } from '../storage/store.js';
import { checkUnknownFields, type FieldValidation } from './fields.js';
import { applyConfiguration, trackUpdate } from './managed-fields.js';
import {
  type ApiObject,
  apiVersionOf,
  expectedRevision,
  finalizersPending,
  nameMismatch,
  namespaceFinalizer,
  prepareCreate,
  prepareStatusUpdate,
  prepareUpdate,
} from './objects.js';
import { applyJsonPatch, applyMergePatch } from './patch.js';
import type { ResourceRequest } from './routing.js';
import { storageKey, storagePrefix } from './routing.js';
import {
  type FieldSelector,
  type LabelSelector,
  parseFieldSelector,
  parseLabelSelector,
} from './selectors.js';
import { conflictError, notFoundError, qualifiedName } from './status.js';

export const patchTypes = {
  merge: 'application/merge-patch+json',
  json: 'application/json-patch+json',
  strategic: 'application/strategic-merge-patch+json',
  apply: 'application/apply-patch+yaml',
} as const;

export interface WatchSink {
  send(type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR', object: unknown): void;
}

/** How often a watch that allows bookmarks gets one, as kube-apiserver's ~1 minute. */
export const defaultBookmarkIntervalMs = 60_000;

/** The query parameters of a write; warnings for the caller collect here. */
export interface WriteOptions {
  /** How fields the schema does not declare are treated. */
  fieldValidation: FieldValidation;
  /** `dryRun=All`: everything but the store write happens, and the result is returned. */
  dryRun: boolean;
  /** The `fieldManager` the client named; server-side apply requires one. */
  fieldManager?: string;
  /** The client's User-Agent: its product name is the field manager when none is named, as in kube. */
  userAgent?: string;
  /** `force=true`: a server-side apply takes the fields it conflicts on from their managers. */
  force?: boolean;
  warnings: string[];
}

export function defaultWrite(): WriteOptions {
  return { fieldValidation: 'Warn', dryRun: false, warnings: [] };
}

/** kube-apiserver's limit on a field manager's name. */
const maxFieldManagerLength = 128;

/** Who a write is recorded as in managedFields. */
function fieldManager(write: WriteOptions): string {
  const manager = write.fieldManager ?? write.userAgent?.split('/')[0] ?? 'unknown';
  if (manager.length > maxFieldManagerLength || /[\p{Cc}]/u.test(manager)) {
    throw new LoamError(
      'Invalid',
      `fieldManager: Invalid value: ${JSON.stringify(manager)}: must be at most 128 printable characters`,
      {
        causes: [
          {
            field: 'fieldManager',
            reason: 'FieldValueInvalid',
            message: 'must be at most 128 printable characters',
          },
        ],
      },
    );
  }
  return manager.slice(0, maxFieldManagerLength);
}

/** metav1.DeleteOptions, as far as a store without garbage collection can honour it. */
export interface DeleteOptions {
  preconditions?: { uid?: string; resourceVersion?: string };
  /** Accepted and validated; Loam has no owner-reference garbage collector, so all behave alike. */
  propagationPolicy?: 'Orphan' | 'Background' | 'Foreground';
  dryRun?: boolean;
}

/** Bounded retries of a patch whose read-modify-write lost a race with another writer. */
const patchAttempts = 5;

export class Resources {
  constructor(
    private readonly store: Store,
    private readonly now: () => Date = () => new Date(),
    private readonly bookmarkIntervalMs = defaultBookmarkIntervalMs,
  ) {}

  async get(req: ResourceRequest): Promise<ApiObject> {
    return (await this.read(req)).obj;
  }

  async list(req: ResourceRequest, query: URLSearchParams) {
    const { kind } = req;
    const filter = this.filter(req, query);
    const limit = Number(query.get('limit') ?? 0) || 0;
    const items: ApiObject[] = [];
    let token = query.get('continue') || undefined;
    let revision = 0;
    // Keep reading pages until `limit` objects pass the selectors, as kube-apiserver does.
    for (let pages = 0; pages < 10_000; pages++) {
      const page = await this.store.list(storagePrefix(kind, req.namespace), {
        limit: limit > 0 ? limit - items.length : 0,
        ...(token ? { continue: token } : {}),
      });
      revision = page.revision;
      for (const kv of page.items) {
        const obj = decode(kv);
        if (filter(obj)) items.push(obj);
      }
      token = page.continue;
      if (!token || (limit > 0 && items.length >= limit)) break;
    }
    const metadata: Record<string, unknown> = { resourceVersion: String(revision) };
    if (token) metadata.continue = token;
    return { kind: kind.listKind, apiVersion: apiVersionOf(kind), metadata, items };
  }

  /**
   * Streams changes until `signal` aborts. Without a resourceVersion (or with "0") the current
   * objects come first as ADDED, as a list-then-watch would see them.
   */
  async watch(
    req: ResourceRequest,
    query: URLSearchParams,
    sink: WatchSink,
    signal: AbortSignal,
  ): Promise<void> {
    const { kind } = req;
    const filter = this.filter(req, query);
    const prefix = req.name ? storageKey(kind, req.namespace, req.name) : storagePrefix(kind, req.namespace);
    const rv = query.get('resourceVersion') ?? '';
    let from: number;
    if (rv === '' || rv === '0') {
      const initial = await this.list({ ...req, verb: 'list' }, query);
      for (const obj of initial.items) sink.send('ADDED', obj);
      from = Number(initial.metadata.resourceVersion);
    } else {
      from = Number(rv);
      if (!Number.isSafeInteger(from) || from < 0)
        throw new LoamError('BadRequest', `invalid resourceVersion ${JSON.stringify(rv)}`);
    }
    const watch = await this.store.watch(prefix, from);
    signal.addEventListener('abort', () => watch.close(), { once: true });
    if (signal.aborted) watch.close();
    // A bookmark carries the revision of the last change this watch has seen (delivered or
    // filtered out), so a client resuming from it misses nothing and need not replay old history.
    let seen = from;
    const bookmarks =
      query.get('allowWatchBookmarks') === 'true'
        ? setInterval(
            () =>
              sink.send('BOOKMARK', {
                apiVersion: apiVersionOf(kind),
                kind: kind.kind,
                metadata: { resourceVersion: String(seen) },
              }),
            this.bookmarkIntervalMs,
          )
        : undefined;
    try {
      for await (const event of watch) {
        seen = event.kv.modRevision;
        // A single-object watch uses the key as prefix: skip keys that merely start with it.
        if (req.name && event.kv.key !== prefix) continue;
        const change = classify(event, filter);
        if (change) sink.send(change.type, change.object);
      }
    } finally {
      clearInterval(bookmarks);
    }
  }

  async create(
    req: ResourceRequest,
    body: unknown,
    write: WriteOptions = defaultWrite(),
  ): Promise<ApiObject> {
    const { kind } = req;
    if (req.subresource) throw new LoamError('MethodNotAllowed', 'create is not allowed on a subresource');
    write.warnings.push(...checkUnknownFields(kind, body, write.fieldValidation));
    const obj = prepareCreate(kind, body, req.namespace, this.now());
    const validated = trackUpdate(kind, undefined, validateObject(kind, obj) as ApiObject, {
      manager: fieldManager(write),
      now: this.now(),
    });
    return this.insert(req, validated, write);
  }

  /** Stores a new, prepared object (checked against its namespace), or says what would be stored. */
  private async insert(req: ResourceRequest, validated: ApiObject, write: WriteOptions): Promise<ApiObject> {
    const { kind } = req;
    const name = validated.metadata.name as string;
    if (kind.scope === 'Namespaced') await this.checkNamespaceAcceptsContent(req.namespace as string);
    const key = storageKey(kind, req.namespace, name);
    try {
      if (write.dryRun) {
        if (await this.store.get(key)) throw new LoamError('AlreadyExists', key);
        return validated;
      }
      return decode(await this.store.create(key, JSON.stringify(validated)));
    } catch (err) {
      if (err instanceof LoamError && err.code === 'AlreadyExists') {
        throw new LoamError('AlreadyExists', `${qualifiedName(kind, name)} already exists`);
      }
      throw err;
    }
  }

  async update(
    req: ResourceRequest,
    body: unknown,
    write: WriteOptions = defaultWrite(),
  ): Promise<ApiObject> {
    write.warnings.push(...checkUnknownFields(req.kind, body, write.fieldValidation));
    const current = await this.read(req);
    const next = this.prepare(req, current.obj, body, fieldManager(write));
    const expected = expectedRevision(next) ?? current.kv.modRevision;
    return this.write(req, next, expected, write.dryRun);
  }

  async patch(
    req: ResourceRequest,
    contentType: string,
    body: unknown,
    write: WriteOptions = defaultWrite(),
  ): Promise<ApiObject> {
    const { kind } = req;
    // kubectl sends strategic merge patches only for the kinds it compiles in (the built-in ones).
    if (contentType === patchTypes.strategic && kind.group === loamGroup) {
      throw new LoamError(
        'UnsupportedMediaType',
        `the body of the request was in an unknown format - accepted media types include: ${patchTypes.json}, ${patchTypes.merge}, ${patchTypes.apply}`,
      );
    }
    if (write.force && contentType !== patchTypes.apply) {
      throw new LoamError(
        'BadRequest',
        'force=true is only valid for server-side apply (application/apply-patch+yaml)',
      );
    }
    if (contentType === patchTypes.apply) return this.apply(req, body, write);
    const manager = fieldManager(write);
    for (let attempt = 1; ; attempt++) {
      const current = await this.read(req);
      const patched = this.applyPatch(contentType, current.obj, body);
      // A patch that leaves resourceVersion alone applies to whatever version is current (and is
      // retried when it loses a race); one that changes it makes it a precondition, as in kube.
      const patchedMetadata = (patched as Partial<ApiObject> | null)?.metadata;
      if (patchedMetadata?.resourceVersion === current.obj.metadata.resourceVersion) {
        delete patchedMetadata?.resourceVersion;
      }
      const warnings = checkUnknownFields(req.kind, patched, write.fieldValidation);
      const next = this.prepare(req, current.obj, patched, manager);
      // A patch naming a resourceVersion is a precondition; otherwise retry lost races.
      const precondition = expectedRevision(next);
      try {
        const written = await this.write(req, next, precondition ?? current.kv.modRevision, write.dryRun);
        write.warnings.push(...warnings);
        return written;
      } catch (err) {
        if (
          precondition !== undefined ||
          attempt >= patchAttempts ||
          !(err instanceof LoamError && err.code === 'Conflict')
        ) {
          throw err;
        }
      }
    }
  }

  async delete(req: ResourceRequest, options: DeleteOptions = {}): Promise<ApiObject> {
    const { kind } = req;
    const current = await this.read(req);
    const { obj } = current;
    const name = req.name as string;
    const { uid, resourceVersion } = options.preconditions ?? {};
    if (uid !== undefined && uid !== obj.metadata.uid) {
      throw new LoamError(
        'Conflict',
        `Precondition failed: UID in precondition: ${uid}, UID in object meta: ${obj.metadata.uid}`,
      );
    }
    if (resourceVersion !== undefined && resourceVersion !== obj.metadata.resourceVersion) {
      throw conflictError(kind, name);
    }
    if (finalizersPending(kind, obj)) {
      // Finalizers hold the object: mark it deleted and let their owners finish and remove them.
      if (obj.metadata.deletionTimestamp) return obj;
      const marked: ApiObject = {
        ...obj,
        metadata: {
          ...obj.metadata,
          deletionTimestamp: formatTimestamp(this.now()),
          deletionGracePeriodSeconds: 0,
        },
      };
      if (kind === namespaceKind) marked.status = { ...(obj.status as object), phase: 'Terminating' };
      return this.write(req, marked, current.kv.modRevision, options.dryRun ?? false);
    }
    if (options.dryRun) return obj;
    try {
      return decode(await this.store.delete(current.kv.key, current.kv.modRevision));
    } catch (err) {
      throw this.translate(err, req);
    }
  }

  async deleteCollection(req: ResourceRequest, query: URLSearchParams, options: DeleteOptions = {}) {
    const { preconditions: _each, ...each } = options;
    const list = await this.list({ ...req, verb: 'list' }, query);
    const deleted: ApiObject[] = [];
    for (const obj of list.items) {
      try {
        deleted.push(
          await this.delete(
            {
              ...req,
              verb: 'delete',
              namespace: obj.metadata.namespace,
              name: obj.metadata.name as string,
            },
            each,
          ),
        );
      } catch (err) {
        if (!(err instanceof LoamError && err.code === 'NotFound')) throw err;
      }
    }
    return { ...list, items: deleted };
  }

  /**
   * Removes the `kubernetes` finalizer of a terminating Namespace once its content is gone (kube's
   * /finalize); with nothing else holding it, the Namespace is then removed.
   */
  async finalizeNamespace(name: string): Promise<void> {
    const req: ResourceRequest = { type: 'resource', kind: namespaceKind, verb: 'update', name };
    const current = await this.read(req);
    const spec = (current.obj.spec ?? {}) as { finalizers?: string[] };
    if (!spec.finalizers?.includes(namespaceFinalizer)) return;
    const finalizers = spec.finalizers.filter((f) => f !== namespaceFinalizer);
    await this.write(req, { ...current.obj, spec: { ...spec, finalizers } }, current.kv.modRevision, false);
  }

  /**
   * Server-side apply: the configuration merged into the live object by field ownership
   * (managed-fields.ts), or a new object when there is none. Lost races are retried.
   */
  private async apply(req: ResourceRequest, body: unknown, write: WriteOptions): Promise<ApiObject> {
    const { kind } = req;
    if (write.fieldManager === undefined) {
      throw new LoamError(
        'Invalid',
        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
        {
          causes: [
            {
              field: 'fieldManager',
              reason: 'FieldValueRequired',
              message: 'Required value: is required for apply patch',
            },
          ],
        },
      );
    }
    const options = {
      manager: fieldManager(write),
      force: write.force ?? false,
      now: this.now(),
      ...(req.subresource === 'status' ? { subresource: req.subresource } : {}),
    };
    const warnings = checkUnknownFields(kind, body, write.fieldValidation);
    for (let attempt = 1; ; attempt++) {
      const current = await this.read(req).catch((err: unknown) => {
        if (isLoamError(err, 'NotFound') && !req.subresource) return undefined;
        throw err;
      });
      if (!current) {
        const config = applyConfiguration(kind, undefined, body, options);
        if (config.metadata.name !== req.name) throw nameMismatch(config.metadata.name, req.name);
        const created = validateObject(
          kind,
          prepareCreate(kind, config, req.namespace, this.now()),
        ) as ApiObject;
        write.warnings.push(...warnings);
        return this.insert({ ...req, verb: 'create' }, created, write);
      }
      const { resourceVersion: _rv, ...metadata } = current.obj.metadata;
      const applied = applyConfiguration(kind, { ...current.obj, metadata }, body, options);
      const next = this.prepare(req, current.obj, applied);
      try {
        const written = await this.write(req, next, current.kv.modRevision, write.dryRun);
        write.warnings.push(...warnings);
        return written;
      } catch (err) {
        if (attempt >= patchAttempts || !isLoamError(err, 'Conflict')) throw err;
      }
    }
  }

  /** The object an update stores, validated; `manager`, when given, is recorded in managedFields. */
  private prepare(req: ResourceRequest, existing: ApiObject, body: unknown, manager?: string): ApiObject {
    const name = req.name as string;
    const next =
      req.subresource === 'status'
        ? prepareStatusUpdate(req.kind, existing, body, name)
        : prepareUpdate(req.kind, existing, body, name);
    if (req.subresource === 'status') {
      const rv = (body as ApiObject | undefined)?.metadata?.resourceVersion;
      if (rv !== undefined) next.metadata.resourceVersion = rv;
    }
    const validated = validateObject(req.kind, next) as ApiObject;
    validateUpdate(req.kind, existing, validated);
    if (manager === undefined) return validated;
    return trackUpdate(req.kind, existing, validated, {
      manager,
      now: this.now(),
      ...(req.subresource === 'status' ? { subresource: req.subresource } : {}),
    });
  }

  /** Stores `next` if the object is still at `expected`; an object whose last finalizer went while deleted is removed. */
  private async write(
    req: ResourceRequest,
    next: ApiObject,
    expected: number,
    dryRun: boolean,
  ): Promise<ApiObject> {
    if (dryRun) return { ...next, metadata: { ...next.metadata, resourceVersion: String(expected) } };
    const key = storageKey(req.kind, req.namespace, req.name as string);
    const { resourceVersion: _rv, ...metadata } = next.metadata;
    const stored: ApiObject = { ...next, metadata };
    try {
      if (metadata.deletionTimestamp && !finalizersPending(req.kind, stored)) {
        return decode(await this.store.delete(key, expected));
      }
      return decode(await this.store.update(key, JSON.stringify(stored), expected));
    } catch (err) {
      throw this.translate(err, req);
    }
  }

  private applyPatch(contentType: string, current: ApiObject, body: unknown): unknown {
    switch (contentType) {
      case patchTypes.merge:
      case patchTypes.strategic: // core kinds: without list merge keys, strategic merge is a merge patch
        return applyMergePatch(current, body);
      case patchTypes.json:
        return applyJsonPatch(current, body);
      default:
        throw new LoamError(
          'UnsupportedMediaType',
          `the body of the request was in an unknown format - accepted media types include: ${patchTypes.json}, ${patchTypes.merge}`,
        );
    }
  }

  private async read(req: ResourceRequest): Promise<{ kv: KeyValue; obj: ApiObject }> {
    const kv = await this.store.get(storageKey(req.kind, req.namespace, req.name as string));
    if (!kv) {
      throw notFoundError(req.kind, req.name as string);
    }
    return { kv, obj: decode(kv) };
  }

  private translate(err: unknown, req: ResourceRequest): unknown {
    if (!(err instanceof LoamError)) return err;
    if (err.code === 'Conflict') return conflictError(req.kind, req.name as string);
    if (err.code === 'NotFound') return notFoundError(req.kind, req.name as string);
    return err;
  }

  private filter(req: ResourceRequest, query: URLSearchParams): (obj: ApiObject) => boolean {
    const selectable = {
      'metadata.name': 'metadata.name',
      'metadata.namespace': 'metadata.namespace',
      ...req.kind.selectableFields,
    };
    const labels: LabelSelector = parseLabelSelector(query.get('labelSelector') ?? '');
    const fields: FieldSelector = parseFieldSelector(
      query.get('fieldSelector') ?? '',
      Object.keys(selectable),
    );
    if (fields.empty) return (obj) => labels.matches(obj.metadata.labels);
    return (obj) =>
      labels.matches(obj.metadata.labels) &&
      fields.matches(
        Object.fromEntries(Object.entries(selectable).map(([field, path]) => [field, fieldValue(obj, path)])),
      );
  }

  private async checkNamespaceAcceptsContent(namespace: string): Promise<void> {
    const kv = await this.store.get(storageKey(namespaceKind, undefined, namespace));
    if (!kv) throw new LoamError('NotFound', `namespaces ${JSON.stringify(namespace)} not found`);
    if (decode(kv).metadata.deletionTimestamp) {
      throw new LoamError(
        'Forbidden',
        `unable to create new content in namespace ${namespace} because it is being terminated`,
      );
    }
  }
}

/** The string a field selector compares: absent values are "", as in kube's field sets. */
function fieldValue(obj: ApiObject, path: string): string {
  let value: unknown = obj;
  for (const part of path.split('.')) value = (value as Record<string, unknown> | undefined)?.[part];
  return value === undefined || value === null ? '' : String(value);
}

export function decode(kv: KeyValue): ApiObject {
  const obj = JSON.parse(kv.value) as ApiObject;
  obj.metadata.resourceVersion = String(kv.modRevision);
  return obj;
}

/**
 * The watch event a store change is for a filtered watcher: an object that starts matching is
 * ADDED, one that stops matching is DELETED, as kube-apiserver's watch cache reports them.
 */
function classify(
  event: WatchEvent,
  matches: (obj: ApiObject) => boolean,
): { type: 'ADDED' | 'MODIFIED' | 'DELETED'; object: ApiObject } | undefined {
  const obj = decode(event.kv);
  if (event.type === 'delete') return matches(obj) ? { type: 'DELETED', object: obj } : undefined;
  const now = matches(obj);
  const before = event.prev ? matches(decode(event.prev)) : event.kv.createRevision !== event.kv.modRevision;
  if (now && before) return { type: 'MODIFIED', object: obj };
  if (now) return { type: 'ADDED', object: obj };
  if (before) return { type: 'DELETED', object: obj };
  return undefined;
}
