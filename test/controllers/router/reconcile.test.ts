import assert from 'node:assert/strict';
import { reconcileRouter } from '../../../controllers/router/reconcile.js';
import type { Network, Router } from '../../../crds/v1alpha1/index.js';

function router(networks?: number): Router {
  return {
    apiVersion: 'loam.dev/v1alpha1',
    kind: 'Router',
    metadata: { name: 'rt1' },
    spec: { driver: 'linux', unschedulable: false },
    ...(networks === undefined ? {} : { status: { networks } }),
  } as Router;
}

function network(name: string, placedOn?: string): Network {
  return {
    apiVersion: 'loam.dev/v1alpha1',
    kind: 'Network',
    metadata: { name, namespace: 'default' },
    ...(placedOn ? { status: { router: placedOn } } : {}),
  } as Network;
}

describe('Router controller core', () => {
  const rows: {
    name: string;
    router: Router;
    networks: Network[];
    patch: { networks: number } | undefined;
  }[] = [
    { name: 'a new router serving nothing', router: router(), networks: [], patch: { networks: 0 } },
    {
      name: 'Networks placed on it, not those on others or unplaced',
      router: router(0),
      networks: [network('a', 'rt1'), network('b', 'rt1'), network('c', 'rt2'), network('d')],
      patch: { networks: 2 },
    },
    { name: 'a converged router', router: router(1), networks: [network('a', 'rt1')], patch: undefined },
    { name: 'a Network gone', router: router(1), networks: [], patch: { networks: 0 } },
  ];
  for (const row of rows) {
    it(`patches ${row.patch ? `networks: ${row.patch.networks}` : 'nothing'} for ${row.name}`, () => {
      assert.deepEqual(reconcileRouter(row.router, row.networks), row.patch);
    });
  }
});
