/**
 * Request bodies in Kubernetes protobuf (application/vnd.kubernetes.protobuf): the decoder against
 * bodies real kubectl sent and bodies encoded here with the same .proto types, and the real kubectl
 * 1.33 and 1.27 against `loam up`, whose typed commands send built-in kinds this way.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import type protobuf from 'protobufjs';
import {
  decodeKubernetesProtobuf,
  loadProtoRoot,
  protobufContentType,
} from '../../controllers/apiserver/protobuf.js';
import type { ControlPlane } from '../../controllers/up.js';
import { LoamError } from '../../crds/errors.js';
import { apiClient } from '../harness/https.js';
import { kubectl } from '../harness/kubectl.js';
import { startPlane, tempDir } from '../harness/plane.js';

const root = loadProtoRoot(
  'k8s/runtime.proto',
  'k8s/core.proto',
  'k8s/coordination.proto',
  'k8s/authorization.proto',
  'k8s/authentication.proto',
);
const meta = 'k8s.io.apimachinery.pkg.apis.meta.v1';

/** `object` as `message`, wrapped as a Go client does: "k8s\0" and a runtime.Unknown. */
function encode(apiVersion: string, kind: string, message: string, object: Record<string, unknown>): Buffer {
  const type = root.lookupType(message);
  const unknown = root.lookupType('k8s.io.apimachinery.pkg.runtime.Unknown');
  const raw = type.encode(type.fromObject(object)).finish();
  const envelope = unknown.encode(unknown.fromObject({ typeMeta: { apiVersion, kind }, raw })).finish();
  return Buffer.concat([Buffer.from('k8s\0', 'latin1'), envelope]);
}

/** Go writes every non-pointer field of ObjectMeta, zero or not: these are its zero values. */
const emptyMeta = {
  name: '',
  generateName: '',
  namespace: '',
  selfLink: '',
  uid: '',
  resourceVersion: '',
  generation: 0,
  creationTimestamp: {},
};

/** Request bodies captured from kubectl 1.33 with -v=9. */
const captured = {
  // kubectl create namespace zz
  namespace:
    '6b3873000a0f0a02763112094e616d657370616365121a0a120a027a7a12001a0022002a0032003800420012' +
    '001a020a001a002200',
  // kubectl -n t127 create secret generic s2 --from-literal=a=b --from-literal=bin=x
  secret:
    '6b3873000a0c0a0276311206536563726574122c0a160a02733212001a047431323722002a00320038004200' +
    '12060a016112016212080a0362696e1201781a001a002200',
  // kubectl auth can-i list instances
  accessReview:
    '6b3873000a320a17617574686f72697a6174696f6e2e6b38732e696f2f7631121753656c665375626a656374' +
    '416363657373526576696577124a0a100a0012001a0022002a00320038004200122c0a2a0a0764656661756c' +
    '7412046c6973741a086c6f616d2e64657622002a09696e7374616e63657332003a001a08080012001a002000' +
    '1a002200',
  // kubectl auth whoami
  selfReview:
    '6b3873000a2d0a1861757468656e7469636174696f6e2e6b38732e696f2f7631121153656c665375626a6563' +
    '74526576696577121a0a100a0012001a0022002a0032003800420012060a040a0012001a002200',
};

function fromHex(hex: string): Buffer {
  return Buffer.from(hex, 'hex');
}

function decodeError(body: Buffer): LoamError {
  try {
    decodeKubernetesProtobuf(body);
  } catch (err) {
    assert.ok(err instanceof LoamError, `expected a LoamError, got ${String(err)}`);
    return err;
  }
  throw new Error('expected the body to be refused');
}

