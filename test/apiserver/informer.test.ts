/**
 * A client-node informer over Instances, as the controllers will run one: it sees adds, updates
 * and deletes, comes back after the API server restarts, and re-lists when its resourceVersion
 * was compacted away while the server was down.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { Resources } from '../../controllers/apiserver/resources.js';
import { openStore } from '../../controllers/storage/index.js';
import type { ControlPlane } from '../../controllers/up.js';
import { instanceKind } from '../../crds/v1alpha1/index.js';
import { startPlane, tempDir } from '../harness/plane.js';
import { freePort, pollUntil } from '../harness/poll.js';

const sha256 = 'a'.repeat(64);

function instance(name: string, cpus = 1): k8s.KubernetesObject & { spec: Record<string, unknown> } {
  return {
    apiVersion: 'loam.dev/v1alpha1',
    kind: 'Instance',
    metadata: { name, namespace: 'default' },
    spec: { cpus, image: { url: 'https://images.example.org/debian.qcow2', sha256 } },
  };
}

describe('client-node informer over Instances', function () {
  this.timeout(60_000);
  let dir: string;
  let plane: ControlPlane | undefined;
  let informer: k8s.Informer<k8s.KubernetesObject> & k8s.ObjectCache<k8s.KubernetesObject>;
  let done = false;
  const seen: string[] = [];

  const start = async (port: number) => {
    plane = await startPlane(dir, { port });
    return plane;
  };

  before(() => {
    dir = tempDir('informer');
  });
  after(async () => {
    done = true;
    await informer?.stop();
    await plane?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('sees add, update and delete, survives a restart, and re-lists after 410 Gone', async () => {
    const port = await freePort();
    const first = await start(port);
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(first.kubeconfigPath);
    const api = k8s.KubernetesObjectApi.makeApiClient(kc);
    const custom = kc.makeApiClient(k8s.CustomObjectsApi);
    const path = '/apis/loam.dev/v1alpha1/namespaces/default/instances';
    let lists = 0;
    informer = k8s.makeInformer(kc, path, () => {
      lists++;
      return custom.listNamespacedCustomObject({
        group: 'loam.dev',
        version: 'v1alpha1',
        namespace: 'default',
        plural: 'instances',
      }) as Promise<k8s.KubernetesListObject<k8s.KubernetesObject>>;
    });
    const record = (verb: string) => (obj: k8s.KubernetesObject) => {
      seen.push(`${verb} ${obj.metadata?.name}`);
    };
    informer.on('add', record('add'));
    informer.on('update', record('update'));
    informer.on('delete', record('delete'));
    // client-node leaves restarting to its user after a connection error, as its docs show.
    informer.on('error', () => {
      if (!done) setTimeout(() => void informer.start().catch(() => {}), 100);
    });
    await informer.start();

    await api.create(instance('a'));
    await api.create(instance('b'));
    await pollUntil(() => seen.includes('add a') && seen.includes('add b'), {
      timeoutMs: 10_000,
      what: 'adds',
    });
    await api.patch(
      { ...instance('a'), spec: { cpus: 2 } },
      undefined,
      undefined,
      undefined,
      undefined,
      k8s.PatchStrategy.MergePatch,
    );
    await pollUntil(() => seen.includes('update a'), { timeoutMs: 10_000, what: 'the update' });
    await api.delete(instance('b'));
    await pollUntil(() => seen.includes('delete b'), { timeoutMs: 10_000, what: 'the delete' });

    // The server goes away; meanwhile its store changes and compacts past what the informer saw.
    await first.stop();
    plane = undefined;
    const store = openStore({ backend: 'sqlite', path: join(dir, 'loam.db') });
    const resources = new Resources(store);
    const req = { type: 'resource' as const, kind: instanceKind, namespace: 'default' };
    await resources.create({ ...req, verb: 'create' }, instance('c'));
    await resources.delete({ ...req, verb: 'delete', name: 'a' });
    await store.compact(await store.currentRevision());
    await store.close();

    await start(port);
    await pollUntil(() => seen.includes('add c') && seen.includes('delete a'), {
      timeoutMs: 20_000,
      what: 'the informer to re-list after the restart',
    });
    assert.equal(lists, 2, 'one list at the start, one after 410 Gone');
    assert.deepEqual(
      informer.list('default').map((o) => o.metadata?.name),
      ['c'],
    );
    await api.create(instance('d'));
    await pollUntil(() => seen.includes('add d'), {
      timeoutMs: 10_000,
      what: 'a live add after the re-list',
    });
  });
});
