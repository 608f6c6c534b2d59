/**
 * Two control planes on one etcd, each a real `loam up` process with a copy of the first one's
 * PKI: both serve the API, the elected one runs the hub and the controllers. The leader is killed
 * (SIGKILL); the other takes the Lease once it expires (15 s), opens the hub on the same address,
 * the agent reconnects by itself, and work applied meanwhile completes.
 */
import assert from 'node:assert/strict';
import { cpSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { RecordingHypervisor } from '../../agents/runtime/testing/recording-hypervisor.js';
import { createBootstrapToken } from '../../controllers/pki/bootstrap-tokens.js';
import { leaderLease } from '../../controllers/up.js';
import type { Instance } from '../../crds/v1alpha1/index.js';
import type { TestAgent } from '../agents/hub-double.js';
import { ConsoleProcess } from '../harness/console.js';
import { EtcdServer } from '../harness/etcd.js';
import { joinAgent } from '../harness/join.js';
import { LoamProcess } from '../harness/loam.js';
import { tempDir } from '../harness/plane.js';
import { freePort, pollUntil } from '../harness/poll.js';

const group = { group: 'loam.dev', version: 'v1alpha1', plural: 'instances', namespace: 'default' };

function instance(name: string) {
  return {
    apiVersion: 'loam.dev/v1alpha1',
    kind: 'Instance',
    metadata: { name, namespace: 'default' },
    spec: { cpus: 1, memory: '64Mi', kernel: { url: 'http://127.0.0.1:1/k', sha256: 'b'.repeat(64) } },
  };
}

function client(kubeconfig: string) {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(kubeconfig);
  return kc;
}

describe('two control planes, the leader killed', function () {
  this.timeout(120_000);
  let dir: string;
  let etcd: EtcdServer;
  const planes: LoamProcess[] = [];
  let agent: TestAgent<RecordingHypervisor> | undefined;

  after(async () => {
    await agent?.agent.stop();
    await Promise.all(planes.map((plane) => plane.stop()));
    await etcd?.kill();
    rmSync(dir, { recursive: true, force: true });
  });

  it('hands the hub and the controllers to the other, which finishes the work', async () => {
    dir = tempDir('failover');
    etcd = await EtcdServer.start();
    const agentPort = await freePort();
    const options = { store: 'etcd' as const, etcdEndpoints: [etcd.endpoint], agentPort };
    const first = await LoamProcess.start({ ...options, dataDir: join(dir, 'a') });
    planes.push(first);
    cpSync(join(dir, 'a', 'pki'), join(dir, 'b', 'pki'), { recursive: true });
    const second = await LoamProcess.start({ ...options, dataDir: join(dir, 'b') });
    planes.push(second);

    const kcA = client(first.kubeconfig);
    const { token } = await createBootstrapToken(k8s.KubernetesObjectApi.makeApiClient(kcA), {
      ttlSeconds: 600,
      usages: 1,
      role: 'libvirt',
    });
    agent = await joinAgent({
      role: 'libvirt',
      name: 'hv1',
      driver: new RecordingHypervisor(),
      planeDir: join(dir, 'a'),
      agentPort,
      token,
      dataDir: join(dir, 'agents'),
      // Reconnects every second at most while no hub listens between the two leaders.
      config: { backoff: { initialMs: 100, maxMs: 1000 } },
    });
    const apiA = kcA.makeApiClient(k8s.CustomObjectsApi);
    await apiA.createNamespacedCustomObject({ ...group, body: instance('before') });
    const phase = async (api: k8s.CustomObjectsApi, name: string) =>
      ((await api.getNamespacedCustomObject({ ...group, name })) as Instance).status?.phase;
    await pollUntil(async () => (await phase(apiA, 'before')) === 'Running', {
      timeoutMs: 30_000,
      what: 'the first Instance to run under the first leader',
    });

    const coordination = kcA.makeApiClient(k8s.CoordinationV1Api);
    const leader = (await coordination.readNamespacedLease(leaderLease)).spec?.holderIdentity ?? '';
    const [dead, survivorDir] = leader.includes(`_${first.pid}_`) ? [first, 'b'] : [second, 'a'];
    // A console goes through the hub, which only the leader runs: the other one says so.
    const standby = dead === first ? second : first;
    const refused = ConsoleProcess.start('default/before', standby.kubeconfig);
    assert.equal(await refused.exited(), 1, refused.stderr);
    assert.match(refused.stderr, /^loam: cannot open the console .*does not run the agent hub now/);
    await dead.kill();
    const killedAt = Date.now();
    // Work applied while no leader runs, through the other control plane's API.
    const kcB = client(join(dir, survivorDir, 'admin.kubeconfig'));
    const apiB = kcB.makeApiClient(k8s.CustomObjectsApi);
    await apiB.createNamespacedCustomObject({ ...group, body: instance('after') });
    const coordinationB = kcB.makeApiClient(k8s.CoordinationV1Api);
    await pollUntil(
      async () => (await coordinationB.readNamespacedLease(leaderLease)).spec?.holderIdentity !== leader,
      { timeoutMs: 30_000, what: 'the other control plane to take the Lease' },
    );
    const leaseTakenMs = Date.now() - killedAt;
    // client-go's timing: 15 s without renewal, noticed within a 2 s retry period.
    assert.ok(leaseTakenMs < 18_000, `took the Lease ${leaseTakenMs} ms after the kill`);

    await pollUntil(async () => (await phase(apiB, 'after')) === 'Running', {
      timeoutMs: 45_000,
      what: 'the Instance applied after the kill to run under the new leader',
    });
    const takeoverMs = Date.now() - killedAt;
    assert.ok(takeoverMs < 30_000, `the work completed ${takeoverMs} ms after the kill`);
    assert.equal(await phase(apiB, 'before'), 'Running', 'the first Instance is untouched');
    assert.deepEqual(
      agent.driver.jobs.map((job) => `${job.type} ${job.object.metadata.name}`),
      ['instance.apply before', 'instance.apply after'],
      'no job twice',
    );
  });
});
