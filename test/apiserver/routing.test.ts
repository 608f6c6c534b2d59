import assert from 'node:assert/strict';
import { routeRequest } from '../../controllers/apiserver/routing.js';
import { servedKinds } from '../../crds/builtin.js';

describe('apiserver routing', () => {
  const rows: [string, string, 'other' | ({ kind: string } & Record<string, unknown>)][] = [
    [
      'GET',
      '/apis/loam.dev/v1alpha1/namespaces/dev/instances',
      { kind: 'Instance', verb: 'list', namespace: 'dev' },
    ],
    [
      'GET',
      '/apis/loam.dev/v1alpha1/namespaces/dev/instances?watch=1',
      { kind: 'Instance', verb: 'watch', namespace: 'dev' },
    ],
    ['GET', '/apis/loam.dev/v1alpha1/instances', { kind: 'Instance', verb: 'list' }],
    [
      'GET',
      '/apis/loam.dev/v1alpha1/namespaces/dev/instances/web',
      { kind: 'Instance', verb: 'get', namespace: 'dev', name: 'web' },
    ],
    [
      'PUT',
      '/apis/loam.dev/v1alpha1/namespaces/dev/instances/web/status',
      { kind: 'Instance', verb: 'update', name: 'web', subresource: 'status' },
    ],
    [
      'POST',
      '/apis/loam.dev/v1alpha1/namespaces/dev/networks',
      { kind: 'Network', verb: 'create', namespace: 'dev' },
    ],
    [
      'DELETE',
      '/apis/loam.dev/v1alpha1/namespaces/dev/networks',
      { kind: 'Network', verb: 'deletecollection' },
    ],
    ['PATCH', '/apis/loam.dev/v1alpha1/hosts/hv1', { kind: 'Host', verb: 'patch', name: 'hv1' }],
    ['GET', '/api/v1/namespaces', { kind: 'Namespace', verb: 'list' }],
    ['GET', '/api/v1/namespaces/dev', { kind: 'Namespace', verb: 'get', name: 'dev' }],
    [
      'PUT',
      '/api/v1/namespaces/dev/status',
      { kind: 'Namespace', verb: 'update', name: 'dev', subresource: 'status' },
    ],
    ['GET', '/api/v1/namespaces/dev/secrets/s', { kind: 'Secret', verb: 'get', namespace: 'dev', name: 's' }],
    [
      'GET',
      '/apis/coordination.k8s.io/v1/namespaces/kube-system/leases',
      { kind: 'Lease', verb: 'list', namespace: 'kube-system' },
    ],
    [
      'GET',
      '/apis/loam.dev/v1alpha1/namespaces/dev/instances/web/console',
      { kind: 'Instance', verb: 'get', namespace: 'dev', name: 'web', subresource: 'console' },
    ],
    [
      'PUT',
      '/apis/loam.dev/v1alpha1/namespaces/dev/instances/web/reboot',
      { kind: 'Instance', verb: 'update', namespace: 'dev', name: 'web', subresource: 'reboot' },
    ],
    ['GET', '/apis/loam.dev/v1alpha1/namespaces/dev/networks/lab/console', 'other'], // Instances only
    ['PUT', '/apis/loam.dev/v1alpha1/namespaces/dev/networks/lab/reset', 'other'],
    ['GET', '/apis/loam.dev/v1alpha1/namespaces/dev/instances/web/console/x', 'other'],
    ['GET', '/apis/loam.dev/v1alpha1/instances/web', 'other'], // a namespaced item needs its namespace
    ['GET', '/apis/loam.dev/v1alpha1/namespaces/dev/hosts', 'other'], // hosts are cluster-scoped
    ['GET', '/apis/loam.dev/v1alpha1/namespaces/dev/secrets/s/status', 'other'],
    ['GET', '/api/v1/namespaces/dev/secrets/s/status', 'other'], // Secret has no status subresource
    ['GET', '/apis/loam.dev/v1beta1/instances', 'other'],
    ['GET', '/version', 'other'],
  ];
  for (const [method, path, expected] of rows) {
    it(`${method} ${path}`, () => {
      const route = routeRequest(method, new URL(path, 'https://loam'), servedKinds);
      if (expected === 'other') {
        assert.equal(route.type, 'other');
        return;
      }
      assert.equal(route.type, 'resource');
      if (route.type !== 'resource') return;
      const { kind, ...rest } = expected;
      assert.equal(route.kind.kind, kind);
      for (const [key, value] of Object.entries(rest))
        assert.equal(route[key as keyof typeof route], value, key);
    });
  }

  it('refuses a method a resource does not take', () => {
    assert.throws(
      () =>
        routeRequest(
          'POST',
          new URL('https://loam/apis/loam.dev/v1alpha1/namespaces/dev/instances/web'),
          servedKinds,
        ),
      /does not allow this method/,
    );
    // A connect subresource is read (GET, upgraded to a WebSocket) and nothing else.
    for (const method of ['POST', 'PUT', 'PATCH', 'DELETE']) {
      assert.throws(
        () =>
          routeRequest(
            method,
            new URL('https://loam/apis/loam.dev/v1alpha1/namespaces/dev/instances/web/console'),
            servedKinds,
          ),
        /does not allow this method/,
        method,
      );
    }
    // An action subresource is put (as KubeVirt's restart) and nothing else.
    for (const method of ['GET', 'POST', 'PATCH', 'DELETE']) {
      assert.throws(
        () =>
          routeRequest(
            method,
            new URL('https://loam/apis/loam.dev/v1alpha1/namespaces/dev/instances/web/stop'),
            servedKinds,
          ),
        /does not allow this method/,
        method,
      );
    }
  });
});
