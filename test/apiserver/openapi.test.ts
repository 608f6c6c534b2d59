import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { openapiDocuments, openapiIndex, schemaName } from '../../controllers/apiserver/openapi.js';
import {
  eventKind,
  leaseKind,
  namespaceKind,
  secretKind,
  servedKindFor,
  servedKinds,
} from '../../crds/builtin.js';
import { crdFor } from '../../crds/crd.js';
import type { KindInfo } from '../../crds/kind.js';
import { kinds as loamKinds } from '../../crds/v1alpha1/index.js';
import { validateObject } from '../../crds/validate.js';
import { invalid } from '../harness/invalid.js';

type Json = { [key: string]: unknown };

interface Operation {
  operationId: string;
  parameters?: { name: string; in: string }[];
  requestBody?: { content: Record<string, unknown> };
  'x-kubernetes-action': string;
  'x-kubernetes-group-version-kind': { group: string; version: string; kind: string };
}

interface Document {
  openapi: string;
  paths: Record<string, Record<string, unknown>>;
  components: { schemas: Record<string, Json> };
}

const methods = ['get', 'put', 'post', 'delete', 'patch'] as const;

const documents = openapiDocuments(servedKinds);

function documentFor(kind: KindInfo): Document {
  const key = kind.group === '' ? `api/${kind.version}` : `apis/${kind.group}/${kind.version}`;
  const document = documents.get(key);
  assert.ok(document, `no document ${key}`);
  return document as Document;
}

function operations(document: Document): [path: string, method: string, operation: Operation][] {
  return Object.entries(document.paths).flatMap(([path, item]) =>
    methods.flatMap((method) =>
      item[method] === undefined ? [] : [[path, method, item[method] as Operation] as const],
    ),
  );
}

/** Every `$ref` anywhere in `value`, with where it is. */
function refs(value: unknown, where = ''): [string, string, Json][] {
  if (Array.isArray(value)) return value.flatMap((entry, i) => refs(entry, `${where}[${i}]`));
  if (typeof value !== 'object' || value === null) return [];
  const node = value as Json;
  const own: [string, string, Json][] = typeof node.$ref === 'string' ? [[where, node.$ref, node]] : [];
  return [...own, ...Object.entries(node).flatMap(([key, child]) => refs(child, `${where}/${key}`))];
}

