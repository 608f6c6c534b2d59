/**
 * Aggregated discovery: /api and /apis in the apidiscovery.k8s.io format, so kubectl learns every
 * resource in two requests instead of one per group-version.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { aggregatedDiscovery, wantsAggregatedDiscovery } from '../../controllers/apiserver/discovery.js';
import type { ControlPlane } from '../../controllers/up.js';
import { servedKinds } from '../../crds/builtin.js';
import { kubectl } from '../harness/kubectl.js';
import { startPlane, tempDir } from '../harness/plane.js';

interface DiscoveryList {
  items: {
    metadata: { name: string };
    versions: {
      version: string;
      resources: {
        resource: string;
        scope: string;
        shortNames?: string[];
        subresources: { subresource: string; verbs: string[] }[];
      }[];
    }[];
  }[];
}

describe('aggregated discovery', () => {
  it('negotiates v2 or v2beta1 from the Accept header kubectl sends', () => {
    const v2 =
      'application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json';
    assert.equal(wantsAggregatedDiscovery(v2), 'v2');
    assert.equal(
      wantsAggregatedDiscovery(
        'application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json',
      ),
      'v2beta1',
    );
    assert.equal(wantsAggregatedDiscovery('application/json, */*'), undefined);
    assert.equal(wantsAggregatedDiscovery(undefined), undefined);
  });

  it('lists every group, version and resource, with subresources, short names and scope', () => {
    const apis = aggregatedDiscovery('/apis', servedKinds, 'v2') as DiscoveryList;
    const loam = apis.items.find((g) => g.metadata.name === 'loam.dev');
    const instances = loam?.versions[0]?.resources.find((r) => r.resource === 'instances');
    assert.deepEqual(instances?.shortNames, ['inst']);
    assert.equal(instances?.scope, 'Namespaced');
    assert.deepEqual(
      instances?.subresources.map((s) => s.subresource),
      ['status', 'console', 'start', 'stop', 'reboot', 'reset'],
    );
    assert.deepEqual(instances?.subresources.find((s) => s.subresource === 'reboot')?.verbs, ['update']);
    assert.equal(loam?.versions[0]?.resources.find((r) => r.resource === 'hosts')?.scope, 'Cluster');
    const core = aggregatedDiscovery('/api', servedKinds, 'v2') as DiscoveryList;
    assert.deepEqual(
      core.items.map((g) => g.metadata.name),
      [''],
    );
    assert.ok(core.items[0]?.versions[0]?.resources.some((r) => r.resource === 'namespaces'));
    assert.equal(aggregatedDiscovery('/apis/loam.dev', servedKinds, 'v2'), undefined);
  });

  describe('with kubectl', function () {
    this.timeout(60_000);
    let dir: string;
    let plane: ControlPlane;
    before(async () => {
      dir = tempDir('discovery');
      plane = await startPlane(dir);
    });
    after(async () => {
      await plane?.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    for (const version of ['1.27', '1.33']) {
      it(`kubectl ${version} discovers everything with /api and /apis alone`, async () => {
        const k = kubectl(version, plane.kubeconfigPath);
        const run = await k.run(['get', 'instances', '-v=6', '--cache-dir', join(dir, `cache-${version}`)]);
        assert.equal(run.code, 0, run.stderr);
        const paths = [...run.stderr.matchAll(/https:\/\/127\.0\.0\.1:\d+(\/[^?"\s]*)/g)].map((m) => m[1]);
        assert.deepEqual(paths, ['/api', '/apis', '/apis/loam.dev/v1alpha1/namespaces/default/instances']);
      });
    }
  });
});