describe('Kubernetes protobuf request bodies', () => {
  it('keeps the field numbers of the upstream generated.proto files', () => {
    const numbers: [string, Record<string, number>][] = [
      ['k8s.io.apimachinery.pkg.runtime.TypeMeta', { apiVersion: 1, kind: 2 }],
      [
        'k8s.io.apimachinery.pkg.runtime.Unknown',
        { typeMeta: 1, raw: 2, contentEncoding: 3, contentType: 4 },
      ],
      [
        `${meta}.ObjectMeta`,
        {
          name: 1,
          generateName: 2,
          namespace: 3,
          selfLink: 4,
          uid: 5,
          resourceVersion: 6,
          generation: 7,
          creationTimestamp: 8,
          deletionTimestamp: 9,
          deletionGracePeriodSeconds: 10,
          labels: 11,
          annotations: 12,
          ownerReferences: 13,
          finalizers: 14,
          managedFields: 17,
        },
      ],
      [
        `${meta}.OwnerReference`,
        { kind: 1, name: 3, uid: 4, apiVersion: 5, controller: 6, blockOwnerDeletion: 7 },
      ],
      [
        `${meta}.ManagedFieldsEntry`,
        { manager: 1, operation: 2, apiVersion: 3, time: 4, fieldsType: 6, fieldsV1: 7, subresource: 8 },
      ],
      [`${meta}.FieldsV1`, { Raw: 1 }],
      [`${meta}.Time`, { seconds: 1, nanos: 2 }],
      [`${meta}.MicroTime`, { seconds: 1, nanos: 2 }],
      [
        `${meta}.DeleteOptions`,
        {
          gracePeriodSeconds: 1,
          preconditions: 2,
          orphanDependents: 3,
          propagationPolicy: 4,
          dryRun: 5,
          ignoreStoreReadErrorWithClusterBreakingPotential: 6,
        },
      ],
      [`${meta}.Preconditions`, { uid: 1, resourceVersion: 2 }],
      ['k8s.io.api.core.v1.Namespace', { metadata: 1, spec: 2, status: 3 }],
      ['k8s.io.api.core.v1.NamespaceSpec', { finalizers: 1 }],
      ['k8s.io.api.core.v1.NamespaceStatus', { phase: 1, conditions: 2 }],
      [
        'k8s.io.api.core.v1.NamespaceCondition',
        { type: 1, status: 2, lastTransitionTime: 4, reason: 5, message: 6 },
      ],
      ['k8s.io.api.core.v1.Secret', { metadata: 1, data: 2, type: 3, stringData: 4, immutable: 5 }],
      [
        'k8s.io.api.core.v1.Event',
        {
          metadata: 1,
          involvedObject: 2,
          reason: 3,
          message: 4,
          source: 5,
          firstTimestamp: 6,
          lastTimestamp: 7,
          count: 8,
          type: 9,
          eventTime: 10,
          series: 11,
          action: 12,
          related: 13,
          reportingComponent: 14,
          reportingInstance: 15,
        },
      ],
      ['k8s.io.api.core.v1.EventSeries', { count: 1, lastObservedTime: 2 }],
      ['k8s.io.api.core.v1.EventSource', { component: 1, host: 2 }],
      [
        'k8s.io.api.core.v1.ObjectReference',
        { kind: 1, namespace: 2, name: 3, uid: 4, apiVersion: 5, resourceVersion: 6, fieldPath: 7 },
      ],
      ['k8s.io.api.coordination.v1.Lease', { metadata: 1, spec: 2 }],
      [
        'k8s.io.api.coordination.v1.LeaseSpec',
        {
          holderIdentity: 1,
          leaseDurationSeconds: 2,
          acquireTime: 3,
          renewTime: 4,
          leaseTransitions: 5,
          strategy: 6,
          preferredHolder: 7,
        },
      ],
      ['k8s.io.api.authorization.v1.SelfSubjectAccessReview', { metadata: 1, spec: 2, status: 3 }],
      [
        'k8s.io.api.authorization.v1.SelfSubjectAccessReviewSpec',
        { resourceAttributes: 1, nonResourceAttributes: 2 },
      ],
      [
        'k8s.io.api.authorization.v1.ResourceAttributes',
        {
          namespace: 1,
          verb: 2,
          group: 3,
          version: 4,
          resource: 5,
          subresource: 6,
          name: 7,
          fieldSelector: 8,
          labelSelector: 9,
        },
      ],
      ['k8s.io.api.authorization.v1.NonResourceAttributes', { path: 1, verb: 2 }],
      [
        'k8s.io.api.authorization.v1.SubjectAccessReviewStatus',
        { allowed: 1, reason: 2, evaluationError: 3, denied: 4 },
      ],
      ['k8s.io.api.authentication.v1.SelfSubjectReview', { metadata: 1, status: 2 }],
      ['k8s.io.api.authentication.v1.SelfSubjectReviewStatus', { userInfo: 1 }],
      ['k8s.io.api.authentication.v1.UserInfo', { username: 1, uid: 2, groups: 3, extra: 4 }],
    ];
    for (const [message, fields] of numbers) {
      const type: protobuf.Type = root.lookupType(message);
      const actual = Object.fromEntries(type.fieldsArray.map((f) => [f.name, f.id]));
      assert.deepEqual(actual, fields, message);
    }
  });

  it('reads what kubectl 1.33 sends: zero fields dropped as omitempty drops them', () => {
    assert.deepEqual(decodeKubernetesProtobuf(fromHex(captured.namespace)), {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'zz' },
      spec: {},
      status: {},
    });
    assert.deepEqual(decodeKubernetesProtobuf(fromHex(captured.secret)), {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 's2', namespace: 't127' },
      data: { a: 'Yg==', bin: 'eA==' },
    });
    assert.deepEqual(decodeKubernetesProtobuf(fromHex(captured.accessReview)), {
      apiVersion: 'authorization.k8s.io/v1',
      kind: 'SelfSubjectAccessReview',
      metadata: {},
      spec: {
        resourceAttributes: { namespace: 'default', verb: 'list', group: 'loam.dev', resource: 'instances' },
      },
      // No omitempty on allowed: kube's JSON says false.
      status: { allowed: false },
    });
    assert.deepEqual(decodeKubernetesProtobuf(fromHex(captured.selfReview)), {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'SelfSubjectReview',
      metadata: {},
      status: { userInfo: {} },
    });
  });

  it('decodes a Namespace with every ObjectMeta field', () => {
    const fields = { 'f:metadata': { 'f:labels': { '.': {}, 'f:team': {} } } };
    const body = encode('v1', 'Namespace', 'k8s.io.api.core.v1.Namespace', {
      metadata: {
        ...emptyMeta,
        name: 'lab',
        uid: '6a1f',
        resourceVersion: '42',
        generation: 3,
        creationTimestamp: { seconds: 1714564800 },
        deletionTimestamp: { seconds: 1714564830, nanos: 5 },
        deletionGracePeriodSeconds: 0,
        labels: { team: 'net' },
        annotations: { note: '' },
        ownerReferences: [
          { apiVersion: 'loam.dev/v1alpha1', kind: 'Network', name: 'lan', uid: 'u1', controller: false },
        ],
        finalizers: ['kubernetes'],
        managedFields: [
          {
            manager: 'kubectl',
            operation: 'Update',
            apiVersion: 'v1',
            time: { seconds: 1714564800 },
            fieldsType: 'FieldsV1',
            fieldsV1: { Raw: Buffer.from(JSON.stringify(fields)) },
            subresource: '',
          },
        ],
      },
      spec: { finalizers: ['kubernetes'] },
      status: {
        phase: 'Terminating',
        conditions: [
          {
            type: 'NamespaceContentRemaining',
            status: 'False',
            lastTransitionTime: { seconds: 1714564800 },
            reason: '',
            message: '',
          },
        ],
      },
    });
    assert.deepEqual(decodeKubernetesProtobuf(body), {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: {
        name: 'lab',
        uid: '6a1f',
        resourceVersion: '42',
        generation: 3,
        creationTimestamp: '2024-05-01T12:00:00Z',
        // metav1.Time is whole seconds: kube drops the nanos.
        deletionTimestamp: '2024-05-01T12:00:30Z',
        // A pointer: zero is a value.
        deletionGracePeriodSeconds: 0,
        labels: { team: 'net' },
        annotations: { note: '' },
        ownerReferences: [
          { apiVersion: 'loam.dev/v1alpha1', kind: 'Network', name: 'lan', uid: 'u1', controller: false },
        ],
        finalizers: ['kubernetes'],
        managedFields: [
          {
            manager: 'kubectl',
            operation: 'Update',
            apiVersion: 'v1',
            time: '2024-05-01T12:00:00Z',
            fieldsType: 'FieldsV1',
            fieldsV1: fields,
          },
        ],
      },
      spec: { finalizers: ['kubernetes'] },
      status: {
        phase: 'Terminating',
        conditions: [
          { type: 'NamespaceContentRemaining', status: 'False', lastTransitionTime: '2024-05-01T12:00:00Z' },
        ],
      },
    });
  });

  it('writes Secret data as base64 and keeps stringData, type and immutable', () => {
    const binary = Buffer.from([0, 1, 2, 253, 254, 255]);
    const body = encode('v1', 'Secret', 'k8s.io.api.core.v1.Secret', {
      metadata: { ...emptyMeta, name: 'creds', namespace: 'lab' },
      immutable: false,
      data: { a: Buffer.from('b'), key: binary, empty: Buffer.alloc(0) },
      stringData: { user: 'admin' },
      type: 'Opaque',
    });
    assert.deepEqual(decodeKubernetesProtobuf(body), {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'creds', namespace: 'lab' },
      immutable: false,
      data: { a: 'Yg==', key: binary.toString('base64'), empty: '' },
      stringData: { user: 'admin' },
      type: 'Opaque',
    });
  });

  it('decodes a SelfSubjectAccessReview about a non-resource path', () => {
    const body = encode(
      'authorization.k8s.io/v1',
      'SelfSubjectAccessReview',
      'k8s.io.api.authorization.v1.SelfSubjectAccessReview',
      {
        metadata: emptyMeta,
        spec: { nonResourceAttributes: { path: '/healthz', verb: 'get' } },
        status: { allowed: false, denied: false, reason: '', evaluationError: '' },
      },
    );
    assert.deepEqual(decodeKubernetesProtobuf(body), {
      apiVersion: 'authorization.k8s.io/v1',
      kind: 'SelfSubjectAccessReview',
      metadata: {},
      spec: { nonResourceAttributes: { path: '/healthz', verb: 'get' } },
      status: { allowed: false },
    });
  });

  it('writes Event times as RFC 3339: Time in seconds, MicroTime with six digits', () => {
    const body = encode('v1', 'Event', 'k8s.io.api.core.v1.Event', {
      metadata: { ...emptyMeta, name: 'lan.17c', namespace: 'lab' },
      involvedObject: {
        kind: 'Network',
        namespace: 'lab',
        name: 'lan',
        uid: 'u1',
        apiVersion: 'loam.dev/v1alpha1',
        resourceVersion: '',
        fieldPath: '',
      },
      reason: 'Applied',
      message: 'config applied',
      source: { component: 'loam-controller', host: '' },
      firstTimestamp: { seconds: 1714564800, nanos: 999_000_000 },
      lastTimestamp: {},
      count: 2,
      type: 'Normal',
      eventTime: { seconds: 1714564800, nanos: 123_456_789 },
      series: { count: 2, lastObservedTime: { seconds: 1714564801, nanos: 5_000 } },
      action: '',
      reportingComponent: '',
      reportingInstance: '',
    });
    assert.deepEqual(decodeKubernetesProtobuf(body), {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name: 'lan.17c', namespace: 'lab' },
      involvedObject: {
        kind: 'Network',
        namespace: 'lab',
        name: 'lan',
        uid: 'u1',
        apiVersion: 'loam.dev/v1alpha1',
      },
      reason: 'Applied',
      message: 'config applied',
      source: { component: 'loam-controller' },
      firstTimestamp: '2024-05-01T12:00:00Z',
      count: 2,
      type: 'Normal',
      eventTime: '2024-05-01T12:00:00.123456Z',
      series: { count: 2, lastObservedTime: '2024-05-01T12:00:01.000005Z' },
      // No omitempty on these two.
      reportingComponent: '',
      reportingInstance: '',
    });
  });

  it('decodes a Lease, keeping its pointer fields at zero', () => {
    const body = encode('coordination.k8s.io/v1', 'Lease', 'k8s.io.api.coordination.v1.Lease', {
      metadata: { ...emptyMeta, name: 'loam-controller', namespace: 'loam-system' },
      spec: {
        holderIdentity: 'node-a',
        leaseDurationSeconds: 15,
        acquireTime: { seconds: 1714564800, nanos: 0 },
        renewTime: { seconds: 1714564810, nanos: 250_000_000 },
        leaseTransitions: 0,
      },
    });
    assert.deepEqual(decodeKubernetesProtobuf(body), {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: 'loam-controller', namespace: 'loam-system' },
      spec: {
        holderIdentity: 'node-a',
        leaseDurationSeconds: 15,
        acquireTime: '2024-05-01T12:00:00.000000Z',
        renewTime: '2024-05-01T12:00:10.250000Z',
        leaseTransitions: 0,
      },
    });
  });

  it('decodes DeleteOptions under any group version', () => {
    for (const apiVersion of ['v1', 'meta.k8s.io/v1', 'coordination.k8s.io/v1']) {
      const body = encode(apiVersion, 'DeleteOptions', `${meta}.DeleteOptions`, {
        gracePeriodSeconds: 0,
        preconditions: { uid: 'u1', resourceVersion: '7' },
        propagationPolicy: 'Foreground',
        dryRun: ['All'],
      });
      assert.deepEqual(decodeKubernetesProtobuf(body), {
        apiVersion,
        kind: 'DeleteOptions',
        gracePeriodSeconds: 0,
        preconditions: { uid: 'u1', resourceVersion: '7' },
        propagationPolicy: 'Foreground',
        dryRun: ['All'],
      });
    }
  });

  it('refuses a kind it has no message for with 415, naming the kind', () => {
    const body = encode('v1', 'ConfigMap', 'k8s.io.api.core.v1.Namespace', { metadata: { name: 'x' } });
    const err = decodeError(body);
    assert.equal(err.code, 'UnsupportedMediaType');
    assert.match(err.message, /ConfigMap \(v1\)/);
    assert.match(err.message, /application\/json/);
    const wrongVersion = decodeError(
      encode('coordination.k8s.io/v1beta1', 'Lease', 'k8s.io.api.coordination.v1.Lease', {}),
    );
    assert.equal(wrongVersion.code, 'UnsupportedMediaType');
    assert.match(wrongVersion.message, /Lease \(coordination\.k8s\.io\/v1beta1\)/);
    const unknown = root.lookupType('k8s.io.apimachinery.pkg.runtime.Unknown');
    const gzipped = unknown.encode(
      unknown.fromObject({ typeMeta: { apiVersion: 'v1', kind: 'Namespace' }, contentEncoding: 'gzip' }),
    );
    const encoded = decodeError(Buffer.concat([Buffer.from('k8s\0', 'latin1'), gzipped.finish()]));
    assert.equal(encoded.code, 'UnsupportedMediaType');
    assert.match(encoded.message, /contentEncoding "gzip"/);
  });

  it('refuses malformed bodies with 400', () => {
    const cases: [string, Buffer][] = [
      ['JSON sent with the protobuf content type', Buffer.from('{"kind":"Namespace"}')],
      ['too short for the prefix', Buffer.from('k8s')],
      [
        'garbage after the prefix',
        Buffer.concat([Buffer.from('k8s\0', 'latin1'), Buffer.from([0xff, 0xff, 0xff])]),
      ],
      ['no kind', Buffer.from('k8s\0', 'latin1')],
      ['a truncated object', fromHex(captured.namespace).subarray(0, 30)],
      [
        'managed fields that are not JSON',
        encode('v1', 'Namespace', 'k8s.io.api.core.v1.Namespace', {
          metadata: { name: 'x', managedFields: [{ manager: 'm', fieldsV1: { Raw: Buffer.from('{nope') } }] },
        }),
      ],
      [
        'a time past year 9999',
        encode('v1', 'Namespace', 'k8s.io.api.core.v1.Namespace', {
          metadata: { name: 'x', creationTimestamp: { seconds: 253402300800 } },
        }),
      ],
    ];
    for (const [name, body] of cases) {
      assert.equal(decodeError(body).code, 'BadRequest', name);
    }
  });
});

