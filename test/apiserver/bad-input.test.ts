/**
 * Bad input, each as a client could send it: the right Status (code, reason, and the field where
 * there is one), and nothing written — the store revision stays where it was.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import type { ControlPlane } from '../../controllers/up.js';
import { type ApiResponse, apiClient } from '../harness/https.js';
import { startPlane, tempDir } from '../harness/plane.js';

const networks = '/apis/loam.dev/v1alpha1/namespaces/default/networks';

function network(name: string, extra: Record<string, unknown> = {}) {
  return {
    apiVersion: 'loam.dev/v1alpha1',
    kind: 'Network',
    metadata: { name },
    spec: { cidr: '10.20.0.0/24' },
    ...extra,
  };
}

const yamlBomb = [
  'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
  ...Array.from({ length: 8 }, (_, i) => {
    const name = String.fromCharCode(98 + i);
    const previous = String.fromCharCode(97 + i);
    return `${name}: &${name} [${Array(9).fill(`*${previous}`).join(',')}]`;
  }),
].join('\n');

interface Row {
  what: string;
  method: string;
  path: string;
  body?: string;
  headers?: Record<string, string>;
  code: number;
  reason: string;
  /** A pattern the Status message must match, or the field a cause must name. */
  message?: RegExp;
  field?: string;
}

const rows: Row[] = [
  {
    what: 'malformed JSON',
    method: 'POST',
    path: networks,
    body: '{"apiVersion": "loam.dev/v1alpha1", ',
    code: 400,
    reason: 'BadRequest',
    message: /not valid JSON/,
  },
  {
    what: 'a YAML bomb',
    method: 'POST',
    path: networks,
    body: yamlBomb,
    headers: { 'content-type': 'application/yaml' },
    code: 400,
    reason: 'BadRequest',
    message: /not valid YAML/,
  },
  {
    what: 'a deeply nested body',
    method: 'POST',
    path: networks,
    body: JSON.stringify({
      ...network('deep'),
      spec: { cidr: '10.20.0.0/24', x: JSON.parse(`${'{"a":'.repeat(200)}1${'}'.repeat(200)}`) },
    }),
    code: 400,
    reason: 'BadRequest',
    message: /nests deeper than 100 levels/,
  },
  {
    what: 'a body over 3 MiB',
    method: 'POST',
    path: networks,
    body: JSON.stringify({
      ...network('big'),
      metadata: { name: 'big', annotations: { pad: 'x'.repeat(3 * 1024 * 1024) } },
    }),
    code: 413,
    reason: 'RequestEntityTooLarge',
  },
  {
    what: 'the wrong apiVersion',
    method: 'POST',
    path: networks,
    body: JSON.stringify({ ...network('v'), apiVersion: 'loam.dev/v1' }),
    code: 400,
    reason: 'BadRequest',
    message: /does not match the expected API version/,
  },
  {
    what: 'the wrong kind',
    method: 'POST',
    path: networks,
    body: JSON.stringify({ ...network('k'), kind: 'Instance' }),
    code: 400,
    reason: 'BadRequest',
    message: /kind in the data \(Instance\)/,
  },
  {
    what: 'a name that is not a DNS label',
    method: 'POST',
    path: networks,
    body: JSON.stringify(network('Bad_Name')),
    code: 422,
    reason: 'Invalid',
    field: 'metadata.name',
  },
  {
    what: 'a bad field value',
    method: 'POST',
    path: networks,
    body: JSON.stringify({ ...network('c'), spec: { cidr: '10.20.0.1/24' } }),
    code: 422,
    reason: 'Invalid',
    field: 'spec.cidr',
  },
  {
    what: 'an unknown field under Strict',
    method: 'POST',
    path: `${networks}?fieldValidation=Strict`,
    body: JSON.stringify({ ...network('u'), spec: { cidr: '10.20.0.0/24', egres: true } }),
    code: 400,
    reason: 'BadRequest',
    message: /unknown field "spec\.egres"/,
  },
  {
    what: 'a stale resourceVersion',
    method: 'PUT',
    path: `${networks}/existing`,
    body: JSON.stringify({
      ...network('existing', { metadata: { name: 'existing', resourceVersion: '1' } }),
    }),
    code: 409,
    reason: 'Conflict',
    message: /the object has been modified/,
  },
  {
    what: 'a patch of a missing object',
    method: 'PATCH',
    path: `${networks}/missing`,
    body: '{"spec":{"egress":true}}',
    headers: { 'content-type': 'application/merge-patch+json' },
    code: 404,
    reason: 'NotFound',
    message: /networks.loam.dev "missing" not found/,
  },
  {
    what: 'a strategic merge patch of a loam.dev kind',
    method: 'PATCH',
    path: `${networks}/existing`,
    body: '{"spec":{"egress":true}}',
    headers: { 'content-type': 'application/strategic-merge-patch+json' },
    code: 415,
    reason: 'UnsupportedMediaType',
  },
  {
    what: 'an invalid label selector',
    method: 'GET',
    path: `${networks}?labelSelector=${encodeURIComponent('a in (b')}`,
    code: 400,
    reason: 'BadRequest',
  },
  {
    what: 'an unsupported field selector',
    method: 'GET',
    path: `${networks}?fieldSelector=spec.cidr%3D10.20.0.0%2F24`,
    code: 400,
    reason: 'BadRequest',
    message: /field label not supported: spec\.cidr/,
  },
  {
    what: 'an unknown propagationPolicy',
    method: 'DELETE',
    path: `${networks}/existing`,
    body: '{"propagationPolicy":"Sideways"}',
    code: 422,
    reason: 'Invalid',
    field: 'propagationPolicy',
  },
  {
    what: 'an unknown dryRun value',
    method: 'POST',
    path: `${networks}?dryRun=Yes`,
    body: JSON.stringify(network('d')),
    code: 400,
    reason: 'BadRequest',
    message: /Invalid dryRun value/,
  },
  {
    what: 'a change to an immutable field',
    method: 'PATCH',
    path: `${networks}/existing`,
    body: '{"spec":{"cidr":"10.21.0.0/24"}}',
    headers: { 'content-type': 'application/merge-patch+json' },
    code: 422,
    reason: 'Invalid',
    field: 'spec.cidr',
  },
];

