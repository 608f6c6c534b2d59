/** The Host controller's core: which domains no Instance wants, what to patch and what to tell. */
import assert from 'node:assert/strict';
import { type HostReconcileResult, reconcileHost } from '../../../controllers/host/reconcile.js';
import type { RecordedEvent } from '../../../controllers/runtime/writes.js';
import type { Host, OrphanedDomain } from '../../../crds/v1alpha1/index.js';

function host(orphanedDomains?: OrphanedDomain[]): Host {
  return {
    apiVersion: 'loam.dev/v1alpha1',
    kind: 'Host',
    metadata: { name: 'hv1' },
    spec: { unschedulable: false },
    ...(orphanedDomains ? { status: { orphanedDomains } } : {}),
  } as Host;
}

const domain = (namespace: string, name: string, uid: string) => ({ namespace, name, uid });
const listed = (d: OrphanedDomain, kind = 'Instance') => ({ kind, ...d });

const web = domain('default', 'web', 'u-web');
const db = domain('default', 'db', 'u-db');
const ghost = domain('team-a', 'ghost', 'u-ghost');
/** An Instance re-created under the name of one whose domain was left behind. */
const oldWeb = domain('default', 'web', 'u-web-before');

/** The Instances that exist, by namespace/name. */
const instances = new Map([
  ['default/web', 'u-web'],
  ['default/db', 'u-db'],
]);

const warning = ({ namespace, name, uid }: OrphanedDomain): RecordedEvent => ({
  type: 'Warning',
  reason: 'OrphanedDomain',
  message:
    `a domain with the Loam metadata of Instance ${namespace}/${name} (uid ${uid}) is defined here, ` +
    `but that Instance does not exist; Loam leaves it alone: remove it on the host with ` +
    `virsh destroy ${uid} and virsh undefine ${uid}`,
});

describe('Host controller core', () => {
  const rows: {
    name: string;
    host: Host;
    inventory: ReturnType<typeof listed>[] | undefined;
    want: HostReconcileResult;
  }[] = [
    {
      name: 'an agent not heard from since this control plane started: nothing judged',
      host: host([ghost]),
      inventory: undefined,
      want: { events: [] },
    },
    {
      name: 'domains whose Instances exist, and the Networks it attaches',
      host: host(),
      inventory: [listed(web), listed(db), listed(domain('default', 'lab', 'u-lab'), 'Network')],
      want: { events: [], orphans: 0 },
    },
    {
      name: 'a domain whose Instance is gone, and one whose Instance was made again (new uid), sorted',
      host: host(),
      inventory: [listed(web), listed(ghost), listed(oldWeb)],
      want: {
        patch: { orphanedDomains: [oldWeb, ghost] },
        events: [warning(oldWeb), warning(ghost)],
        orphans: 2,
      },
    },
    {
      name: 'orphans already listed: told once',
      host: host([oldWeb, ghost]),
      inventory: [listed(ghost), listed(web), listed(oldWeb)],
      want: { events: [], orphans: 2 },
    },
    {
      name: 'a new orphan beside a known one',
      host: host([ghost]),
      inventory: [listed(ghost), listed(oldWeb)],
      want: { patch: { orphanedDomains: [oldWeb, ghost] }, events: [warning(oldWeb)], orphans: 2 },
    },
    {
      name: 'an orphan removed with virsh',
      host: host([oldWeb, ghost]),
      inventory: [listed(ghost)],
      want: { patch: { orphanedDomains: [ghost] }, events: [], orphans: 1 },
    },
    {
      name: 'the last orphan removed',
      host: host([ghost]),
      inventory: [listed(web)],
      want: { patch: { orphanedDomains: null }, events: [], orphans: 0 },
    },
    {
      name: 'a domain of an agent that names no uid, under the name of an Instance (not judged)',
      host: host(),
      inventory: [listed(domain('default', 'web', ''))],
      want: { events: [], orphans: 0 },
    },
  ];
  for (const row of rows) {
    it(row.name, () => {
      const result = reconcileHost({
        host: row.host,
        inventory: row.inventory,
        instanceUid: (namespace, name) => instances.get(`${namespace}/${name}`),
      });
      assert.deepEqual(result, row.want);
    });
  }

  it('lists at most 100 orphans, the first in order, and counts them all', () => {
    const many = Array.from({ length: 150 }, (_, i) =>
      domain('default', `gone-${String(i).padStart(3, '0')}`, `u${i}`),
    );
    const result = reconcileHost({
      host: host(),
      inventory: [...many].reverse().map((d) => listed(d)),
      instanceUid: () => undefined,
    });
    assert.deepEqual(result.patch?.orphanedDomains, many.slice(0, 100));
    assert.equal(result.events.length, 100, 'told about those listed');
    assert.equal(result.orphans, 150);
  });
});