describe('kubectl sending protobuf to loam up', function () {
  this.timeout(120_000);
  let dir: string;
  let plane: ControlPlane;

  before(async () => {
    dir = tempDir('protobuf');
    plane = await startPlane(dir);
  });
  after(async () => {
    await plane?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** One request to the API server as the admin, the way a typed Go client sends it. */
  async function send(method: string, path: string, body?: Buffer) {
    const res = await apiClient(plane.kubeconfigPath)(method, path, body, {
      accept: `${protobufContentType}, application/json`,
      ...(body ? { 'content-type': protobufContentType } : {}),
    });
    return { code: res.code, contentType: String(res.headers['content-type'] ?? ''), json: res.json ?? {} };
  }

  for (const version of ['1.33', '1.27']) {
    describe(`kubectl ${version}`, () => {
      const ns = `pb-${version.replace('.', '')}`;

      it('creates a namespace and a secret, and reads them back', async () => {
        const k = kubectl(version, plane.kubeconfigPath);
        const created = await k.run(['create', 'namespace', ns, '-v=8']);
        assert.equal(created.code, 0, created.stderr);
        assert.match(created.stdout, new RegExp(`namespace/${ns} created`));
        if (version === '1.33') {
          // 1.33 sends built-in kinds as protobuf (1.27 still sends JSON) and takes JSON back.
          assert.match(created.stderr, /Content-Type: application\/vnd\.kubernetes\.protobuf/);
          assert.match(created.stderr, /"Response Body" body="\{/);
        }
        assert.match(await k('get', 'ns', ns), new RegExp(`^${ns}\\s+Active`, 'm'));
        assert.match(
          await k('-n', ns, 'create', 'secret', 'generic', 's', '--from-literal=a=b'),
          /secret\/s created/,
        );
        assert.equal(await k('-n', ns, 'get', 'secret', 's', '-o', 'jsonpath={.data.a}'), 'Yg==');
      });

      it('answers auth can-i as admin', async () => {
        const k = kubectl(version, plane.kubeconfigPath);
        const result = await k.run(['auth', 'can-i', 'list', 'instances']);
        assert.equal(result.code, 0, result.stderr);
        assert.equal(result.stdout.trim(), 'yes');
        const path = await k.run(['auth', 'can-i', 'get', '/healthz']);
        assert.equal(path.stdout.trim(), 'yes');
      });

      it('answers auth whoami', async () => {
        const out = await kubectl(version, plane.kubeconfigPath)('auth', 'whoami');
        assert.match(out, /Username\s+admin/);
        assert.match(out, /system:masters/);
      });
    });
  }

  it('stores an Event and a Lease sent as protobuf, and honours protobuf DeleteOptions', async () => {
    const event = encode('v1', 'Event', 'k8s.io.api.core.v1.Event', {
      metadata: { ...emptyMeta, name: 'pb.1', namespace: 'default' },
      involvedObject: { kind: 'Network', namespace: 'default', name: 'lan', apiVersion: 'loam.dev/v1alpha1' },
      reason: 'Applied',
      message: 'applied',
      source: { component: 'test' },
      firstTimestamp: { seconds: 1714564800 },
      lastTimestamp: { seconds: 1714564800 },
      count: 1,
      type: 'Normal',
      eventTime: {},
      reportingComponent: '',
      reportingInstance: '',
    });
    const posted = await send('POST', '/api/v1/namespaces/default/events', event);
    assert.equal(posted.code, 201, JSON.stringify(posted.json));
    assert.match(posted.contentType, /^application\/json/);
    assert.equal(posted.json.firstTimestamp, '2024-05-01T12:00:00Z');
    assert.deepEqual(posted.json.involvedObject, {
      kind: 'Network',
      namespace: 'default',
      name: 'lan',
      apiVersion: 'loam.dev/v1alpha1',
    });

    const lease = encode('coordination.k8s.io/v1', 'Lease', 'k8s.io.api.coordination.v1.Lease', {
      metadata: { ...emptyMeta, name: 'pb', namespace: 'default' },
      spec: {
        holderIdentity: 'a',
        leaseDurationSeconds: 15,
        renewTime: { seconds: 1714564800, nanos: 1_000 },
      },
    });
    const leases = '/apis/coordination.k8s.io/v1/namespaces/default/leases';
    const created = await send('POST', leases, lease);
    assert.equal(created.code, 201, JSON.stringify(created.json));
    assert.deepEqual(created.json.spec, {
      holderIdentity: 'a',
      leaseDurationSeconds: 15,
      renewTime: '2024-05-01T12:00:00.000001Z',
    });

    const deleteOptions = (uid: string) =>
      encode('coordination.k8s.io/v1', 'DeleteOptions', `${meta}.DeleteOptions`, { preconditions: { uid } });
    const stale = await send('DELETE', `${leases}/pb`, deleteOptions('not-the-uid'));
    assert.equal(stale.code, 409, JSON.stringify(stale.json));
    const uid = (created.json.metadata as { uid: string }).uid;
    const deleted = await send('DELETE', `${leases}/pb`, deleteOptions(uid));
    assert.equal(deleted.code, 200, JSON.stringify(deleted.json));
  });

  it('answers a kind it cannot decode with 415 and garbage with 400, as JSON Status', async () => {
    const configMap = encode('v1', 'ConfigMap', 'k8s.io.api.core.v1.Namespace', { metadata: { name: 'x' } });
    const unsupported = await send('POST', '/api/v1/namespaces', configMap);
    assert.equal(unsupported.code, 415);
    assert.equal(unsupported.json.reason, 'UnsupportedMediaType');
    assert.match(unsupported.json.message as string, /ConfigMap/);
    const garbage = await send('POST', '/api/v1/namespaces', Buffer.from('not protobuf'));
    assert.equal(garbage.code, 400);
    assert.equal(garbage.json.kind, 'Status');
    assert.match(garbage.contentType, /^application\/json/);
  });
});
