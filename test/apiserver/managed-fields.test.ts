import assert from 'node:assert/strict';
import {
  applyConfiguration,
  decodeFieldsV1,
  encodeFieldsV1,
  fieldPaths,
  type ManagedFieldsEntry,
  trackUpdate,
} from '../../controllers/apiserver/managed-fields.js';
import type { ApiObject } from '../../controllers/apiserver/objects.js';
import { namespaceKind, secretKind, servedKinds } from '../../crds/builtin.js';
import { isLoamError } from '../../crds/errors.js';
import type { KindInfo } from '../../crds/kind.js';
import { instanceKind } from '../../crds/v1alpha1/index.js';

const start = Date.parse('2024-05-01T12:00:00Z');
const timeOf = (step: number) => new Date(start + step * 1000).toISOString().replace('.000Z', 'Z');

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null) {
    for (const child of Object.values(v)) deepFreeze(child);
    Object.freeze(v);
  }
  return v;
}

/** One write: an apply or an update by some manager, at step `step` of a scenario. */
type Step = (kind: KindInfo, live: ApiObject | undefined, now: Date) => ApiObject;

function apply(
  manager: string,
  config: object,
  options: { force?: boolean; subresource?: 'status' } = {},
): Step {
  return (kind, live, now) =>
    applyConfiguration(kind, live, config, { manager, now, force: options.force ?? false, ...options });
}

/** A create (the server-owned metadata already set, as the API server does before tracking). */
function create(manager: string, obj: ApiObject): Step {
  return (kind, _live, now) => trackUpdate(kind, undefined, obj, { manager, now });
}

function update(manager: string, edit: (obj: ApiObject) => void, subresource?: 'status'): Step {
  return (kind, live, now) => {
    if (!live) throw new Error('update before create');
    const next = structuredClone(live);
    edit(next);
    return trackUpdate(kind, live, next, { manager, now, subresource });
  };
}

function run(kind: KindInfo, steps: readonly Step[]): ApiObject {
  let obj: ApiObject | undefined;
  for (const [i, step] of steps.entries()) obj = step(kind, deepFreeze(obj), new Date(start + i * 1000));
  if (!obj) throw new Error('no steps');
  return obj;
}

const entriesOf = (obj: ApiObject) => (obj.metadata.managedFields ?? []) as ManagedFieldsEntry[];

/** Who owns what: "manager/Operation[/subresource]" → the owned paths, sorted. */
function owners(obj: ApiObject): Record<string, string[]> {
  return Object.fromEntries(
    entriesOf(obj).map((entry) => [
      [entry.manager, entry.operation, entry.subresource].filter(Boolean).join('/'),
      fieldPaths(decodeFieldsV1(entry.fieldsV1)).sort(),
    ]),
  );
}

const image = { url: 'https://example.org/debian-12.qcow2', sha256: 'a'.repeat(64) };

function instance(spec: object, metadata: object = {}, rest: object = {}): ApiObject {
  return {
    apiVersion: 'loam.dev/v1alpha1',
    kind: 'Instance',
    metadata: { name: 'web-1', namespace: 'default', ...metadata },
    spec,
    ...rest,
  };
}

/** An Instance as stored: what prepareCreate adds is never owned by anyone. */
const stored = instance(
  { cpus: 2, image, networks: [{ name: 'lan' }] },
  {
    labels: { app: 'web' },
    uid: 'c0ffee',
    creationTimestamp: '2024-05-01T11:00:00Z',
    generation: 1,
    resourceVersion: '7',
  },
);

