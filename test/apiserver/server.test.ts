/**
 * The API server as clients use it: @kubernetes/client-node and the real kubectl against
 * `loam up` on loopback, over the embedded store.
 */
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { tenantGroupPrefix } from '../../controllers/apiserver/auth.js';
import { loadCertificateAuthority } from '../../controllers/pki/files.js';
import { issueKubeconfig } from '../../controllers/pki/kubeconfig.js';
import type { ControlPlane } from '../../controllers/up.js';
import { apiClient } from '../harness/https.js';
import { startPlane, tempDir } from '../harness/plane.js';
import { pollUntil } from '../harness/poll.js';

interface Network extends k8s.KubernetesObject {
  spec: Record<string, unknown>;
  status?: Record<string, unknown>;
}

function network(name: string, namespace = 'default', extra: Record<string, unknown> = {}): Network {
  return {
    apiVersion: 'loam.dev/v1alpha1',
    kind: 'Network',
    metadata: { name, namespace, labels: { tier: 'lab' } },
    spec: { cidr: '10.20.0.0/24' },
    ...extra,
  };
}

async function statusCode(
  promise: Promise<unknown>,
): Promise<{ code: number; body: Record<string, unknown> }> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof k8s.ApiException) {
      return { code: err.code, body: JSON.parse(err.body as string) as Record<string, unknown> };
    }
    throw err;
  }
  throw new Error('expected the request to fail');
}

