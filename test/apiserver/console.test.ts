/**
 * Which console the API server asks the hub for, and when it refuses: over the embedded store,
 * with a hub double (test/e2e/console.test.ts runs the whole path).
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { openInstanceStream, type StreamHub } from '../../controllers/apiserver/console.js';
import { Resources } from '../../controllers/apiserver/resources.js';
import type { ResourceRequest } from '../../controllers/apiserver/routing.js';
import { openStore } from '../../controllers/storage/index.js';
import type { Store } from '../../controllers/storage/store.js';
import { namespaceKind } from '../../crds/builtin.js';
import { type ErrorCode, isLoamError } from '../../crds/errors.js';
import { instanceKind } from '../../crds/v1alpha1/index.js';
import { tempDir } from '../harness/plane.js';

describe('apiserver/console: openInstanceStream', () => {
  let dir: string;
  let store: Store;
  let resources: Resources;
  const asked: Parameters<StreamHub['openStream']>[] = [];
  const stream = new PassThrough();
  const hub: StreamHub = {
    openStream: async (...args) => {
      asked.push(args);
      return stream;
    },
  };
  const route = (name: string): ResourceRequest => ({
    type: 'resource',
    kind: instanceKind,
    verb: 'get',
    namespace: 'default',
    name,
    subresource: 'console',
  });

  /** An Instance `name` with `status`; resolves to its uid. */
  async function instance(name: string, status?: Record<string, unknown>): Promise<string> {
    const created = await resources.create(
      { type: 'resource', kind: instanceKind, verb: 'create', namespace: 'default' },
      {
        apiVersion: 'loam.dev/v1alpha1',
        kind: 'Instance',
        metadata: { name },
        spec: { kernel: { url: 'http://127.0.0.1:1/k', sha256: 'a'.repeat(64) } },
      },
    );
    if (status !== undefined) {
      await resources.update(
        { ...route(name), verb: 'update', subresource: 'status' },
        { ...created, status },
      );
    }
    return created.metadata.uid as string;
  }

  const refuses = (name: string, hubHere: StreamHub | undefined, code: ErrorCode, message: RegExp) =>
    assert.rejects(openInstanceStream(route(name), resources, hubHere), (err) => {
      assert.ok(isLoamError(err, code), `${code} expected: ${err}`);
      assert.match(err.message, message);
      return true;
    });

  before(async () => {
    dir = tempDir('apiserver-console');
    store = openStore({ backend: 'sqlite', path: join(dir, 'loam.db') });
    resources = new Resources(store);
    await resources.create(
      { type: 'resource', kind: namespaceKind, verb: 'create' },
      { metadata: { name: 'default' } },
    );
  });

  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("asks the Host's libvirt agent for the Instance's console", async () => {
    const uid = await instance('web', { phase: 'Running', host: 'hv1' });
    assert.equal(await openInstanceStream(route('web'), resources, hub), stream);
    assert.deepEqual(asked.pop(), [
      { role: 'libvirt', name: 'hv1' },
      { kind: 'console', resource: { kind: 'Instance', namespace: 'default', name: 'web', uid } },
    ]);
  });

  it('asks while the phase is Unknown: the hub knows whether the agent is there', async () => {
    await instance('lost', { phase: 'Unknown', host: 'hv2' });
    await openInstanceStream(route('lost'), resources, hub);
    assert.deepEqual(asked.pop()?.[0], { role: 'libvirt', name: 'hv2' });
  });

  it('refuses: no Instance (404), not on a Host or not running (409), no hub here (503)', async () => {
    await refuses('nope', hub, 'NotFound', /^instances\.loam\.dev "nope" not found$/);
    await instance('new');
    await refuses(
      'new',
      hub,
      'Conflict',
      /"new": the Instance is not scheduled to a Host \(phase Pending\)$/,
    );
    await instance('off', { phase: 'Stopped', host: 'hv1' });
    await refuses(
      'off',
      hub,
      'Conflict',
      /"off": the Instance is not running on Host hv1 \(phase Stopped\)$/,
    );
    await refuses('web', undefined, 'Unavailable', /does not run the agent hub now/);
    assert.equal(asked.length, 0, 'nothing asked of the hub');
  });
});