describe('apiserver/managed-fields', () => {
  interface Scenario {
    name: string;
    kind?: KindInfo;
    steps: Step[];
    owners: Record<string, string[]>;
    /** What the final object holds: `pick` of it. */
    pick?: (obj: ApiObject) => unknown;
    expected?: unknown;
  }

  const spec = (obj: ApiObject) => obj.spec;
  const labels = (obj: ApiObject) => obj.metadata.labels;

  const scenarios: Scenario[] = [
    {
      name: 'a create through an update owns every tracked field, nothing the server owns',
      steps: [create('loam', stored)],
      owners: {
        'loam/Update': [
          '.metadata.labels',
          '.metadata.labels.app',
          '.spec',
          '.spec.cpus',
          '.spec.image',
          '.spec.image.sha256',
          '.spec.image.url',
          '.spec.networks',
          '.spec.networks[name="lan"]',
          '.spec.networks[name="lan"].name',
        ],
      },
    },
    {
      name: 'an update by another manager takes only the fields it changes',
      steps: [
        create('loam', stored),
        update('kubectl-edit', (obj) => {
          (obj.spec as { cpus: number }).cpus = 4;
          obj.metadata.labels = { app: 'web', tier: 'db' };
        }),
      ],
      owners: {
        'loam/Update': [
          '.metadata.labels',
          '.metadata.labels.app',
          '.spec',
          '.spec.image',
          '.spec.image.sha256',
          '.spec.image.url',
          '.spec.networks',
          '.spec.networks[name="lan"]',
          '.spec.networks[name="lan"].name',
        ],
        'kubectl-edit/Update': ['.metadata.labels.tier', '.spec.cpus'],
      },
    },
    {
      name: 'an update that removes fields takes them from every owner',
      steps: [
        create('loam', stored),
        update('kubectl-edit', (obj) => {
          delete obj.metadata.labels;
          delete (obj.spec as { networks?: unknown }).networks;
        }),
      ],
      owners: {
        'loam/Update': ['.spec', '.spec.cpus', '.spec.image', '.spec.image.sha256', '.spec.image.url'],
      },
    },
    {
      name: 'apply creates the object and owns what it set',
      steps: [apply('kubectl', instance({ cpus: 2, image }, { labels: { app: 'web' } }))],
      owners: {
        'kubectl/Apply': ['.metadata.labels.app', '.spec.cpus', '.spec.image.sha256', '.spec.image.url'],
      },
      pick: (obj) => ({ ...obj, metadata: { ...obj.metadata, managedFields: undefined } }),
      expected: instance({ cpus: 2, image }, { labels: { app: 'web' }, managedFields: undefined }),
    },
    {
      name: 're-applying without fields removes them',
      steps: [
        apply('kubectl', instance({ cpus: 2, image, host: 'h1' }, { labels: { app: 'web', tier: 'db' } })),
        apply('kubectl', instance({ image }, { labels: { app: 'web' } })),
      ],
      owners: { 'kubectl/Apply': ['.metadata.labels.app', '.spec.image.sha256', '.spec.image.url'] },
      pick: (obj) => [obj.spec, obj.metadata.labels],
      expected: [{ image }, { app: 'web' }],
    },
    {
      name: 'a struct left with nothing owned goes whole',
      steps: [
        apply('kubectl', instance({ cpus: 2, cloudInit: { userData: '#cloud-config' } })),
        apply('kubectl', instance({ cpus: 2 })),
      ],
      owners: { 'kubectl/Apply': ['.spec.cpus'] },
      pick: spec,
      expected: { cpus: 2 },
    },
    {
      name: 'removal keeps a field another applier also owns',
      steps: [
        apply('a', instance({ cpus: 2 }, { labels: { app: 'web', tier: 'db' } })),
        apply('b', instance({}, { labels: { tier: 'db' } })),
        apply('a', instance({ cpus: 2 }, { labels: { app: 'web' } })),
      ],
      owners: { 'a/Apply': ['.metadata.labels.app', '.spec.cpus'], 'b/Apply': ['.metadata.labels.tier'] },
      pick: labels,
      expected: { app: 'web', tier: 'db' },
    },
    {
      name: 'removal keeps a field an updater changed since',
      steps: [
        apply('a', instance({ cpus: 2, image })),
        update('kubectl-edit', (obj) => {
          (obj.spec as { cpus: number }).cpus = 4;
        }),
        apply('a', instance({ image })),
      ],
      owners: { 'a/Apply': ['.spec.image.sha256', '.spec.image.url'], 'kubectl-edit/Update': ['.spec.cpus'] },
      pick: spec,
      expected: { cpus: 4, image },
    },
    {
      name: 'the same value applied by two managers is shared, not a conflict',
      steps: [apply('a', instance({ cpus: 2 })), apply('b', instance({ cpus: 2 }))],
      owners: { 'a/Apply': ['.spec.cpus'], 'b/Apply': ['.spec.cpus'] },
    },
    {
      name: 'a forced apply takes the conflicting fields over',
      steps: [apply('a', instance({ cpus: 2, image })), apply('b', instance({ cpus: 4 }), { force: true })],
      owners: { 'a/Apply': ['.spec.image.sha256', '.spec.image.url'], 'b/Apply': ['.spec.cpus'] },
      pick: spec,
      expected: { cpus: 4, image },
    },
    {
      name: 'list-map items are merged and owned by key',
      steps: [
        apply('a', instance({ networks: [{ name: 'lan' }] })),
        apply('b', instance({ networks: [{ name: 'wan' }, { name: 'lan', address: '10.0.0.5' }] })),
      ],
      owners: {
        'a/Apply': ['.spec.networks[name="lan"]', '.spec.networks[name="lan"].name'],
        'b/Apply': [
          '.spec.networks[name="lan"]',
          '.spec.networks[name="lan"].address',
          '.spec.networks[name="lan"].name',
          '.spec.networks[name="wan"]',
          '.spec.networks[name="wan"].name',
        ],
      },
      // b's order wins for the items b applied.
      pick: spec,
      expected: { networks: [{ name: 'wan' }, { name: 'lan', address: '10.0.0.5' }] },
    },
    {
      name: 'list-map items go by key, and stay while another manager owns them',
      steps: [
        apply('a', instance({ networks: [{ name: 'lan' }, { name: 'dmz' }] })),
        apply('b', instance({ networks: [{ name: 'wan' }, { name: 'lan', address: '10.0.0.5' }] })),
        apply('a', instance({ networks: [] })),
      ],
      owners: {
        'b/Apply': [
          '.spec.networks[name="lan"]',
          '.spec.networks[name="lan"].address',
          '.spec.networks[name="lan"].name',
          '.spec.networks[name="wan"]',
          '.spec.networks[name="wan"].name',
        ],
      },
      pick: spec,
      expected: { networks: [{ name: 'wan' }, { name: 'lan', address: '10.0.0.5' }] },
    },
    {
      name: 'new list-map items keep their place relative to the items already there',
      steps: [
        apply('a', instance({ networks: [{ name: 'lan' }] })),
        apply('b', instance({ networks: [{ name: 'wan' }] })),
        apply('a', instance({ networks: [{ name: 'dmz' }, { name: 'lan' }] })),
      ],
      owners: {
        'a/Apply': [
          '.spec.networks[name="dmz"]',
          '.spec.networks[name="dmz"].name',
          '.spec.networks[name="lan"]',
          '.spec.networks[name="lan"].name',
        ],
        'b/Apply': ['.spec.networks[name="wan"]', '.spec.networks[name="wan"].name'],
      },
      pick: spec,
      expected: { networks: [{ name: 'dmz' }, { name: 'lan' }, { name: 'wan' }] },
    },
    {
      name: 'labels are merged and removed key by key',
      steps: [
        apply('a', instance({}, { labels: { app: 'web' } })),
        apply('b', instance({}, { labels: { tier: 'db' } })),
        apply('a', instance({})),
      ],
      owners: { 'b/Apply': ['.metadata.labels.tier'] },
      pick: labels,
      expected: { tier: 'db' },
    },
    {
      name: 'finalizers are a set: unioned, and removed value by value',
      steps: [
        apply('a', instance({}, { finalizers: ['example.com/a'] })),
        apply('b', instance({}, { finalizers: ['example.com/b', 'example.com/a'] })),
        apply('b', instance({}, { finalizers: ['example.com/b'] })),
      ],
      owners: {
        'a/Apply': ['.metadata.finalizers[="example.com/a"]'],
        'b/Apply': ['.metadata.finalizers[="example.com/b"]'],
      },
      pick: (obj) => obj.metadata.finalizers,
      expected: ['example.com/b', 'example.com/a'],
    },
    {
      name: 'a core kind: Secret data is a granular map',
      kind: secretKind,
      steps: [
        apply('a', { apiVersion: 'v1', kind: 'Secret', metadata: { name: 's' }, data: { user: 'YQ==' } }),
        apply('b', { apiVersion: 'v1', kind: 'Secret', metadata: { name: 's' }, data: { password: 'Yg==' } }),
        apply('a', { apiVersion: 'v1', kind: 'Secret', metadata: { name: 's' }, type: 'Opaque' }),
      ],
      owners: { 'a/Apply': ['.type'], 'b/Apply': ['.data.password'] },
      pick: (obj) => [obj.data, obj.type],
      expected: [{ password: 'Yg==' }, 'Opaque'],
    },
    {
      name: 'null in an apply configuration means not specified',
      steps: [apply('a', instance({ cpus: 2, host: null }, { labels: null }))],
      owners: { 'a/Apply': ['.spec.cpus'] },
      pick: (obj) => [obj.spec, obj.metadata.labels],
      expected: [{ cpus: 2 }, undefined],
    },
    {
      name: 'the main resource never owns status, /status nothing else',
      steps: [
        create('loam', stored),
        update(
          'controller',
          (obj) => {
            obj.status = { phase: 'Running' };
          },
          'status',
        ),
        apply('kubectl', instance({ cpus: 2 }, {}, { status: { phase: 'Failed' } })),
      ],
      owners: {
        'loam/Update': [
          '.metadata.labels',
          '.metadata.labels.app',
          '.spec',
          '.spec.cpus',
          '.spec.image',
          '.spec.image.sha256',
          '.spec.image.url',
          '.spec.networks',
          '.spec.networks[name="lan"]',
          '.spec.networks[name="lan"].name',
        ],
        'controller/Update/status': ['.status', '.status.phase'],
        'kubectl/Apply': ['.spec.cpus'], // the same cpus as loam's: shared
      },
      pick: (obj) => obj.status,
      expected: { phase: 'Running' },
    },
    {
      name: 'an apply to the main resource leaves status alone, even where there is none',
      steps: [
        create('loam', stored),
        apply('kubectl', instance({ cpus: 2 }, {}, { status: { phase: 'Failed' } })),
      ],
      owners: {
        'loam/Update': [
          '.metadata.labels',
          '.metadata.labels.app',
          '.spec',
          '.spec.cpus',
          '.spec.image',
          '.spec.image.sha256',
          '.spec.image.url',
          '.spec.networks',
          '.spec.networks[name="lan"]',
          '.spec.networks[name="lan"].name',
        ],
        'kubectl/Apply': ['.spec.cpus'],
      },
      pick: (obj) => Object.hasOwn(obj, 'status'),
      expected: false,
    },
    {
      name: 'an apply to /status considers only status',
      steps: [
        create('loam', stored),
        apply(
          'controller',
          instance({ cpus: 16 }, { labels: { x: 'y' } }, { status: { phase: 'Running' } }),
          {
            subresource: 'status',
          },
        ),
        apply('controller', instance({}, {}, { status: { host: 'h1' } }), { subresource: 'status' }),
      ],
      owners: {
        'loam/Update': [
          '.metadata.labels',
          '.metadata.labels.app',
          '.spec',
          '.spec.cpus',
          '.spec.image',
          '.spec.image.sha256',
          '.spec.image.url',
          '.spec.networks',
          '.spec.networks[name="lan"]',
          '.spec.networks[name="lan"].name',
        ],
        'controller/Apply/status': ['.status.host'],
      },
      pick: (obj) => [obj.spec, obj.metadata.labels, obj.status],
      expected: [stored.spec, stored.metadata.labels, { host: 'h1' }],
    },
    {
      name: 'managedFields set to [{}] are cleared, and updates do not track the object again',
      steps: [
        create('loam', stored),
        update('kubectl', (obj) => {
          obj.metadata.managedFields = [{}];
        }),
        update('kubectl-edit', (obj) => {
          (obj.spec as { cpus: number }).cpus = 4;
        }),
      ],
      owners: {},
    },
    {
      name: 'an empty managedFields list does not clear them',
      steps: [
        create('loam', instance({ cpus: 2 })),
        update('kubectl', (obj) => {
          obj.metadata.managedFields = [];
        }),
      ],
      owners: { 'loam/Update': ['.spec', '.spec.cpus'] },
    },
    {
      name: 'the first apply to an untracked object conflicts with "before-first-apply", and may force it',
      steps: [
        create('loam', instance({ cpus: 2, image })),
        update('kubectl', (obj) => {
          obj.metadata.managedFields = [{}];
        }),
        apply('kubectl', instance({ cpus: 4 }), { force: true }),
      ],
      owners: {
        'before-first-apply/Update': ['.spec', '.spec.image', '.spec.image.sha256', '.spec.image.url'],
        'kubectl/Apply': ['.spec.cpus'],
      },
    },
    {
      name: "a client's rewritten managedFields are taken as they are (kubectl's move to server-side apply)",
      steps: [
        create('kubectl-client-side-apply', instance({ cpus: 2, host: 'h1' })),
        update('kubectl', (obj) => {
          obj.metadata.managedFields = entriesOf(obj).map((entry) => ({
            ...entry,
            manager: 'kubectl',
            operation: 'Apply',
          }));
        }),
        apply('kubectl', instance({ cpus: 2 })),
      ],
      owners: { 'kubectl/Apply': ['.spec.cpus'] },
      pick: spec,
      expected: { cpus: 2 },
    },
  ];

  for (const scenario of scenarios) {
    it(scenario.name, () => {
      const obj = run(scenario.kind ?? instanceKind, scenario.steps);
      assert.deepEqual(owners(obj), scenario.owners);
      if (scenario.pick) assert.deepEqual(scenario.pick(obj), scenario.expected);
    });
  }

  describe('conflicts', () => {
    const conflicts: {
      name: string;
      steps: Step[];
      attempt: Step;
      message: string;
      causes: { field: string; message: string }[];
    }[] = [
      {
        name: 'between two appliers',
        steps: [apply('a', instance({ cpus: 2 }))],
        attempt: apply('b', instance({ cpus: 4 })),
        message: 'Apply failed with 1 conflict: conflict with "a": .spec.cpus',
        causes: [{ field: '.spec.cpus', message: 'conflict with "a"' }],
      },
      {
        name: 'with an updater, named with its API version',
        steps: [create('loam', stored)],
        attempt: apply('kubectl', instance({ networks: [{ name: 'lan', address: '10.0.0.5' }], cpus: 3 })),
        message: 'Apply failed with 1 conflict: conflict with "loam" using loam.dev/v1alpha1: .spec.cpus',
        causes: [{ field: '.spec.cpus', message: 'conflict with "loam" using loam.dev/v1alpha1' }],
      },
      {
        name: 'with a status writer, named with its subresource',
        steps: [
          create('loam', stored),
          update('controller', (obj) => Object.assign(obj, { status: { phase: 'Running' } }), 'status'),
        ],
        attempt: apply('other', instance({}, {}, { status: { phase: 'Failed' } }), { subresource: 'status' }),
        message:
          'Apply failed with 1 conflict: conflict with "controller" with subresource "status" using loam.dev/v1alpha1: .status.phase',
        causes: [
          {
            field: '.status.phase',
            message: 'conflict with "controller" with subresource "status" using loam.dev/v1alpha1',
          },
        ],
      },
      {
        name: 'several, grouped by manager in order',
        steps: [
          apply('b', instance({ cpus: 2, memory: '1Gi', networks: [{ name: 'lan', address: '10.0.0.5' }] })),
          update('a-edit', (obj) => {
            obj.metadata.labels = { app: 'web' };
          }),
        ],
        attempt: apply(
          'c',
          instance(
            { cpus: 4, memory: '1Gi', networks: [{ name: 'lan', address: '10.0.0.6' }] },
            { labels: { app: 'db' } },
          ),
        ),
        message: [
          'Apply failed with 3 conflicts: conflicts with "a-edit" using loam.dev/v1alpha1:',
          '- .metadata.labels.app',
          'conflicts with "b":',
          '- .spec.cpus',
          '- .spec.networks[name="lan"].address',
        ].join('\n'),
        causes: [
          { field: '.metadata.labels.app', message: 'conflict with "a-edit" using loam.dev/v1alpha1' },
          { field: '.spec.cpus', message: 'conflict with "b"' },
          { field: '.spec.networks[name="lan"].address', message: 'conflict with "b"' },
        ],
      },
    ];

    for (const c of conflicts) {
      it(c.name, () => {
        const live = run(instanceKind, c.steps);
        assert.throws(
          () => c.attempt(instanceKind, deepFreeze(live), new Date(start + 60_000)),
          (err) => {
            assert.ok(isLoamError(err, 'Conflict'));
            assert.equal(err.message, c.message);
            assert.equal(err.httpStatus, 409);
            assert.deepEqual(
              err.causes,
              c.causes.map((cause) => ({ ...cause, reason: 'FieldManagerConflict' })),
            );
            return true;
          },
        );
      });
    }
  });

  it('takes over the fields of the last client-side apply without a conflict, as kube upgrades', () => {
    const lastApplied = JSON.stringify(instance({ cpus: 2, image }));
    const csa = instance(
      { cpus: 2, image },
      { annotations: { 'kubectl.kubernetes.io/last-applied-configuration': lastApplied } },
    );
    const live = run(instanceKind, [create('kubectl-client-side-apply', csa)]);
    const upgraded = apply('kubectl', instance({ cpus: 4, image }))(
      instanceKind,
      deepFreeze(live),
      new Date(start + 60_000),
    );
    assert.equal((upgraded.spec as { cpus: number }).cpus, 4);
    assert.ok(owners(upgraded)['kubectl/Apply']?.includes('.spec.cpus'));
    // A field the last client-side apply did not set still conflicts.
    const other = run(instanceKind, [
      create('kubectl-client-side-apply', csa),
      update('ops', (obj) => Object.assign(obj.spec as object, { memory: '1Gi' })),
    ]);
    assert.throws(
      () =>
        apply('kubectl', instance({ cpus: 4, memory: '2Gi', image }))(
          instanceKind,
          deepFreeze(other),
          new Date(start + 60_000),
        ),
      /conflicts with "ops" using loam.dev\/v1alpha1:\n- \.spec\.memory/,
    );
  });

  describe('FieldsV1', () => {
    const encodings: { name: string; kind: KindInfo; steps: Step[]; fieldsV1: string[] }[] = [
      {
        name: 'an apply: list-map items own themselves, struct fields only what they hold',
        kind: instanceKind,
        steps: [
          apply('kubectl', instance({ cpus: 2, networks: [{ name: 'lan' }] }, { labels: { app: 'web' } })),
        ],
        fieldsV1: [
          '{"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:cpus":{},"f:networks":{"k:{\\"name\\":\\"lan\\"}":{".":{},"f:name":{}}}}}',
        ],
      },
      {
        name: 'a create: what appeared owns itself too; set items by value; atomic lists whole',
        kind: namespaceKind,
        steps: [
          create('kubectl-create', {
            apiVersion: 'v1',
            kind: 'Namespace',
            metadata: {
              name: 'tenant-a',
              uid: 'u',
              labels: { team: 'a' },
              finalizers: ['example.com/cleanup'],
            },
            spec: { finalizers: ['kubernetes'] },
            status: { phase: 'Active' },
          }),
        ],
        fieldsV1: [
          '{"f:metadata":{"f:finalizers":{".":{},"v:\\"example.com/cleanup\\"":{}},"f:labels":{".":{},"f:team":{}}},"f:spec":{".":{},"f:finalizers":{}}}',
        ],
      },
      {
        name: 'owner references are keyed by uid',
        kind: secretKind,
        steps: [
          apply('kubectl', {
            apiVersion: 'v1',
            kind: 'Secret',
            metadata: {
              name: 's',
              ownerReferences: [
                { apiVersion: 'loam.dev/v1alpha1', kind: 'WireGuardPeer', name: 'p', uid: 'u-1' },
              ],
            },
            stringData: { 'wg0.conf': '[Interface]' },
          }),
        ],
        fieldsV1: [
          '{"f:metadata":{"f:ownerReferences":{"k:{\\"uid\\":\\"u-1\\"}":{".":{},"f:apiVersion":{},"f:kind":{},"f:name":{},"f:uid":{}}}},"f:stringData":{"f:wg0.conf":{}}}',
        ],
      },
    ];
    for (const e of encodings) {
      it(e.name, () => {
        const obj = run(e.kind, e.steps);
        assert.deepEqual(
          entriesOf(obj).map((entry) => JSON.stringify(entry.fieldsV1)),
          e.fieldsV1,
        );
      });
    }

    it('decodes any key order and normalizes, encoding in structured-merge-diff order', () => {
      const written = {
        'v:true': {},
        'i:2': {},
        'k:{"b":1,"a":"x"}': {},
        'v:"a&b"': {},
        'f:z': { 'f:y': {}, '.': {} },
        'v:10': {},
        'v:9': {},
        'f:a': {},
        'k:{"a":"x","b":0}': { '.': {} },
        'r:future': {},
      };
      assert.equal(
        JSON.stringify(encodeFieldsV1(decodeFieldsV1(written))),
        '{"f:a":{},"f:z":{".":{},"f:y":{}},"k:{\\"a\\":\\"x\\",\\"b\\":0}":{},"k:{\\"a\\":\\"x\\",\\"b\\":1}":{},' +
          '"v:9":{},"v:10":{},"v:\\"a\\\\u0026b\\"":{},"v:true":{},"i:2":{}}',
      );
    });

    it('prints paths as kube does', () => {
      const set = decodeFieldsV1({
        'f:spec': { 'f:cpus': {}, 'f:networks': { 'k:{"name":"lan"}': { '.': {}, 'f:address': {} } } },
        'f:metadata': { 'f:finalizers': { 'v:"x"': {} } },
      });
      assert.deepEqual(fieldPaths(set), [
        '.metadata.finalizers[="x"]',
        '.spec.cpus',
        '.spec.networks[name="lan"]',
        '.spec.networks[name="lan"].address',
      ]);
    });
  });

  describe('entries', () => {
    it('record manager, operation, the object apiVersion and the time of the last change', () => {
      const obj = run(instanceKind, [
        create('loam', stored),
        update('kubectl-edit', (o) => Object.assign(o.spec as object, { cpus: 4 })),
        update('loam', () => {}), // changes nothing: no new time
        apply('kubectl', instance({ cpus: 4 })), // the same value: shared, the object does not change
      ]);
      assert.deepEqual(
        entriesOf(obj).map(({ fieldsV1: _f, ...entry }) => entry),
        [
          {
            manager: 'loam',
            operation: 'Update',
            apiVersion: 'loam.dev/v1alpha1',
            time: timeOf(0),
            fieldsType: 'FieldsV1',
          },
          {
            manager: 'kubectl-edit',
            operation: 'Update',
            apiVersion: 'loam.dev/v1alpha1',
            time: timeOf(1),
            fieldsType: 'FieldsV1',
          },
          {
            manager: 'kubectl',
            operation: 'Apply',
            apiVersion: 'loam.dev/v1alpha1',
            time: timeOf(3),
            fieldsType: 'FieldsV1',
          },
        ],
      );
    });

    it('an apply that changes nothing keeps its time; one that does moves it', () => {
      const twice = run(instanceKind, [apply('a', instance({ cpus: 2 })), apply('a', instance({ cpus: 2 }))]);
      assert.equal(entriesOf(twice)[0]?.time, timeOf(0));
      const changed = run(instanceKind, [
        apply('a', instance({ cpus: 2 })),
        apply('a', instance({ cpus: 3 })),
      ]);
      assert.equal(entriesOf(changed)[0]?.time, timeOf(1));
    });

    it('leave the inputs untouched and share nothing with them', () => {
      const live = deepFreeze(run(instanceKind, [create('loam', stored)]));
      const config = deepFreeze(instance({ cpus: 2, networks: [{ name: 'lan' }] }));
      const result = applyConfiguration(instanceKind, live, config, {
        manager: 'kubectl',
        now: new Date(start),
        force: true,
      });
      const reachable = (v: unknown, into = new Set<object>()): Set<object> => {
        if (typeof v === 'object' && v !== null) {
          into.add(v);
          for (const child of Object.values(v)) reachable(child, into);
        }
        return into;
      };
      const inputs = new Set([...reachable(live), ...reachable(config)]);
      for (const o of reachable(result))
        assert.ok(!inputs.has(o), 'the result shares an object with an input');
      assert.deepEqual(result.metadata.uid, 'c0ffee');
    });
  });

  it('types every served kind from its schema', () => {
    for (const kind of servedKinds) {
      const apiVersion = kind.group ? `${kind.group}/${kind.version}` : kind.version;
      const obj = { apiVersion, kind: kind.kind, metadata: { name: 'x', labels: { a: 'b' } } };
      const created = trackUpdate(kind, undefined, obj, { manager: 'm', now: new Date(start) });
      assert.deepEqual(
        owners(created),
        { 'm/Update': ['.metadata.labels', '.metadata.labels.a'] },
        kind.kind,
      );
    }
  });

  describe('apply configuration checks', () => {
    const bad: { name: string; config: unknown; message: string | RegExp }[] = [
      { name: 'not an object', config: ['x'], message: 'an apply configuration must be an object' },
      {
        name: 'no apiVersion',
        config: { kind: 'Instance', metadata: { name: 'a' } },
        message: 'an apply configuration must set apiVersion and kind',
      },
      {
        name: 'another version',
        config: { ...instance({}), apiVersion: 'loam.dev/v1' },
        message:
          'Incorrect version specified in apply patch. Specified patch version: loam.dev/v1, expected: loam.dev/v1alpha1',
      },
      {
        name: 'another kind',
        config: { ...instance({}), kind: 'Network' },
        message: 'the kind in the apply configuration (Network) does not match Instance',
      },
      {
        name: 'no name',
        config: instance({}, { name: undefined }),
        message: /^metadata\.name: Required value/,
      },
      {
        name: 'managedFields set',
        config: instance({}, { managedFields: [] }),
        message: 'metadata.managedFields must be nil',
      },
      {
        name: 'a list-map item without its key',
        config: instance({ networks: [{ address: '10.0.0.5' }] }),
        message:
          '.spec.networks: element 0: associative list with keys has an element that omits key field "name"',
      },
      {
        name: 'a list-map key twice',
        config: instance({ networks: [{ name: 'lan' }, { name: 'lan' }] }),
        message: '.spec.networks: duplicate entries for key [name="lan"]',
      },
    ];
    for (const b of bad) {
      it(`rejects ${b.name}`, () => {
        assert.throws(
          () =>
            applyConfiguration(instanceKind, undefined, b.config, {
              manager: 'k',
              now: new Date(start),
              force: false,
            }),
          (err) => {
            assert.ok(isLoamError(err, 'BadRequest'));
            if (typeof b.message === 'string') assert.equal(err.message, b.message);
            else assert.match(err.message, b.message);
            return true;
          },
        );
      });
    }
  });
});
