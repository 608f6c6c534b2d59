/**
 * The Network and WireGuardPeer controllers end to end: `loam up` (the real API server, hub and
 * controllers), a real network agent runtime whose driver is a recording router and a libvirt
 * agent with a recording hypervisor. Placement -> network.apply -> Ready, static leases for an
 * Instance's address, a generated peer's client config in a Secret and on the router, and
 * deletion held while an Instance attaches.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import * as k8s from '@kubernetes/client-node';
import type {
  AgentJob,
  Driver,
  DriverEvents,
  InventoryItem,
  JobOutcome,
} from '../../agents/runtime/driver.js';
import { RecordingHypervisor } from '../../agents/runtime/testing/recording-hypervisor.js';
import { RecordingRouter } from '../../agents/runtime/testing/recording-router.js';
import type { NetworkJobObject, ObservedSegment } from '../../controllers/network/reconcile.js';
import { createBootstrapToken } from '../../controllers/pki/bootstrap-tokens.js';
import type { AgentRole } from '../../controllers/pki/certificates.js';
import type { ControlPlane } from '../../controllers/up.js';
import type { Instance, Network, Router, WireGuardPeer } from '../../crds/v1alpha1/index.js';
import type { TestAgent } from '../agents/hub-double.js';
import { joinAgent } from '../harness/join.js';
import { startPlane, tempDir } from '../harness/plane.js';
import { freePort, pollUntil } from '../harness/poll.js';

const group = { group: 'loam.dev', version: 'v1alpha1' };
const namespace = 'default';

const network = {
  apiVersion: 'loam.dev/v1alpha1',
  kind: 'Network',
  metadata: { name: 'lab', namespace },
  spec: {
    cidr: '10.50.0.0/24',
    dhcp: { rangeStart: '10.50.0.100', rangeEnd: '10.50.0.199' },
    wireguard: { cidr: '10.99.0.0/24' },
  },
};

const instance = {
  apiVersion: 'loam.dev/v1alpha1',
  kind: 'Instance',
  metadata: { name: 'web', namespace },
  spec: {
    cpus: 1,
    memory: '256Mi',
    kernel: { url: 'http://127.0.0.1:1/vmlinuz', sha256: 'a'.repeat(64) },
    networks: [{ name: 'lab' }],
  },
};

const peer = {
  apiVersion: 'loam.dev/v1alpha1',
  kind: 'WireGuardPeer',
  metadata: { name: 'laptop', namespace },
  spec: { network: 'lab' },
};

/**
 * A libvirt driver that records Instances as RecordingHypervisor does and also keeps a "bridge"
 * per Network it is asked to attach, reported as the Network controller reads it (ObservedSegment):
 * the recording hypervisor answers network.* UNIMPLEMENTED, which the hub takes as a refusal.
 */
class BridgingHypervisor implements Driver {
  readonly capabilities = ['tcg', 'vxlan'];
  readonly domains = new RecordingHypervisor();
  /** The network.* jobs, in the order they came. */
  readonly jobs: AgentJob[] = [];
  private readonly bridges = new Map<string, InventoryItem>();
  private events: DriverEvents | undefined;

  facts(): Promise<Record<string, string>> {
    return this.domains.facts();
  }

  async start(events: DriverEvents): Promise<void> {
    this.events = events;
    await this.domains.start(events);
  }

  async inventory(): Promise<InventoryItem[]> {
    return [...(await this.domains.inventory()), ...this.bridges.values()];
  }

  async handle(job: AgentJob): Promise<JobOutcome> {
    if (!job.type.startsWith('network.')) return this.domains.handle(job);
    this.jobs.push(job);
    const object = job.object as unknown as NetworkJobObject;
    const { namespace, name, uid } = object.metadata;
    const ref = { kind: 'Network', namespace, name, uid };
    if (job.type === 'network.detach') {
      this.bridges.delete(uid);
      this.events?.inventoryChanged({ removed: [ref] });
      return { code: status.OK, observed: { deleted: true } };
    }
    const observed: ObservedSegment = { segment: object.status.segment };
    this.bridges.set(uid, { ref, observed });
    return { code: status.OK, observed };
  }
}

