/**
 * `loam up` with the agents of its own machine: they enroll over loopback with a token the
 * control plane makes itself, so one command gives a working system; a restart reuses their
 * identity instead of enrolling again.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { RecordingHypervisor } from '../../agents/runtime/testing/recording-hypervisor.js';
import type { ControlPlane } from '../../controllers/up.js';
import type { Host, Instance } from '../../crds/v1alpha1/index.js';
import { startPlane, tempDir } from '../harness/plane.js';
import { pollUntil } from '../harness/poll.js';

const group = { group: 'loam.dev', version: 'v1alpha1' };
const machine = (hostname().split('.')[0] ?? '').toLowerCase();

describe('loam up with local agents', function () {
  this.timeout(60_000);
  let dir: string;
  let plane: ControlPlane | undefined;

  after(async () => {
    await plane?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const start = () =>
    startPlane(join(dir, 'plane'), {
      controllers: true,
      localAgents: [{ role: 'libvirt', driver: new RecordingHypervisor(), metricsAddress: '127.0.0.1:0' }],
    });

  function api(cp: ControlPlane) {
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(cp.kubeconfigPath);
    return kc.makeApiClient(k8s.CustomObjectsApi);
  }

  async function readyHost(custom: k8s.CustomObjectsApi): Promise<Host> {
    let host: Host | undefined;
    await pollUntil(
      async () => {
        const list = (await custom.listClusterCustomObject({ ...group, plural: 'hosts' })) as {
          items: Host[];
        };
        host = list.items.find((h) => h.metadata.name === machine);
        return host?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
      },
      { timeoutMs: 20_000, what: `Host ${machine} to be Ready` },
    );
    return host as Host;
  }

  it('enrolls this machine as a Host that runs Instances, and keeps its identity across restarts', async () => {
    dir = tempDir('local-agents');
    plane = await start();
    const custom = api(plane);
    const host = await readyHost(custom);
    await custom.createNamespacedCustomObject({
      ...group,
      plural: 'instances',
      namespace: 'default',
      body: {
        apiVersion: 'loam.dev/v1alpha1',
        kind: 'Instance',
        metadata: { name: 'hello', namespace: 'default' },
        spec: { cpus: 1, memory: '64Mi', kernel: { url: 'http://127.0.0.1:1/k', sha256: 'c'.repeat(64) } },
      },
    });
    let instance: Instance | undefined;
    await pollUntil(
      async () => {
        instance = (await custom.getNamespacedCustomObject({
          ...group,
          plural: 'instances',
          namespace: 'default',
          name: 'hello',
        })) as Instance;
        return instance.status?.phase === 'Running';
      },
      { timeoutMs: 20_000, what: () => `the Instance to run: ${JSON.stringify(instance?.status)}` },
    );
    assert.equal(instance?.status?.host, machine);

    await plane.stop();
    plane = await start();
    const again = await readyHost(api(plane));
    assert.equal(again.metadata.uid, host.metadata.uid, 'the same Host, not a second enrollment');
  });
});