describe('controllers/apiserver/openapi', () => {
  it('makes one OpenAPI 3.0 document per served group-version', () => {
    assert.deepEqual(
      [...documents.keys()],
      ['apis/loam.dev/v1alpha1', 'api/v1', 'apis/coordination.k8s.io/v1'],
    );
    for (const document of documents.values()) assert.equal((document as Document).openapi, '3.0.0');
  });

  it('names schemas the way kube-apiserver does', () => {
    const [instance] = loamKinds;
    assert.ok(instance);
    assert.equal(schemaName(instance), 'dev.loam.v1alpha1.Instance');
    assert.equal(schemaName(namespaceKind), 'io.k8s.api.core.v1.Namespace');
    assert.equal(schemaName(leaseKind, leaseKind.listKind), 'io.k8s.api.coordination.v1.LeaseList');
  });

  for (const kind of servedKinds) {
    describe(`${kind.kind}.${kind.group || 'core'}`, () => {
      const document = documentFor(kind);

      it('has object and list schemas carrying their group-version-kind', () => {
        const object = document.components.schemas[schemaName(kind)];
        assert.ok(object, `no schema ${schemaName(kind)}`);
        assert.deepEqual(object['x-kubernetes-group-version-kind'], [
          { group: kind.group, version: kind.version, kind: kind.kind },
        ]);
        const properties = object.properties as Record<string, Json>;
        assert.deepEqual(properties.metadata?.allOf, [
          { $ref: '#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta' },
        ]);
        assert.equal(properties.apiVersion?.type, 'string');
        const list = document.components.schemas[schemaName(kind, kind.listKind)];
        assert.ok(list);
        assert.deepEqual(list['x-kubernetes-group-version-kind'], [
          { group: kind.group, version: kind.version, kind: kind.listKind },
        ]);
        assert.deepEqual(list.required, ['items']);
      });

      it('has collection, item and (only with the subresource) status paths', () => {
        const prefix = kind.group === '' ? `/api/${kind.version}` : `/apis/${kind.group}/${kind.version}`;
        const collection =
          kind.scope === 'Namespaced'
            ? `${prefix}/namespaces/{namespace}/${kind.plural}`
            : `${prefix}/${kind.plural}`;
        const gvk = { group: kind.group, version: kind.version, kind: kind.kind };
        const expected: [string, string, string][] = [
          [collection, 'get', 'list'],
          [collection, 'post', 'post'],
          [collection, 'delete', 'deletecollection'],
          [`${collection}/{name}`, 'get', 'get'],
          [`${collection}/{name}`, 'put', 'put'],
          [`${collection}/{name}`, 'patch', 'patch'],
          [`${collection}/{name}`, 'delete', 'delete'],
        ];
        if (kind.scope === 'Namespaced') expected.push([`${prefix}/${kind.plural}`, 'get', 'list']);
        if (kind.statusSubresource) {
          for (const [method, action] of [
            ['get', 'get'],
            ['put', 'put'],
            ['patch', 'patch'],
          ] as const) {
            expected.push([`${collection}/{name}/status`, method, action]);
          }
        } else {
          assert.equal(document.paths[`${collection}/{name}/status`], undefined);
        }
        for (const [path, method, action] of expected) {
          const op = document.paths[path]?.[method] as Operation | undefined;
          assert.ok(op, `no ${method} ${path}`);
          assert.equal(op['x-kubernetes-action'], action, `${method} ${path}`);
          assert.deepEqual(op['x-kubernetes-group-version-kind'], gvk, `${method} ${path}`);
        }
      });
    });
  }

  it('gives every PATCH its group-version-kind and a fieldValidation parameter, as kubectl checks', () => {
    let patches = 0;
    for (const document of documents.values()) {
      for (const [path, method, op] of operations(document as Document)) {
        const gvk = op['x-kubernetes-group-version-kind'];
        assert.ok(servedKindFor(gvk.group, servedKinds.find((k) => k.kind === gvk.kind)?.plural ?? ''));
        const names = (op.parameters ?? []).map((parameter) => parameter.name);
        if (method === 'patch' || method === 'put' || method === 'post') {
          // kubectl looks at the operation's own parameters, not the path's.
          assert.ok(names.includes('fieldValidation'), `${method} ${path} lacks fieldValidation`);
          assert.ok(names.includes('fieldManager'), `${method} ${path} lacks fieldManager`);
          assert.ok(names.includes('dryRun'), `${method} ${path} lacks dryRun`);
        }
        if (method === 'patch') {
          patches++;
          assert.ok(names.includes('force'));
          const types = Object.keys(op.requestBody?.content ?? {});
          assert.ok(types.includes('application/apply-patch+yaml'), path);
          assert.ok(types.includes('application/merge-patch+json'), path);
          assert.ok(types.includes('application/json-patch+json'), path);
          assert.equal(types.includes('application/strategic-merge-patch+json'), gvk.group === '', path);
        }
      }
    }
    // Item patch for all nine kinds, status patch for the six with the subresource.
    assert.equal(patches, 15);
  });

  it('uses kube-style operation ids, unique within each document', () => {
    const ids = [...documents.values()].flatMap((document) =>
      operations(document as Document).map(([, , op]) => op.operationId),
    );
    assert.equal(new Set(ids).size, ids.length);
    for (const id of [
      'createLoamDevV1alpha1NamespacedInstance',
      'listLoamDevV1alpha1InstanceForAllNamespaces',
      'patchLoamDevV1alpha1NamespacedInstanceStatus',
      'deleteLoamDevV1alpha1CollectionNamespacedInstance',
      'readLoamDevV1alpha1Host',
      'replaceCoreV1NamespaceStatus',
      'listCoreV1SecretForAllNamespaces',
      'patchCoordinationV1NamespacedLease',
    ]) {
      assert.ok(ids.includes(id), id);
    }
  });

  it('resolves every $ref within its document, with nothing beside it', () => {
    for (const [key, document] of documents) {
      const schemas = (document as Document).components.schemas;
      const found = refs(document);
      assert.ok(found.length > 0);
      for (const [where, target, node] of found) {
        const name = target.replace(/^#\/components\/schemas\//, '');
        assert.notEqual(name, target, `${key}${where}: ${target} is not a component reference`);
        assert.ok(schemas[name], `${key}${where}: ${target} does not resolve`);
        assert.deepEqual(Object.keys(node), ['$ref'], `${key}${where}: siblings of $ref are ignored`);
      }
    }
  });

  it('indexes every document by path with the upper-case SHA-512 of its JSON', () => {
    const index = openapiIndex(documents) as { paths: Record<string, { serverRelativeURL: string }> };
    assert.deepEqual(Object.keys(index.paths), [...documents.keys()]);
    for (const [key, document] of documents) {
      const hash = createHash('sha512').update(JSON.stringify(document)).digest('hex').toUpperCase();
      assert.match(hash, /^[0-9A-F]{128}$/);
      assert.equal(index.paths[key]?.serverRelativeURL, `/openapi/v3/${key}?hash=${hash}`);
    }
  });

  it('is deterministic, so the hashes only change when the API does', () => {
    assert.deepEqual(openapiIndex(openapiDocuments(servedKinds)), openapiIndex(documents));
  });
});

describe('crds/builtin', () => {
  it('serves the loam.dev kinds, then Namespace, Secret, Event and Lease', () => {
    assert.deepEqual(
      servedKinds.map((k) => k.kind),
      [...loamKinds.map((k) => k.kind), 'Namespace', 'Secret', 'Event', 'Lease'],
    );
    assert.equal(servedKindFor('', 'namespaces'), namespaceKind);
    assert.equal(servedKindFor('coordination.k8s.io', 'leases'), leaseKind);
    assert.equal(servedKindFor('loam.dev', 'instances')?.kind, 'Instance');
    assert.equal(servedKindFor('', 'leases'), undefined);
    assert.deepEqual(
      servedKinds.filter((k) => k.statusSubresource).map((k) => k.kind),
      [...loamKinds.map((k) => k.kind), 'Namespace'],
    );
  });

  it('leaves subresources out of a CRD for a kind without the status subresource', () => {
    const [version] = crdFor(secretKind).spec.versions;
    assert.equal(version?.subresources, undefined);
  });

  it('accepts a Namespace and defaults its phase', () => {
    const namespace = validateObject(namespaceKind, {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'tenant-a', labels: { 'kubernetes.io/metadata.name': 'tenant-a' } },
      spec: { finalizers: ['kubernetes'] },
    });
    assert.equal(namespace.status.phase, 'Active');
    const error = invalid(namespaceKind, {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'tenant.a' },
      status: { phase: 'Gone' },
    });
    assert.deepEqual(error.causes.map((cause) => cause.field).sort(), ['metadata.name', 'status.phase']);
  });

  it('accepts a Secret, defaults its type, and rejects data that is not base64', () => {
    const secret = validateObject(secretKind, {
      apiVersion: 'v1',
      kind: 'Secret',
      // Helm names release Secrets with dots: names are DNS subdomains here.
      metadata: { name: 'sh.helm.release.v1.loam.v1', namespace: 'default' },
      data: { 'wg0.conf': Buffer.from('[Interface]\n').toString('base64'), empty: '' },
      stringData: { token: 'abcdef.0123456789abcdef' },
      immutable: true,
    });
    assert.equal(secret.type, 'Opaque');
    const error = invalid(secretKind, {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'creds', namespace: 'default' },
      type: 'kubernetes.io/basic-auth',
      data: { password: 'not base64!' },
    });
    assert.deepEqual(
      error.causes.map((cause) => cause.field),
      ['data.password'],
    );
    assert.match(error.causes[0]?.message ?? '', /base64/);
    const badKey = invalid(secretKind, {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'creds', namespace: 'default' },
      stringData: { 'no/slash': 'x' },
    });
    assert.equal(badKey.causes[0]?.field, 'stringData');
  });

  it('rejects a Secret larger than 1 MiB', () => {
    const error = invalid(secretKind, {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'big', namespace: 'default' },
      stringData: { blob: 'x'.repeat(1024 * 1024 + 1) },
    });
    assert.equal(error.causes[0]?.field, 'data');
  });

  it('accepts an Event as client-go writes it, and rejects an unknown type', () => {
    const event = {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name: 'web-1.17c8f3d2a1b2c3d4', namespace: 'default' },
      involvedObject: {
        apiVersion: 'loam.dev/v1alpha1',
        kind: 'Instance',
        name: 'web-1',
        namespace: 'default',
        uid: '6f1c2a9e-0d4b-4f1e-9a57-0c2b7d3e8f10',
        resourceVersion: '42',
      },
      reason: 'Scheduled',
      message: 'Scheduled on hv1',
      source: { component: 'loam-instance-controller' },
      firstTimestamp: '2024-05-01T12:00:00Z',
      lastTimestamp: '2024-05-01T12:00:00Z',
      count: 1,
      type: 'Normal',
      eventTime: null,
      reportingComponent: 'loam-instance-controller',
      reportingInstance: '',
    };
    validateObject(eventKind, event);
    const error = invalid(eventKind, { ...event, type: 'Info', count: 'one' });
    assert.deepEqual(error.causes.map((cause) => cause.field).sort(), ['count', 'type']);
    assert.deepEqual(
      invalid(eventKind, { ...event, involvedObject: undefined }).causes.map((cause) => cause.field),
      ['involvedObject'],
    );
  });

  it('accepts a Lease as leader election writes it, and rejects a string duration', () => {
    const lease = {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: 'loam-controllers', namespace: 'loam-system' },
      spec: {
        holderIdentity: 'loam-0_6f1c2a9e',
        leaseDurationSeconds: 15,
        acquireTime: '2024-05-01T12:00:00.000000Z',
        renewTime: '2024-05-01T12:00:10.123456Z',
        leaseTransitions: 3,
      },
    };
    validateObject(leaseKind, lease);
    const error = invalid(leaseKind, { ...lease, spec: { ...lease.spec, leaseDurationSeconds: '15' } });
    assert.deepEqual(
      error.causes.map((cause) => [cause.field, cause.reason]),
      [['spec.leaseDurationSeconds', 'FieldValueInvalid']],
    );
    assert.equal(
      invalid(leaseKind, { ...lease, spec: { ...lease.spec, renewTime: 'yesterday' } }).causes[0]?.field,
      'spec.renewTime',
    );
  });
});
