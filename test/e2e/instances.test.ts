/**
 * The Instance controller end to end: `loam up` (the real API server, hub and controllers) and a
 * real agent runtime whose driver is a recording hypervisor (the libvirt driver has its own
 * tests). Apply -> scheduled -> job at the agent -> observed -> Running, deletion through the
 * finalizer, and restarts of the agent and of the control plane while a job is in flight.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import * as k8s from '@kubernetes/client-node';
import type { Driver } from '../../agents/runtime/driver.js';
import { placeholderDriver } from '../../agents/runtime/placeholder-driver.js';
import { gate } from '../../agents/runtime/testing/driver.js';
import { RecordingHypervisor } from '../../agents/runtime/testing/recording-hypervisor.js';
import { createBootstrapToken } from '../../controllers/pki/bootstrap-tokens.js';
import type { ControlPlane } from '../../controllers/up.js';
import type { Host, Instance } from '../../crds/v1alpha1/index.js';
import type { TestAgent } from '../agents/hub-double.js';
import { apiClient } from '../harness/https.js';
import { joinAgent } from '../harness/join.js';
import { startPlane, tempDir } from '../harness/plane.js';
import { freePort, pollUntil } from '../harness/poll.js';

const group = { group: 'loam.dev', version: 'v1alpha1' };

const network = {
  apiVersion: 'loam.dev/v1alpha1',
  kind: 'Network',
  metadata: { name: 'lab', namespace: 'default' },
  spec: { cidr: '10.20.0.0/24', dhcp: { rangeStart: '10.20.0.100', rangeEnd: '10.20.0.199' } },
};

function instance(name: string, extra: Record<string, unknown> = {}) {
  return {
    apiVersion: 'loam.dev/v1alpha1',
    kind: 'Instance',
    metadata: { name, namespace: 'default' },
    spec: {
      cpus: 1,
      memory: '256Mi',
      kernel: { url: 'http://127.0.0.1:1/vmlinuz', sha256: 'a'.repeat(64) },
      networks: [{ name: 'lab' }],
      ...extra,
    },
  };
}

describe('Instances end to end, with a recording hypervisor', function () {
  this.timeout(90_000);
  let dir: string;
  let agentPort: number;
  let plane: ControlPlane | undefined;
  let api: k8s.CustomObjectsApi;
  const agents: TestAgent<Driver>[] = [];
  let token: string;

  async function startHypervisor<D extends Driver = RecordingHypervisor>(
    name: string,
    driver: D = new RecordingHypervisor() as Driver as D,
  ) {
    const running = await joinAgent({
      role: 'libvirt',
      name,
      driver,
      planeDir: join(dir, 'plane'),
      agentPort,
      token,
      dataDir: dir,
    });
    agents.push(running);
    return running;
  }

  async function get(name: string): Promise<Instance | undefined> {
    try {
      return (await api.getNamespacedCustomObject({
        ...group,
        plural: 'instances',
        namespace: 'default',
        name,
      })) as Instance;
    } catch (err) {
      if (err instanceof k8s.ApiException && err.code === 404) return undefined;
      throw err;
    }
  }

  async function phaseOf(name: string, phase: string): Promise<Instance> {
    let last: Instance | undefined;
    await pollUntil(
      async () => {
        last = await get(name);
        return last?.status?.phase === phase;
      },
      { timeoutMs: 20_000, what: () => `Instance ${name} to be ${phase}: ${JSON.stringify(last?.status)}` },
    );
    return last as Instance;
  }

  let kc: k8s.KubeConfig;

  function connect(cp: ControlPlane) {
    kc = new k8s.KubeConfig();
    kc.loadFromFile(cp.kubeconfigPath);
    api = kc.makeApiClient(k8s.CustomObjectsApi);
    return kc;
  }

  before(async () => {
    dir = tempDir('instances');
    agentPort = await freePort();
    plane = await startPlane(join(dir, 'plane'), {
      controllers: true,
      agentPort,
      jobDeadlineMs: 5_000,
      hub: { disconnectGraceSeconds: 2 },
    });
    const kc = connect(plane);
    ({ token } = await createBootstrapToken(k8s.KubernetesObjectApi.makeApiClient(kc), {
      ttlSeconds: 600,
      usages: 10,
      role: 'libvirt',
    }));
    await api.createNamespacedCustomObject({
      ...group,
      plural: 'networks',
      namespace: 'default',
      body: network,
    });
  });

  after(async () => {
    await Promise.all(agents.map(({ agent }) => agent.stop()));
    await plane?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('schedules, dispatches once, reports Running with an address, and deletes through the finalizer', async () => {
    const { driver } = await startHypervisor('hv1');
    await api.createNamespacedCustomObject({
      ...group,
      plural: 'instances',
      namespace: 'default',
      body: instance('web'),
    });
    const running = await phaseOf('web', 'Running');
    assert.equal(running.status?.host, 'hv1');
    assert.equal(
      running.status?.interfaces?.[0]?.ipAddress,
      '10.20.0.2',
      'the first address after the gateway, outside the DHCP pool',
    );
    assert.deepEqual(running.metadata.finalizers, ['loam.dev/instance-protection']);
    const ready = running.status?.conditions?.find((c) => c.type === 'Ready');
    assert.equal(ready?.status, 'True');
    assert.deepEqual(
      driver.jobs.map((job) => job.type),
      ['instance.apply'],
      'one job for one Instance',
    );
    const core = kc.makeApiClient(k8s.CoreV1Api);
    let reasons: string[] = [];
    await pollUntil(
      async () => {
        const events = await core.listNamespacedEvent({ namespace: 'default' });
        reasons = events.items.filter((e) => e.involvedObject.name === 'web').map((e) => e.reason ?? '');
        return reasons.includes('Scheduled') && reasons.includes('Running');
      },
      { timeoutMs: 10_000, what: () => `Events for web (so far: ${reasons.join(', ')})` },
    );

    await api.deleteNamespacedCustomObject({
      ...group,
      plural: 'instances',
      namespace: 'default',
      name: 'web',
    });
    await pollUntil(async () => (await get('web')) === undefined, { timeoutMs: 20_000, what: 'web to go' });
    assert.deepEqual(
      driver.jobs.map((job) => job.type),
      ['instance.apply', 'instance.delete'],
    );
    assert.equal(driver.running().size, 0, 'the domain is gone');
  });

  it('redoes a job whose agent restarted before answering, and ends with one domain', async () => {
    const hv1 = agents[0] as TestAgent<RecordingHypervisor>;
    const held = gate();
    hv1.driver.beforeAnswer = () => held.promise;
    await api.createNamespacedCustomObject({
      ...group,
      plural: 'instances',
      namespace: 'default',
      body: instance('db'),
    });
    await pollUntil(() => hv1.driver.jobs.some((j) => j.object.metadata.name === 'db'), {
      timeoutMs: 20_000,
      what: 'the apply job to reach the agent',
    });
    await hv1.agent.stop();
    agents.splice(agents.indexOf(hv1), 1);
    held.open();

    const again = await startHypervisor('hv1');
    const running = await phaseOf('db', 'Running');
    assert.equal(running.status?.host, 'hv1');
    assert.equal(
      again.driver.jobs.filter((j) => j.type === 'instance.apply').length,
      1,
      'the lost job is sent once more, to the agent back',
    );
    assert.deepEqual([...again.driver.running().keys()], ['default/db']);
  });

  it('finishes provisioning across a control-plane restart, without sending the job twice', async () => {
    const stateFile = join(dir, 'hv2-domains.json');
    const hv2 = await startHypervisor('hv2', new RecordingHypervisor({ stateFile }));
    const held = gate();
    hv2.driver.beforeAnswer = () => held.promise;
    await api.createNamespacedCustomObject({
      ...group,
      plural: 'instances',
      namespace: 'default',
      body: instance('cache', { host: 'hv2' }),
    });
    await pollUntil(() => hv2.driver.jobs.length === 1, { timeoutMs: 20_000, what: 'the job at hv2' });
    const before = await get('cache');
    await plane?.stop();
    plane = undefined;
    // The agent finishes the job while no control plane runs; its answer is lost.
    held.open();
    await pollUntil(() => hv2.driver.running().get('default/cache')?.state === 'running', {
      timeoutMs: 5_000,
      what: 'the domain to run',
    });

    plane = await startPlane(join(dir, 'plane'), {
      controllers: true,
      agentPort,
      jobDeadlineMs: 5_000,
      hub: { disconnectGraceSeconds: 2 },
    });
    connect(plane);
    const running = await phaseOf('cache', 'Running');
    assert.equal(hv2.driver.jobs.length, 1, 'the inventory told the new control plane; no second job');
    assert.deepEqual(running.status?.interfaces, before?.status?.interfaces, 'the same address and MAC');
  });

  it('marks the Instances of a Host that stays unreachable Unknown, never moves them, and recovers', async () => {
    const hv2 = agents.find((a) => a.config.name === 'hv2') as TestAgent<RecordingHypervisor>;
    await hv2.agent.stop();
    agents.splice(agents.indexOf(hv2), 1);
    const unknown = await phaseOf('cache', 'Unknown');
    assert.equal(unknown.status?.host, 'hv2', 'local disks: never rescheduled');
    const reachable = unknown.status?.conditions?.find((c) => c.type === 'HostReachable');
    assert.equal(reachable?.status, 'False');
    assert.match(reachable?.message ?? '', /hv2/);

    await startHypervisor('hv2', new RecordingHypervisor({ stateFile: join(dir, 'hv2-domains.json') }));
    const back = await phaseOf('cache', 'Running');
    assert.equal(back.status?.conditions?.find((c) => c.type === 'HostReachable')?.status, 'True');
  });

  it('shows an Instance whose agent cannot run the job as Failed, with the answer of the agent', async () => {
    const hv3 = await startHypervisor('hv3', placeholderDriver('libvirt'));
    await api.createNamespacedCustomObject({
      ...group,
      plural: 'instances',
      namespace: 'default',
      body: instance('nodriver', { host: 'hv3' }),
    });
    const failed = await phaseOf('nodriver', 'Failed');
    const provisioned = failed.status?.conditions?.find((c) => c.type === 'Provisioned');
    assert.equal(provisioned?.reason, 'ProvisioningFailed');
    assert.match(provisioned?.message ?? '', /cannot run instance.apply jobs yet/);
    await hv3.agent.stop();
    agents.splice(agents.indexOf(hv3), 1);
  });

  it('sends user data from a Secret inline, and says so while the Secret is missing', async () => {
    const core = kc.makeApiClient(k8s.CoreV1Api);
    await core.createNamespacedSecret({
      namespace: 'default',
      body: {
        metadata: { name: 'cfg-userdata' },
        data: { userdata: Buffer.from('#cloud-config\nhostname: cfg\n').toString('base64') },
      },
    });
    const fromSecret = (name: string, secret: string) =>
      instance(name, {
        host: 'hv1',
        kernel: undefined,
        image: { url: 'http://127.0.0.1:1/disk.qcow2', sha256: 'd'.repeat(64) },
        cloudInit: { userDataSecretRef: { name: secret } },
      });
    await api.createNamespacedCustomObject({
      ...group,
      plural: 'instances',
      namespace: 'default',
      body: fromSecret('cfg', 'cfg-userdata'),
    });
    await phaseOf('cfg', 'Running');
    const hv1 = agents.find((a) => a.config.name === 'hv1') as TestAgent<RecordingHypervisor>;
    const job = hv1.driver.jobs.find((j) => j.object.metadata.name === 'cfg');
    assert.ok(job, 'an apply for cfg');
    assert.deepEqual((job.object as { spec?: { cloudInit?: unknown } }).spec?.cloudInit, {
      userData: '#cloud-config\nhostname: cfg\n',
    });

    await api.createNamespacedCustomObject({
      ...group,
      plural: 'instances',
      namespace: 'default',
      body: fromSecret('nocfg', 'missing-userdata'),
    });
    const waiting = await phaseOf('nocfg', 'Pending');
    const provisioned = waiting.status?.conditions?.find((c) => c.type === 'Provisioned');
    assert.equal(provisioned?.reason, 'UserDataUnavailable');
    assert.match(provisioned?.message ?? '', /Secret default\/missing-userdata does not exist/);
  });

  it('gives 200 Instances created at once on one /24 200 distinct addresses', async () => {
    await startHypervisor('big', new RecordingHypervisor({ capacity: { cpus: 1000, memory: '1000Gi' } }));
    await api.createNamespacedCustomObject({
      ...group,
      plural: 'networks',
      namespace: 'default',
      body: {
        ...network,
        metadata: { name: 'wide', namespace: 'default' },
        spec: { cidr: '10.30.0.0/24', dhcp: { rangeStart: '10.30.0.250', rangeEnd: '10.30.0.254' } },
      },
    });
    const names = Array.from({ length: 200 }, (_, i) => `wide-${i}`);
    await Promise.all(
      names.map((name) =>
        api.createNamespacedCustomObject({
          ...group,
          plural: 'instances',
          namespace: 'default',
          body: instance(name, { host: 'big', networks: [{ name: 'wide' }] }),
        }),
      ),
    );
    const addresses = async () => {
      const list = (await api.listNamespacedCustomObject({
        ...group,
        plural: 'instances',
        namespace: 'default',
      })) as {
        items: Instance[];
      };
      return list.items
        .filter((i) => i.metadata.name?.startsWith('wide-') && i.status?.phase === 'Running')
        .map((i) => i.status?.interfaces?.[0]?.ipAddress);
    };
    let running: (string | undefined)[] = [];
    await pollUntil(
      async () => {
        running = await addresses();
        return running.length === 200;
      },
      { timeoutMs: 60_000, what: () => `200 Running Instances (${running.length} so far)` },
    );
    assert.equal(new Set(running).size, 200, 'no address handed out twice');
    assert.ok(running.every((a) => a?.startsWith('10.30.0.')));

    // Delete a quarter and create as many new ones at once: the freed addresses go round again.
    await Promise.all(
      names
        .slice(0, 50)
        .map((name) =>
          api.deleteNamespacedCustomObject({ ...group, plural: 'instances', namespace: 'default', name }),
        ),
    );
    await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        api.createNamespacedCustomObject({
          ...group,
          plural: 'instances',
          namespace: 'default',
          body: instance(`wide-${200 + i}`, { host: 'big', networks: [{ name: 'wide' }] }),
        }),
      ),
    );
    await pollUntil(
      async () => {
        running = await addresses();
        return running.length === 200 && (await get('wide-0')) === undefined;
      },
      { timeoutMs: 60_000, what: () => `200 Running Instances after the churn (${running.length})` },
    );
    assert.equal(new Set(running).size, 200, 'still no address twice');
  });

  it('says so when a Network is full, and hands a freed address to an Instance that waited', async () => {
    await api.createNamespacedCustomObject({
      ...group,
      plural: 'networks',
      namespace: 'default',
      body: {
        ...network,
        metadata: { name: 'tiny', namespace: 'default' },
        spec: { cidr: '10.40.0.0/29', dhcp: { rangeStart: '10.40.0.6', rangeEnd: '10.40.0.6' } },
      },
    });
    // Host addresses .1-.6: the gateway, four static addresses, the one-address pool.
    const names = Array.from({ length: 5 }, (_, i) => `tiny-${i}`);
    for (const name of names) {
      await api.createNamespacedCustomObject({
        ...group,
        plural: 'instances',
        namespace: 'default',
        body: instance(name, { host: 'big', networks: [{ name: 'tiny' }] }),
      });
    }
    let last: Instance | undefined;
    await pollUntil(
      async () => {
        last = await get('tiny-4');
        return (
          last?.status?.conditions?.some((c) => c.type === 'Provisioned' && c.status === 'False') ?? false
        );
      },
      { timeoutMs: 20_000, what: () => `tiny-4 to be refused: ${JSON.stringify(last?.status)}` },
    );
    const provisioned = last?.status?.conditions?.find((c) => c.type === 'Provisioned');
    assert.match(provisioned?.message ?? '', /spec\.networks\[0\]\.address.*10\.40\.0\.0\/29/);
    const held = await phaseOf('tiny-0', 'Running');

    await api.deleteNamespacedCustomObject({
      ...group,
      plural: 'instances',
      namespace: 'default',
      name: 'tiny-0',
    });
    const waited = await phaseOf('tiny-4', 'Running');
    assert.equal(waited.status?.interfaces?.[0]?.ipAddress, held.status?.interfaces?.[0]?.ipAddress);
  });

  it('reports Loam domains no Instance wants as orphans of their Host, and never deletes them', async () => {
    const stateFile = join(dir, 'hv4-domains.json');
    // A domain with the Loam metadata of an Instance that never existed here.
    const ghost = { kind: 'Instance', namespace: 'default', name: 'ghost', uid: randomUUID() };
    const observed = { state: 'running', generation: 1, interfaces: [] };
    writeFileSync(stateFile, JSON.stringify([{ ref: ghost, observed }]));
    const hypervisor = () =>
      new RecordingHypervisor({
        stateFile,
        capacity: { cpus: 4, memory: '8Gi' },
        reserved: { cpus: 1, memory: '1Gi' },
      });
    let hv4 = await startHypervisor('hv4', hypervisor());
    let host: Host | undefined;
    const hostShows = (what: string, check: (host: Host) => boolean) =>
      pollUntil(
        async () => {
          host = (await api.getClusterCustomObject({ ...group, plural: 'hosts', name: 'hv4' })) as Host;
          return check(host);
        },
        { timeoutMs: 10_000, what: () => `Host hv4 to show ${what}: ${JSON.stringify(host?.status)}` },
      );
    const orphans = (...names: string[]) =>
      hostShows(`the orphans ${names.join(', ')}`, (h) =>
        isDeepStrictEqual(
          h.status?.orphanedDomains?.map((d) => d.name),
          names.length > 0 ? names : undefined,
        ),
      );
    await hostShows('capacity and allocatable', (h) =>
      isDeepStrictEqual(
        { capacity: h.status?.capacity, allocatable: h.status?.allocatable },
        { capacity: { cpus: 4, memory: '8Gi' }, allocatable: { cpus: 3, memory: '7340032Ki' } },
      ),
    );
    await orphans('ghost');
    assert.deepEqual(host?.status?.orphanedDomains, [
      { namespace: 'default', name: 'ghost', uid: ghost.uid },
    ]);
    const core = kc.makeApiClient(k8s.CoreV1Api);
    let warnings: string[] = [];
    const warnedOf = (...names: string[]) =>
      pollUntil(
        async () => {
          const events = await core.listNamespacedEvent({
            namespace: 'default',
            fieldSelector: 'involvedObject.kind=Host,involvedObject.name=hv4,reason=OrphanedDomain',
          });
          warnings = events.items.map((e) => `${e.type} ${e.message}`);
          return names.every((name) =>
            warnings.some((w) => w.startsWith('Warning') && w.includes(`default/${name} `)),
          );
        },
        {
          timeoutMs: 10_000,
          what: () => `OrphanedDomain Events for ${names.join(', ')}: ${warnings.join('; ')}`,
        },
      );
    await warnedOf('ghost');

    // Instances made and deleted the ordinary way are never taken for orphans.
    for (const name of ['kept', 'brief']) {
      await api.createNamespacedCustomObject({
        ...group,
        plural: 'instances',
        namespace: 'default',
        body: instance(name, { host: 'hv4' }),
      });
    }
    const kept = await phaseOf('kept', 'Running');
    await phaseOf('brief', 'Running');
    await api.deleteNamespacedCustomObject({
      ...group,
      plural: 'instances',
      namespace: 'default',
      name: 'brief',
    });
    await pollUntil(async () => (await get('brief')) === undefined, {
      timeoutMs: 20_000,
      what: 'brief to go',
    });

    // Its Host unreachable, an Instance deleted with its finalizer removed by hand leaves its domain.
    await hv4.agent.stop();
    agents.splice(agents.indexOf(hv4), 1);
    await pollUntil(() => plane?.controllers?.agents.connected('libvirt').has('hv4') === false, {
      timeoutMs: 10_000,
      what: 'the hub to see hv4 go',
    });
    await api.deleteNamespacedCustomObject({
      ...group,
      plural: 'instances',
      namespace: 'default',
      name: 'kept',
    });
    await api.patchNamespacedCustomObject(
      {
        ...group,
        plural: 'instances',
        namespace: 'default',
        name: 'kept',
        body: [{ op: 'remove', path: '/metadata/finalizers' }],
      },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.JsonPatch),
    );
    await pollUntil(async () => (await get('kept')) === undefined, { timeoutMs: 20_000, what: 'kept to go' });
    hv4 = await startHypervisor('hv4', hypervisor());
    await orphans('ghost', 'kept');
    assert.equal(host?.status?.orphanedDomains?.[1]?.uid, kept.metadata.uid);
    await warnedOf('ghost', 'kept');
    assert.equal(warnings.length, 2, `one Event per orphan: ${warnings.join('; ')}`);
    assert.deepEqual(
      hv4.driver.jobs.map((job) => job.type),
      [],
      'nothing asked of the agent: no instance.delete for an orphan',
    );
    assert.deepEqual([...hv4.driver.running().keys()].sort(), ['default/ghost', 'default/kept']);
    const metrics = await apiClient(plane?.kubeconfigPath ?? '')('GET', '/metrics');
    assert.match(metrics.text, /^loam_host_orphaned_domains\{host="hv4"\} 2$/m);

    // Removed on the host (virsh destroy and undefine), they are gone from the Host too.
    hv4.driver.remove(ghost.uid);
    hv4.driver.remove(kept.metadata.uid ?? '');
    await orphans();
  });
});
