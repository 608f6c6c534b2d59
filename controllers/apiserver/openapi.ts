/**
 * OpenAPI v3 for the served kinds, in the shape kube-apiserver publishes at /openapi/v3: an index
 * of group-versions, and per group-version one document with the kinds' schemas and every
 * resource path. kubectl reads them to decide that the server validates fields itself (a PATCH
 * operation with x-kubernetes-group-version-kind and a fieldValidation parameter), to compute
 * strategic merge patches, and for `kubectl explain`. Pure: derived from KindInfo only.
 */

import { createHash } from 'node:crypto';
import { type JsonSchema, structuralSchema } from '../../crds/crd.js';
import type { KindInfo } from '../../crds/kind.js';

const metaPrefix = 'io.k8s.apimachinery.pkg.apis.meta.v1.';
const runtimePrefix = 'io.k8s.apimachinery.pkg.runtime.';

function ref(name: string): { $ref: string } {
  return { $ref: `#/components/schemas/${name}` };
}

/** A reference with its own description: OpenAPI 3.0 ignores siblings of $ref, so kube wraps it in allOf. */
function refWith(name: string, extra: JsonSchema): JsonSchema {
  return { allOf: [ref(name)], ...extra };
}

// --- Names ---------------------------------------------------------------------------------------

/**
 * The schema name kube gives a kind: io.k8s.api.<group>.<version>.<Kind> for Kubernetes' own groups
 * (core for the legacy group, coordination for coordination.k8s.io), the reversed group otherwise
 * (dev.loam.v1alpha1.Instance), as CRDs are named.
 */
export function schemaName(kind: KindInfo, name = kind.kind): string {
  if (kind.group === '') return `io.k8s.api.core.${kind.version}.${name}`;
  if (kind.group.endsWith('.k8s.io')) {
    return `io.k8s.api.${kind.group.slice(0, -'.k8s.io'.length)}.${kind.version}.${name}`;
  }
  return `${kind.group.split('.').reverse().join('.')}.${kind.version}.${name}`;
}

/** The key of a group-version's document: api/v1, apis/loam.dev/v1alpha1. */
function documentPath(group: string, version: string): string {
  return group === '' ? `api/${version}` : `apis/${group}/${version}`;
}

// apiserver's ToValidOperationID: drop what is not a letter (or a digit after the first), capitalize after it.
function operationIdPart(text: string, capitalizeFirst: boolean): string {
  let out = '';
  let capitalize = capitalizeFirst;
  [...text].forEach((char, i) => {
    if (/\p{L}|_/u.test(char) || (i !== 0 && /\d/.test(char))) {
      out += capitalize ? char.toUpperCase() : char;
      capitalize = false;
    } else {
      capitalize = true;
    }
  });
  return out;
}

/** LoamDevV1alpha1 and the tag loamDev_v1alpha1; CoreV1 and core_v1; CoordinationV1 and coordination_v1. */
function groupVersionNames(kind: KindInfo): { infix: string; tag: string } {
  const group = kind.group === '' ? 'core' : kind.group.replace(/\.k8s\.io$/, '');
  return {
    infix: operationIdPart(group, true) + operationIdPart(kind.version, true),
    tag: `${operationIdPart(group, false)}_${operationIdPart(kind.version, false)}`,
  };
}

// --- Shared apimachinery schemas -----------------------------------------------------------------

const typeMeta = {
  apiVersion: {
    description:
      'The versioned schema of this representation of an object, group/version (v1 for the core group).',
    type: 'string',
  },
  kind: {
    description: 'The REST resource this object represents, in CamelCase. Cannot be updated.',
    type: 'string',
  },
};

const stringMap = { type: 'object', additionalProperties: { type: 'string', default: '' } };
const stringList = { type: 'array', items: { type: 'string', default: '' } };