describe('Networks and WireGuard peers end to end, with a recording router', function () {
  this.timeout(90_000);
  let dir: string;
  let plane: ControlPlane | undefined;
  let api: k8s.CustomObjectsApi;
  let core: k8s.CoreV1Api;
  let router: TestAgent<RecordingRouter>;
  let hypervisor: TestAgent<BridgingHypervisor>;
  const agents: TestAgent<Driver>[] = [];

  async function startRoleAgent<D extends Driver>(
    role: AgentRole,
    name: string,
    driver: D,
    agentPort: number,
    token: string,
  ): Promise<TestAgent<D>> {
    const running = await joinAgent({
      role,
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

  async function get<T>(plural: string, name: string): Promise<T | undefined> {
    try {
      return (await api.getNamespacedCustomObject({ ...group, plural, namespace, name })) as T;
    } catch (err) {
      if (err instanceof k8s.ApiException && err.code === 404) return undefined;
      throw err;
    }
  }

  /** Polls the object until `done` holds, and returns it. */
  async function until<T extends { status?: unknown }>(
    plural: string,
    name: string,
    done: (object: T) => boolean,
    what: string,
  ): Promise<T> {
    let last: T | undefined;
    await pollUntil(
      async () => {
        last = await get<T>(plural, name);
        return last !== undefined && done(last);
      },
      { timeoutMs: 20_000, what: () => `${what}: ${JSON.stringify(last?.status)}` },
    );
    return last as T;
  }

  function create(plural: string, body: object) {
    return api.createNamespacedCustomObject({ ...group, plural, namespace, body });
  }

  function remove(plural: string, name: string) {
    return api.deleteNamespacedCustomObject({ ...group, plural, namespace, name });
  }

  /** Waits until Router rt1's status counts `count` Networks. */
  async function routerServes(count: number): Promise<void> {
    let rt1: Router | undefined;
    await pollUntil(
      async () => {
        rt1 = (await api.getClusterCustomObject({ ...group, plural: 'routers', name: 'rt1' })) as Router;
        return rt1.status?.networks === count;
      },
      { timeoutMs: 20_000, what: () => `rt1 to serve ${count} Networks: ${JSON.stringify(rt1?.status)}` },
    );
  }

  /** The objects of the network.apply jobs the router received, oldest first. */
  function applied(): NetworkJobObject[] {
    return router.driver.jobs
      .filter((job) => job.type === 'network.apply')
      .map((job) => job.object as unknown as NetworkJobObject);
  }

  before(async () => {
    dir = tempDir('networks');
    const agentPort = await freePort();
    plane = await startPlane(join(dir, 'plane'), {
      controllers: true,
      agentPort,
      jobDeadlineMs: 5_000,
    });
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(plane.kubeconfigPath);
    api = kc.makeApiClient(k8s.CustomObjectsApi);
    core = kc.makeApiClient(k8s.CoreV1Api);
    const objects = k8s.KubernetesObjectApi.makeApiClient(kc);
    const tokenFor = async (role: AgentRole) =>
      (await createBootstrapToken(objects, { ttlSeconds: 600, usages: 2, role })).token;
    router = await startRoleAgent(
      'network',
      'rt1',
      new RecordingRouter(),
      agentPort,
      await tokenFor('network'),
    );
    hypervisor = await startRoleAgent(
      'libvirt',
      'hv1',
      new BridgingHypervisor(),
      agentPort,
      await tokenFor('libvirt'),
    );
    let rt1: Router | undefined;
    await pollUntil(
      async () => {
        rt1 = (await api.getClusterCustomObject({ ...group, plural: 'routers', name: 'rt1' })) as Router;
        return rt1.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
      },
      { timeoutMs: 20_000, what: () => `Router rt1 to be Ready: ${JSON.stringify(rt1?.status)}` },
    );
  });

  after(async () => {
    await Promise.all(agents.map(({ agent }) => agent.stop()));
    await plane?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('places a Network on the router, applies it once and reports it Ready', async () => {
    await create('networks', network);
    const ready = await until<Network>('networks', 'lab', (n) => n.status?.phase === 'Ready', 'lab Ready');
    assert.equal(ready.status?.router, 'rt1');
    assert.deepEqual(ready.status?.segment, { type: 'vxlan', id: 4096 }, 'the first id of the default pool');
    assert.equal(ready.status?.gateway, '10.50.0.1');
    assert.equal(ready.status?.conditions?.find((c) => c.type === 'Ready')?.status, 'True');
    assert.deepEqual(ready.metadata.finalizers, ['loam.dev/network-protection']);
    assert.equal(ready.status?.wireguard?.endpoint, '127.0.0.1:51820', 'the endpoint the router reports');
    assert.ok(ready.status?.wireguard?.publicKey, "the router's public key");
    assert.equal(applied().length, 1, 'one network.apply for one Network');
    await routerServes(1);
  });

  it("hands an Instance's address to the router as a static lease", async () => {
    await create('instances', instance);
    const running = await until<Instance>(
      'instances',
      'web',
      (i) => i.status?.phase === 'Running',
      'web Running',
    );
    const nic = running.status?.interfaces?.[0];
    assert.ok(nic?.mac && nic.ipAddress, 'the Instance has a MAC and an address');
    await pollUntil(
      () =>
        applied().some((object) =>
          object.leases?.some(
            (l) => l.instance === 'web' && l.mac === nic.mac && l.address === nic.ipAddress,
          ),
        ),
      {
        timeoutMs: 20_000,
        what: () => `a lease for web at the router: ${JSON.stringify(applied().at(-1)?.leases)}`,
      },
    );
    const lab = await until<Network>(
      'networks',
      'lab',
      (n) => /1 static lease/.test(n.status?.conditions?.find((c) => c.type === 'Configured')?.message ?? ''),
      'lab Configured with the lease',
    );
    const attached = hypervisor.driver.jobs.map((job) => [
      job.type,
      (job.object as unknown as NetworkJobObject).status.segment,
    ]);
    assert.deepEqual(
      attached,
      [['network.attach', lab.status?.segment]],
      "the segment goes to the Instance's Host once",
    );
  });

  it("writes a generated peer's client config to a Secret and configures the peer on the router", async () => {
    await create('wireguardpeers', peer);
    const ready = await until<WireGuardPeer>(
      'wireguardpeers',
      'laptop',
      (p) => p.status?.phase === 'Ready',
      'laptop Ready',
    );
    const lab = (await get<Network>('networks', 'lab')) as Network;
    const { address, publicKey, configSecretName } = ready.status ?? {};
    assert.equal(address, '10.99.0.2', 'the first address after the server');
    assert.ok(publicKey);
    assert.equal(configSecretName, 'laptop-wireguard');

    const secret = await core.readNamespacedSecret({ name: 'laptop-wireguard', namespace });
    const owner = secret.metadata?.ownerReferences?.[0];
    assert.equal(owner?.uid, ready.metadata.uid);
    assert.equal(owner?.controller, true);
    const config = Buffer.from(secret.data?.['wg0.conf'] ?? '', 'base64').toString('utf8');
    const lines = config.split('\n');
    for (const line of [
      '[Interface]',
      `Address = ${address}/32`,
      `PublicKey = ${lab.status?.wireguard?.publicKey}`,
      'Endpoint = 127.0.0.1:51820',
    ]) {
      assert.ok(lines.includes(line), `wg0.conf has "${line}":\n${config}`);
    }

    const last = applied().at(-1);
    assert.deepEqual(
      last?.peers?.map((p) => [p.peer, p.publicKey]),
      [['laptop', publicKey]],
      "the router's last network.apply carries the peer",
    );
  });

  it('takes a deleted peer off the router and removes its Secret', async () => {
    await remove('wireguardpeers', 'laptop');
    await pollUntil(() => applied().at(-1)?.peers?.length === 0, {
      timeoutMs: 20_000,
      what: 'a network.apply without the peer',
    });
    await pollUntil(
      async () => {
        try {
          await core.readNamespacedSecret({ name: 'laptop-wireguard', namespace });
          return false;
        } catch (err) {
          return err instanceof k8s.ApiException && err.code === 404;
        }
      },
      { timeoutMs: 20_000, what: 'the Secret with the private key to go' },
    );
  });

  it('holds a deleted Network while an Instance attaches, then deletes it from the router', async () => {
    await remove('networks', 'lab');
    const held = await until<Network>(
      'networks',
      'lab',
      (n) => n.status?.conditions?.find((c) => c.type === 'Terminating')?.reason === 'InstancesAttached',
      'lab held by web',
    );
    assert.equal(held.status?.phase, 'Terminating');
    assert.ok(!router.driver.jobs.some((job) => job.type === 'network.delete'), 'still served');

    await remove('instances', 'web');
    await pollUntil(async () => (await get('networks', 'lab')) === undefined, {
      timeoutMs: 20_000,
      what: 'lab to go',
    });
    assert.equal(router.driver.jobs.filter((job) => job.type === 'network.delete').length, 1);
    assert.equal(router.driver.served().size, 0, 'nothing left on the router');
    await pollUntil(() => hypervisor.driver.jobs.some((job) => job.type === 'network.detach'), {
      timeoutMs: 20_000,
      what: 'the Host to drop the segment',
    });
    assert.equal(hypervisor.driver.domains.running().size, 0, 'the Instance is gone');
    await routerServes(0);
  });
});