describe('API server bad input', function () {
  this.timeout(60_000);
  let dir: string;
  let plane: ControlPlane;
  let call: ReturnType<typeof apiClient>;

  const revision = async () => {
    const res = await call('GET', '/api/v1/namespaces');
    return (res.json as { metadata: { resourceVersion: string } }).metadata.resourceVersion;
  };

  before(async () => {
    dir = tempDir('bad-input');
    plane = await startPlane(dir);
    call = apiClient(plane.kubeconfigPath);
    const created = await call('POST', networks, JSON.stringify(network('existing')));
    assert.equal(created.code, 201, created.text);
  });
  after(async () => {
    await plane?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const row of rows) {
    it(`answers ${row.code} ${row.reason} to ${row.what}, changing nothing`, async () => {
      const before = await revision();
      const res: ApiResponse = await call(row.method, row.path, row.body, row.headers);
      assert.equal(res.code, row.code, res.text.slice(0, 300));
      assert.equal(res.json?.kind, 'Status');
      assert.equal(res.json?.reason, row.reason);
      assert.equal(res.json?.code, row.code);
      if (row.message) assert.match(res.json?.message as string, row.message);
      if (row.field) {
        const causes = (res.json?.details as { causes?: { field: string }[] } | undefined)?.causes ?? [];
        assert.ok(
          causes.some((c) => c.field === row.field),
          `a cause names ${row.field}: ${JSON.stringify(causes)}`,
        );
      }
      assert.equal(await revision(), before, 'the store is unchanged');
    });
  }

  it('runs a dry-run create through admission without storing it', async () => {
    const before = await revision();
    const res = await call('POST', `${networks}?dryRun=All`, JSON.stringify(network('dry')));
    assert.equal(res.code, 201, res.text);
    assert.deepEqual((res.json as { spec: { dhcp: unknown } }).spec.dhcp, {
      enabled: true,
      leaseTime: '12h',
    });
    assert.equal((await call('GET', `${networks}/dry`)).code, 404);
    assert.equal(await revision(), before);
  });
});