function gvkList(...gvks: { group: string; version: string; kind: string }[]) {
  const seen = new Set<string>();
  return gvks.filter((gvk) => {
    const key = `${gvk.group}/${gvk.version}/${gvk.kind}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** metav1 and runtime types every document references, keyed by schema name. */
function metaSchemas(group: string, version: string): Record<string, JsonSchema> {
  const optionsGvk = (kind: string) => gvkList({ group: '', version: 'v1', kind }, { group, version, kind });
  return {
    [`${metaPrefix}DeleteOptions`]: {
      description: 'Options of a DELETE request.',
      type: 'object',
      properties: {
        ...typeMeta,
        dryRun: {
          ...stringList,
          description: 'All: run every stage of the request without persisting anything.',
          'x-kubernetes-list-type': 'atomic',
        },
        gracePeriodSeconds: {
          description: 'Seconds before the object is deleted; 0 deletes at once.',
          type: 'integer',
          format: 'int64',
        },
        orphanDependents: {
          description: 'Deprecated: use propagationPolicy.',
          type: 'boolean',
        },
        preconditions: refWith(`${metaPrefix}Preconditions`, {
          description: 'Must hold for the deletion to proceed; otherwise 409 Conflict.',
        }),
        propagationPolicy: {
          description: 'How dependents are garbage collected: Orphan, Background or Foreground.',
          type: 'string',
        },
      },
      'x-kubernetes-group-version-kind': optionsGvk('DeleteOptions'),
    },
    [`${metaPrefix}FieldsV1`]: {
      description: 'A set of fields, as a trie in JSON (the format of sigs.k8s.io/structured-merge-diff).',
      type: 'object',
    },
    [`${metaPrefix}ListMeta`]: {
      description: 'Metadata of a list.',
      type: 'object',
      properties: {
        continue: {
          description:
            'Set when the list was limited and more items remain: pass it back to get the next page.',
          type: 'string',
        },
        remainingItemCount: {
          description: 'An estimate of how many items follow this page, when the server knows.',
          type: 'integer',
          format: 'int64',
        },
        resourceVersion: {
          description: 'The version of the collection this list was read at; opaque to clients.',
          type: 'string',
        },
        selfLink: { description: 'Deprecated and never set.', type: 'string' },
      },
    },
    [`${metaPrefix}ManagedFieldsEntry`]: {
      description: 'The fields one manager set through one operation (server-side apply bookkeeping).',
      type: 'object',
      properties: {
        apiVersion: { description: 'The version of the resource the field set applies to.', type: 'string' },
        fieldsType: { description: 'The format of the field set: FieldsV1.', type: 'string' },
        fieldsV1: refWith(`${metaPrefix}FieldsV1`, { description: 'The field set, in FieldsV1 format.' }),
        manager: { description: 'Who manages these fields.', type: 'string' },
        operation: { description: 'Apply or Update.', type: 'string' },
        subresource: {
          description: 'The subresource written through (e.g. status), empty for the main resource.',
          type: 'string',
        },
        time: refWith(`${metaPrefix}Time`, { description: 'When the entry last changed.' }),
      },
    },
    [`${metaPrefix}MicroTime`]: {
      description: 'An RFC 3339 timestamp with microseconds.',
      type: 'string',
      format: 'date-time',
    },
    [`${metaPrefix}ObjectMeta`]: {
      description: 'Metadata every persisted object has.',
      type: 'object',
      properties: {
        annotations: {
          ...stringMap,
          description: 'Arbitrary non-identifying metadata for tools; not selectable.',
        },
        creationTimestamp: refWith(`${metaPrefix}Time`, {
          description: 'When the object was created. Set by the server; read-only.',
        }),
        deletionGracePeriodSeconds: {
          description:
            'Seconds the object has to terminate gracefully once deletion was requested. Read-only.',
          type: 'integer',
          format: 'int64',
        },
        deletionTimestamp: refWith(`${metaPrefix}Time`, {
          description:
            'When deletion was requested; the object goes once its finalizers are empty. Set by the server; read-only.',
        }),
        finalizers: {
          ...stringList,
          description: 'Must be empty before the object is removed from storage; each names who removes it.',
          'x-kubernetes-list-type': 'set',
          'x-kubernetes-patch-strategy': 'merge',
        },
        generateName: {
          description: 'A prefix the server makes a unique name from when name is empty.',
          type: 'string',
        },
        generation: {
          description: 'The generation of the desired state; increases when spec changes. Read-only.',
          type: 'integer',
          format: 'int64',
        },
        labels: {
          ...stringMap,
          description: 'Identifying key/value pairs that selectors match.',
        },
        managedFields: {
          description: 'Which manager owns which fields (server-side apply); rarely of interest to people.',
          type: 'array',
          items: refWith(`${metaPrefix}ManagedFieldsEntry`, { default: {} }),
          'x-kubernetes-list-type': 'atomic',
        },
        name: {
          description:
            'Unique within a namespace (or the cluster for cluster-scoped kinds). Cannot be updated.',
          type: 'string',
        },
        namespace: {
          description:
            'The namespace of a namespaced object; empty for cluster-scoped ones. Cannot be updated.',
          type: 'string',
        },
        ownerReferences: {
          description: 'Objects this one depends on; it is garbage collected when all of them are gone.',
          type: 'array',
          items: refWith(`${metaPrefix}OwnerReference`, { default: {} }),
          'x-kubernetes-list-map-keys': ['uid'],
          'x-kubernetes-list-type': 'map',
          'x-kubernetes-patch-merge-key': 'uid',
          'x-kubernetes-patch-strategy': 'merge',
        },
        resourceVersion: {
          description:
            'The version of this object, for optimistic concurrency and watches. Opaque; set by the server.',
          type: 'string',
        },
        selfLink: { description: 'Deprecated and never set.', type: 'string' },
        uid: {
          description: 'Unique in time and space for this object. Set by the server; read-only.',
          type: 'string',
        },
      },
    },
    [`${metaPrefix}OwnerReference`]: {
      description: 'Identifies an owner in the same namespace, or a cluster-scoped one.',
      type: 'object',
      properties: {
        apiVersion: { description: 'API version of the owner.', type: 'string', default: '' },
        blockOwnerDeletion: {
          description: 'With foreground deletion, the owner is not removed until this reference is.',
          type: 'boolean',
        },
        controller: { description: 'Whether the owner is the managing controller.', type: 'boolean' },
        kind: { description: 'Kind of the owner.', type: 'string', default: '' },
        name: { description: 'Name of the owner.', type: 'string', default: '' },
        uid: { description: 'UID of the owner.', type: 'string', default: '' },
      },
      required: ['apiVersion', 'kind', 'name', 'uid'],
      'x-kubernetes-map-type': 'atomic',
    },
    [`${metaPrefix}Patch`]: {
      description: 'The body of a PATCH request; its format is given by the Content-Type.',
      type: 'object',
    },
    [`${metaPrefix}Preconditions`]: {
      description: 'What must hold for an operation to proceed.',
      type: 'object',
      properties: {
        resourceVersion: { description: 'The resourceVersion the object must have.', type: 'string' },
        uid: { description: 'The UID the object must have.', type: 'string' },
      },
    },
    [`${metaPrefix}Status`]: {
      description: 'The result of a call that returns no object, and every error.',
      type: 'object',
      properties: {
        ...typeMeta,
        code: { description: 'The HTTP status code, 0 if unset.', type: 'integer', format: 'int32' },
        details: refWith(`${metaPrefix}StatusDetails`, {
          description: 'More about the reason; what is set depends on it.',
        }),
        message: { description: 'What happened, for people.', type: 'string' },
        metadata: refWith(`${metaPrefix}ListMeta`, { default: {}, description: 'Standard list metadata.' }),
        reason: {
          description: 'Why the operation failed, for machines (e.g. NotFound, AlreadyExists, Invalid).',
          type: 'string',
        },
        status: { description: 'Success or Failure.', type: 'string' },
      },
      'x-kubernetes-group-version-kind': [{ group: '', version: 'v1', kind: 'Status' }],
    },
    [`${metaPrefix}StatusCause`]: {
      description: 'One problem behind a failure, e.g. one invalid field.',
      type: 'object',
      properties: {
        field: {
          description: 'The field at fault, as a JSON path such as spec.networks[0].address.',
          type: 'string',
        },
        message: { description: 'What is wrong, for people.', type: 'string' },
        reason: { description: 'What is wrong, for machines (e.g. FieldValueInvalid).', type: 'string' },
      },
    },
    [`${metaPrefix}StatusDetails`]: {
      description: 'The object a Status is about, and its causes.',
      type: 'object',
      properties: {
        causes: {
          description: 'Every problem found.',
          type: 'array',
          items: refWith(`${metaPrefix}StatusCause`, { default: {} }),
          'x-kubernetes-list-type': 'atomic',
        },
        group: { description: 'The group of the resource.', type: 'string' },
        kind: { description: 'The kind of the resource.', type: 'string' },
        name: { description: 'The name of the object.', type: 'string' },
        retryAfterSeconds: {
          description: 'Seconds to wait before retrying, when the server says.',
          type: 'integer',
          format: 'int32',
        },
        uid: { description: 'The UID of the object.', type: 'string' },
      },
    },
    [`${metaPrefix}Time`]: {
      description: 'An RFC 3339 timestamp in UTC with whole seconds.',
      type: 'string',
      format: 'date-time',
    },
    [`${metaPrefix}WatchEvent`]: {
      description: 'One event of a watch stream.',
      type: 'object',
      properties: {
        object: refWith(`${runtimePrefix}RawExtension`, {
          default: {},
          description:
            'ADDED, MODIFIED: the new state; DELETED: the last state; BOOKMARK: only metadata.resourceVersion; ERROR: a Status.',
        }),
        type: { description: 'ADDED, MODIFIED, DELETED, BOOKMARK or ERROR.', type: 'string', default: '' },
      },
      required: ['type', 'object'],
      'x-kubernetes-group-version-kind': optionsGvk('WatchEvent'),
    },
    [`${runtimePrefix}RawExtension`]: {
      description: 'An embedded object of any kind.',
      type: 'object',
    },
  };
}

// --- Kind schemas --------------------------------------------------------------------------------

function gvk(kind: KindInfo, name = kind.kind) {
  return { group: kind.group, version: kind.version, kind: name };
}

/** The kind's object schema: the zod schema made structural, with kube's envelope and references. */
function objectSchema(kind: KindInfo): JsonSchema {
  const schema = structuralSchema(kind);
  const properties = (schema.properties ?? {}) as Record<string, JsonSchema>;
  return {
    ...schema,
    properties: {
      ...properties,
      ...typeMeta,
      metadata: refWith(`${metaPrefix}ObjectMeta`, {
        default: {},
        description: "Standard object's metadata: name, namespace, labels, annotations, ...",
      }),
    },
    'x-kubernetes-group-version-kind': [gvk(kind)],
  };
}

function listSchema(kind: KindInfo): JsonSchema {
  return {
    description: `${kind.listKind} is a list of ${kind.kind}`,
    type: 'object',
    properties: {
      ...typeMeta,
      items: {
        description: `List of ${kind.plural}.`,
        type: 'array',
        items: refWith(schemaName(kind), { default: {} }),
      },
      metadata: refWith(`${metaPrefix}ListMeta`, { default: {}, description: 'Standard list metadata.' }),
    },
    required: ['items'],
    'x-kubernetes-group-version-kind': [gvk(kind, kind.listKind)],
  };
}

// --- Paths ---------------------------------------------------------------------------------------

type Parameter = {
  name: string;
  in: 'path' | 'query';
  description: string;
  schema: JsonSchema;
  required?: true;
};

function query(name: string, type: 'string' | 'integer' | 'boolean', description: string): Parameter {
  return { name, in: 'query', description, schema: { type, uniqueItems: true } };
}

const parameters = {
  allowWatchBookmarks: query(
    'allowWatchBookmarks',
    'boolean',
    'Ask for BOOKMARK events in a watch; the server may send them at its discretion. Ignored when not watching.',
  ),
  continue: query(
    'continue',
    'string',
    'The continue token of the previous page of a limited list, to get the next page. Not supported with watch.',
  ),
  dryRun: query(
    'dryRun',
    'string',
    'All: run every stage of the request without persisting anything. Unrecognized values are an error.',
  ),
  fieldManager: query(
    'fieldManager',
    'string',
    'The name of the actor making the change (at most 128 printable characters); required for apply patches.',
  ),
  fieldSelector: query('fieldSelector', 'string', 'Only objects whose fields match this selector.'),
  fieldValidation: query(
    'fieldValidation',
    'string',
    'What to do with unknown or duplicate fields in the request body (POST, PUT, PATCH): Ignore drops them, Warn (the default) drops them with a warning header, Strict fails the request.',
  ),
  force: query(
    'force',
    'boolean',
    'Take over fields other managers own when applying. Must be unset for other patch types.',
  ),
  gracePeriodSeconds: query(
    'gracePeriodSeconds',
    'integer',
    'Seconds before the object is deleted; 0 deletes at once, unset uses the default for the kind.',
  ),
  labelSelector: query('labelSelector', 'string', 'Only objects whose labels match this selector.'),
  limit: query(
    'limit',
    'integer',
    'At most this many items; metadata.continue then names the rest. Not supported with watch.',
  ),
  pretty: query('pretty', 'string', "If 'true', the output is indented."),
  propagationPolicy: query(
    'propagationPolicy',
    'string',
    'How dependents are garbage collected: Orphan, Background or Foreground.',
  ),
  resourceVersion: query(
    'resourceVersion',
    'string',
    'Which version of the collection to list, or to watch from. See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions.',
  ),
  timeoutSeconds: query('timeoutSeconds', 'integer', 'End the list or watch call after this many seconds.'),
  watch: query(
    'watch',
    'boolean',
    'Stream changes (ADDED, MODIFIED, DELETED) instead of listing; give resourceVersion to start from.',
  ),
} satisfies Record<string, Parameter>;

const namespaceParameter: Parameter = {
  name: 'namespace',
  in: 'path',
  description: 'object name and auth scope, such as for teams and projects',
  required: true,
  schema: { type: 'string', uniqueItems: true },
};

function nameParameter(kind: KindInfo): Parameter {
  return {
    name: 'name',
    in: 'path',
    description: `name of the ${kind.kind}`,
    required: true,
    schema: { type: 'string', uniqueItems: true },
  };
}

const listParameters = [
  parameters.allowWatchBookmarks,
  parameters.continue,
  parameters.fieldSelector,
  parameters.labelSelector,
  parameters.limit,
  parameters.resourceVersion,
  parameters.timeoutSeconds,
  parameters.watch,
];
const writeParameters = [parameters.dryRun, parameters.fieldManager, parameters.fieldValidation];
const patchParameters = [...writeParameters, parameters.force];
const deleteParameters = [parameters.dryRun, parameters.gracePeriodSeconds, parameters.propagationPolicy];
const deleteCollectionParameters = [
  parameters.continue,
  parameters.dryRun,
  parameters.fieldSelector,
  parameters.gracePeriodSeconds,
  parameters.labelSelector,
  parameters.limit,
  parameters.propagationPolicy,
  parameters.resourceVersion,
  parameters.timeoutSeconds,
];

const json = 'application/json';

function content(schemaRef: string, mediaTypes: string[] = [json]) {
  return Object.fromEntries(mediaTypes.map((type) => [type, { schema: ref(schemaRef) }]));
}

const statusCodes = { 200: 'OK', 201: 'Created', 202: 'Accepted' } as const;

function responses(schemaRef: string, codes: (keyof typeof statusCodes)[], mediaTypes?: string[]) {
  return {
    ...Object.fromEntries(
      codes.map((code) => [
        code,
        { description: statusCodes[code], content: content(schemaRef, mediaTypes) },
      ]),
    ),
    401: { description: 'Unauthorized' },
  };
}

/**
 * Patch formats accepted: JSON patch, merge patch and server-side apply for every kind, and
 * strategic merge patch for the core group only, where the API server takes it (as a merge
 * patch: these kinds have no list merge keys). CRD-style kinds never take strategic merge patch.
 */
function patchMediaTypes(kind: KindInfo): string[] {
  return [
    'application/json-patch+json',
    'application/merge-patch+json',
    ...(kind.group === '' ? ['application/strategic-merge-patch+json'] : []),
    'application/apply-patch+yaml',
  ];
}

type Action = 'get' | 'list' | 'post' | 'put' | 'patch' | 'delete' | 'deletecollection';

interface OperationSpec {
  action: Action;
  /** The verb prefix of the operation id: read, list, create, replace, patch, delete. */
  verb: string;
  /** What follows the group-version in the operation id: NamespacedInstance, InstanceForAllNamespaces... */
  suffix: string;
  description: string;
  parameters?: Parameter[];
  requestBody?: JsonSchema;
  responses: JsonSchema;
}

function operation(kind: KindInfo, spec: OperationSpec): JsonSchema {
  const { infix, tag } = groupVersionNames(kind);
  return {
    description: spec.description,
    operationId: `${spec.verb}${infix}${spec.suffix}`,
    ...(spec.parameters ? { parameters: spec.parameters } : {}),
    ...(spec.requestBody ? { requestBody: spec.requestBody } : {}),
    responses: spec.responses,
    tags: [tag],
    'x-kubernetes-action': spec.action,
    'x-kubernetes-group-version-kind': gvk(kind),
  };
}

/** Every path of one kind: collection, all-namespaces list, item and status. */
function kindPaths(kind: KindInfo): Record<string, JsonSchema> {
  const namespaced = kind.scope === 'Namespaced';
  const prefix = `/${documentPath(kind.group, kind.version)}`;
  const collection = namespaced
    ? `${prefix}/namespaces/{namespace}/${kind.plural}`
    : `${prefix}/${kind.plural}`;
  const item = `${collection}/{name}`;
  const scoped = `${namespaced ? 'Namespaced' : ''}${kind.kind}`;
  const object = schemaName(kind);
  const list = schemaName(kind, kind.listKind);
  const status = `${metaPrefix}Status`;
  const scopeParameters = namespaced ? [namespaceParameter] : [];
  const objectBody = { content: content(object, ['*/*']), required: true };
  const patchBody = { content: content(`${metaPrefix}Patch`, patchMediaTypes(kind)), required: true };
  const deleteBody = { content: content(`${metaPrefix}DeleteOptions`, ['*/*']) };
  const listResponses = responses(list, [200], [json, `${json};stream=watch`]);

  const paths: Record<string, JsonSchema> = {
    [collection]: {
      parameters: [...scopeParameters, parameters.pretty],
      get: operation(kind, {
        action: 'list',
        verb: 'list',
        suffix: scoped,
        description: `list or watch objects of kind ${kind.kind}`,
        parameters: listParameters,
        responses: listResponses,
      }),
      post: operation(kind, {
        action: 'post',
        verb: 'create',
        suffix: scoped,
        description: `create a ${kind.kind}`,
        parameters: writeParameters,
        requestBody: objectBody,
        responses: responses(object, [200, 201, 202]),
      }),
      delete: operation(kind, {
        action: 'deletecollection',
        verb: 'delete',
        suffix: `Collection${scoped}`,
        description: `delete collection of ${kind.kind}`,
        parameters: deleteCollectionParameters,
        requestBody: deleteBody,
        responses: responses(status, [200]),
      }),
    },
  };
  if (namespaced) {
    paths[`${prefix}/${kind.plural}`] = {
      parameters: [parameters.pretty],
      get: operation(kind, {
        action: 'list',
        verb: 'list',
        suffix: `${kind.kind}ForAllNamespaces`,
        description: `list or watch objects of kind ${kind.kind}`,
        parameters: listParameters,
        responses: listResponses,
      }),
    };
  }
  paths[item] = {
    parameters: [nameParameter(kind), ...scopeParameters, parameters.pretty],
    get: operation(kind, {
      action: 'get',
      verb: 'read',
      suffix: scoped,
      description: `read the specified ${kind.kind}`,
      responses: responses(object, [200]),
    }),
    put: operation(kind, {
      action: 'put',
      verb: 'replace',
      suffix: scoped,
      description: `replace the specified ${kind.kind}`,
      parameters: writeParameters,
      requestBody: objectBody,
      responses: responses(object, [200, 201]),
    }),
    patch: operation(kind, {
      action: 'patch',
      verb: 'patch',
      suffix: scoped,
      description: `partially update the specified ${kind.kind}`,
      parameters: patchParameters,
      requestBody: patchBody,
      responses: responses(object, [200, 201]),
    }),
    delete: operation(kind, {
      action: 'delete',
      verb: 'delete',
      suffix: scoped,
      description: `delete a ${kind.kind}`,
      parameters: deleteParameters,
      requestBody: deleteBody,
      responses: responses(status, [200, 202]),
    }),
  };
  if (kind.statusSubresource) {
    paths[`${item}/status`] = {
      parameters: [nameParameter(kind), ...scopeParameters, parameters.pretty],
      get: operation(kind, {
        action: 'get',
        verb: 'read',
        suffix: `${scoped}Status`,
        description: `read status of the specified ${kind.kind}`,
        responses: responses(object, [200]),
      }),
      put: operation(kind, {
        action: 'put',
        verb: 'replace',
        suffix: `${scoped}Status`,
        description: `replace status of the specified ${kind.kind}`,
        parameters: writeParameters,
        requestBody: objectBody,
        responses: responses(object, [200, 201]),
      }),
      patch: operation(kind, {
        action: 'patch',
        verb: 'patch',
        suffix: `${scoped}Status`,
        description: `partially update status of the specified ${kind.kind}`,
        parameters: patchParameters,
        requestBody: patchBody,
        responses: responses(object, [200, 201]),
      }),
    };
  }
  return paths;
}

// --- Documents -----------------------------------------------------------------------------------

/**
 * One OpenAPI 3.0 document per group-version of `kinds`, keyed by its path under /openapi/v3
 * (api/v1, apis/loam.dev/v1alpha1, apis/coordination.k8s.io/v1).
 */
export function openapiDocuments(kinds: readonly KindInfo[]): Map<string, object> {
  const byGroupVersion = new Map<string, KindInfo[]>();
  for (const kind of kinds) {
    const path = documentPath(kind.group, kind.version);
    byGroupVersion.set(path, [...(byGroupVersion.get(path) ?? []), kind]);
  }
  const documents = new Map<string, object>();
  for (const [path, members] of byGroupVersion) {
    const [first] = members as [KindInfo, ...KindInfo[]];
    const schemas: Record<string, JsonSchema> = {};
    const paths: Record<string, JsonSchema> = {};
    for (const kind of members) {
      schemas[schemaName(kind)] = objectSchema(kind);
      schemas[schemaName(kind, kind.listKind)] = listSchema(kind);
      Object.assign(paths, kindPaths(kind));
    }
    Object.assign(schemas, metaSchemas(first.group, first.version));
    documents.set(path, {
      openapi: '3.0.0',
      info: { title: 'Loam', version: 'unversioned' },
      paths,
      components: { schemas },
    });
  }
  return documents;
}

/**
 * The ETag kube-apiserver gives a document: the SHA-512 of the bytes it serves, in upper-case hex.
 * The API server must serve exactly `JSON.stringify(document)` for the index's hashes to hold.
 */
export function openapiDocumentHash(document: object): string {
  return createHash('sha512').update(JSON.stringify(document)).digest('hex').toUpperCase();
}

/** The /openapi/v3 index: where each group-version's document is, with its hash for caching. */
export function openapiIndex(documents: Map<string, object>): object {
  return {
    paths: Object.fromEntries(
      [...documents].map(([path, document]) => [
        path,
        { serverRelativeURL: `/openapi/v3/${path}?hash=${openapiDocumentHash(document)}` },
      ]),
    ),
  };
}