describe('API server', function () {
  this.timeout(60_000);
  let dir: string;
  let plane: ControlPlane;
  let kc: k8s.KubeConfig;
  let api: k8s.KubernetesObjectApi;

  before(async () => {
    dir = tempDir('apiserver');
    plane = await startPlane(dir);
    kc = new k8s.KubeConfig();
    kc.loadFromFile(plane.kubeconfigPath);
    api = k8s.KubernetesObjectApi.makeApiClient(kc);
  });
  after(async () => {
    await plane?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('creates with server-owned metadata and defaults, and reads it back', async () => {
    const created = (await api.create(network('create-me'))) as Network;
    assert.ok(created.metadata?.uid);
    assert.equal(created.metadata?.generation, 1);
    assert.match(created.metadata?.resourceVersion ?? '', /^\d+$/);
    assert.deepEqual(created.spec.dhcp, { enabled: true, leaseTime: '12h' });
    const read = (await api.read({
      apiVersion: 'loam.dev/v1alpha1',
      kind: 'Network',
      metadata: { name: 'create-me', namespace: 'default' },
    })) as Network;
    assert.deepEqual(read, created);
    const again = await statusCode(api.create(network('create-me')));
    assert.equal(again.code, 409);
    assert.equal(again.body.reason, 'AlreadyExists');
  });

  it('rejects an invalid object with 422 and causes naming the field', async () => {
    const res = await statusCode(
      api.create({ ...network('bad'), spec: { cidr: '10.20.0.1/24' } } as Network),
    );
    assert.equal(res.code, 422);
    assert.equal(res.body.reason, 'Invalid');
    const causes = (res.body.details as { causes: { field: string }[] }).causes;
    assert.deepEqual(
      causes.map((c) => c.field),
      ['spec.cidr'],
    );
  });

  it('answers 404 for a missing object and for a namespace that does not exist', async () => {
    const missing = await statusCode(
      api.read({
        apiVersion: 'loam.dev/v1alpha1',
        kind: 'Network',
        metadata: { name: 'nope', namespace: 'default' },
      }),
    );
    assert.equal(missing.code, 404);
    assert.equal(missing.body.message, 'networks.loam.dev "nope" not found');
    const noNamespace = await statusCode(api.create(network('x', 'no-such-ns')));
    assert.equal(noNamespace.code, 404);
  });

  it('refuses an update at a stale resourceVersion with 409 Conflict', async () => {
    const created = (await api.create(network('cas'))) as Network;
    const updated = (await api.replace({ ...created, spec: { ...created.spec, egress: true } })) as Network;
    assert.equal(updated.metadata?.generation, 2);
    const stale = await statusCode(api.replace({ ...created, spec: { ...created.spec, egress: false } }));
    assert.equal(stale.code, 409);
    assert.equal(stale.body.reason, 'Conflict');
  });

  it('keeps status and spec apart: the status subresource, generation on spec changes only', async () => {
    const created = (await api.create(
      network('status', 'default', { status: { phase: 'Ready' } }),
    )) as Network;
    assert.equal(created.status, undefined, 'status is dropped on create');
    const custom = kc.makeApiClient(k8s.CustomObjectsApi);
    const withStatus = (await custom.replaceNamespacedCustomObjectStatus({
      group: 'loam.dev',
      version: 'v1alpha1',
      namespace: 'default',
      plural: 'networks',
      name: 'status',
      body: { ...created, spec: { cidr: '10.99.0.0/24' }, status: { phase: 'Ready', router: 'r1' } },
    })) as Network;
    assert.deepEqual(withStatus.status, { phase: 'Ready', router: 'r1' });
    assert.equal(withStatus.spec.cidr, '10.20.0.0/24', 'a status write leaves spec alone');
    assert.equal(withStatus.metadata?.generation, 1);
    const relabelled = (await api.patch(
      {
        ...network('status'),
        metadata: { name: 'status', namespace: 'default', labels: { tier: 'prod' } },
        status: { phase: 'Failed' },
      } as Network,
      undefined,
      undefined,
      undefined,
      undefined,
      k8s.PatchStrategy.MergePatch,
    )) as Network;
    assert.equal(relabelled.metadata?.labels?.tier, 'prod');
    assert.deepEqual(relabelled.status, { phase: 'Ready', router: 'r1' }, 'the main resource ignores status');
    assert.equal(relabelled.metadata?.generation, 1, 'labels are not the desired state');
  });

  it('holds a deleted object while it has finalizers', async () => {
    const created = (await api.create({
      ...network('final'),
      metadata: { name: 'final', namespace: 'default', finalizers: ['loam.dev/cleanup'] },
    } as Network)) as Network;
    const ref = {
      apiVersion: 'loam.dev/v1alpha1',
      kind: 'Network',
      metadata: { name: 'final', namespace: 'default' },
    };
    await api.delete(created);
    const held = (await api.read(ref)) as Network;
    assert.ok(held.metadata?.deletionTimestamp);
    await api.patch(
      { ...held, metadata: { ...held.metadata, finalizers: [] } } as Network,
      undefined,
      undefined,
      undefined,
      undefined,
      k8s.PatchStrategy.MergePatch,
    );
    const gone = await statusCode(api.read(ref));
    assert.equal(gone.code, 404);
  });

  it('lists with label selectors and paginates with limit and continue', async () => {
    await api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'paging' } });
    for (let i = 0; i < 5; i++) {
      await api.create({
        ...network(`n${i}`, 'paging'),
        metadata: { name: `n${i}`, namespace: 'paging', labels: { even: String(i % 2 === 0) } },
      } as Network);
    }
    const custom = kc.makeApiClient(k8s.CustomObjectsApi);
    const base = { group: 'loam.dev', version: 'v1alpha1', namespace: 'paging', plural: 'networks' };
    const even = (await custom.listNamespacedCustomObject({ ...base, labelSelector: 'even=true' })) as {
      items: Network[];
    };
    assert.deepEqual(
      even.items.map((n) => n.metadata?.name),
      ['n0', 'n2', 'n4'],
    );
    const first = (await custom.listNamespacedCustomObject({ ...base, limit: 2 })) as {
      items: Network[];
      metadata: { continue?: string };
    };
    assert.equal(first.items.length, 2);
    const rest = (await custom.listNamespacedCustomObject({
      ...base,
      limit: 10,
      _continue: first.metadata.continue,
    })) as { items: Network[] };
    assert.deepEqual(
      rest.items.map((n) => n.metadata?.name),
      ['n2', 'n3', 'n4'],
    );
  });

  it('streams watch events to client-node', async () => {
    const events: string[] = [];
    const watch = new k8s.Watch(kc);
    const req = await watch.watch(
      '/apis/loam.dev/v1alpha1/namespaces/default/networks',
      {
        resourceVersion: (await api.list('loam.dev/v1alpha1', 'Network', 'default')).metadata
          ?.resourceVersion,
      },
      (type, obj: Network) => events.push(`${type} ${obj.metadata?.name}`),
      () => {},
    );
    const created = (await api.create(network('watched'))) as Network;
    await api.delete(created);
    await pollUntil(() => events.length >= 2, { timeoutMs: 10_000, what: 'two watch events' });
    req.abort();
    assert.deepEqual(events, ['ADDED watched', 'DELETED watched']);
  });

  it('confines a tenant credential to its namespace', async () => {
    await api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'team-a' } });
    const ca = loadCertificateAuthority(dir);
    const tenantConfig = join(dir, 'tenant.kubeconfig');
    writeFileSync(
      tenantConfig,
      issueKubeconfig(ca, plane.apiServer.url, 'alice', [`${tenantGroupPrefix}team-a`], {
        namespace: 'team-a',
      }),
    );
    const tkc = new k8s.KubeConfig();
    tkc.loadFromFile(tenantConfig);
    const custom = tkc.makeApiClient(k8s.CustomObjectsApi);
    const base = { group: 'loam.dev', version: 'v1alpha1', plural: 'networks' };
    await custom.createNamespacedCustomObject({
      ...base,
      namespace: 'team-a',
      body: network('mine', 'team-a'),
    });
    const own = (await custom.listNamespacedCustomObject({ ...base, namespace: 'team-a' })) as {
      items: unknown[];
    };
    assert.equal(own.items.length, 1);
    const other = await statusCode(custom.listNamespacedCustomObject({ ...base, namespace: 'default' }));
    assert.equal(other.code, 403);
    assert.match(other.body.message as string, /User "alice" cannot list resource "networks"/);
    const everywhere = await statusCode(custom.listClusterCustomObject(base));
    assert.equal(everywhere.code, 403);
  });

  it('answers 401 with a Status to a request without a client certificate', async () => {
    const ca = loadCertificateAuthority(dir).certPem;
    const { code, body } = await new Promise<{ code: number; body: string }>((resolve, reject) => {
      const req = request(`${plane.apiServer.url}/api`, { ca, timeout: 5000 }, (res) => {
        let text = '';
        res.on('data', (chunk: Buffer) => {
          text += chunk.toString();
        });
        res.on('end', () => resolve({ code: res.statusCode ?? 0, body: text }));
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(code, 401);
    assert.equal((JSON.parse(body) as { reason: string }).reason, 'Unauthorized');
  });

  it('names an object from generateName, and deletes a collection by label', async () => {
    const call = apiClient(plane.kubeconfigPath);
    const path = '/apis/loam.dev/v1alpha1/namespaces/default/networks';
    const names: string[] = [];
    for (let i = 0; i < 3; i++) {
      const created = await call(
        'POST',
        path,
        JSON.stringify({ ...network(''), metadata: { generateName: 'gen-', labels: { batch: 'b1' } } }),
      );
      assert.equal(created.code, 201, created.text);
      names.push((created.json as { metadata: { name: string } }).metadata.name);
    }
    for (const name of names) assert.match(name, /^gen-[bcdfghjklmnpqrstvwxz2456789]{5}$/);
    assert.equal(new Set(names).size, 3);
    const deleted = await call('DELETE', `${path}?labelSelector=batch%3Db1`);
    assert.equal(deleted.code, 200, deleted.text);
    assert.equal((deleted.json as { items: unknown[] }).items.length, 3);
    const left = await call('GET', `${path}?labelSelector=batch%3Db1`);
    assert.deepEqual(left.json?.items, []);
  });

  it('ends a watch cleanly at timeoutSeconds', async () => {
    const call = apiClient(plane.kubeconfigPath);
    const started = Date.now();
    const watched = await call(
      'GET',
      '/apis/loam.dev/v1alpha1/namespaces/default/networks?watch=1&timeoutSeconds=1',
    );
    assert.equal(watched.code, 200);
    assert.ok(Date.now() - started >= 900, 'the stream stayed open for about a second');
    // Only ADDED events for what exists: no ERROR at the end of a timed-out watch.
    for (const line of watched.text.split('\n').filter(Boolean)) {
      assert.equal((JSON.parse(line) as { type: string }).type, 'ADDED');
    }
  });
});
