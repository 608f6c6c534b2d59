/**
 * A hypervisor's Network bridges against a real kernel, inside a network namespace this test
 * makes: network.attach makes the bridge and its VXLAN port towards the remotes, network.detach
 * removes them, a restarted agent reports what it made, and frames really cross the segment to
 * a "router" namespace on the other end of the underlay.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { HostNetworks } from '../../../agents/libvirt/host-network.js';
import type { NetworkJobObject } from '../../../controllers/network/reconcile.js';
import { network as networkObject } from '../../controllers/network/objects.js';
import { testLogger } from '../hub-double.js';

const suffix = randomBytes(3).toString('hex');
const hostNs = `loam-h-${suffix}`;
const routerNs = `loam-r-${suffix}`;
const tenant = `t-${suffix}`;

function sh(argv: string[]): string {
  return execFileSync(argv[0] ?? '', argv.slice(1), { encoding: 'utf8', timeout: 20_000, stdio: 'pipe' });
}

const inHost = (...argv: string[]) => sh(['ip', 'netns', 'exec', hostNs, ...argv]);
const inRouter = (...argv: string[]) => sh(['ip', 'netns', 'exec', routerNs, ...argv]);

interface ShownLink {
  ifindex: number;
  ifname: string;
  master?: string;
  ifalias?: string;
  linkinfo?: { info_kind?: string; info_data?: { id?: number; local?: string; port?: number } };
}

function hostLinks(): Map<string, ShownLink> {
  const links = JSON.parse(inHost('ip', '-j', '-d', 'link', 'show')) as ShownLink[];
  return new Map(links.map((link) => [link.ifname, link]));
}

/**
 * The network.attach object of Network `name` on VXLAN `segment`: the host needs only its name,
 * uid and segment (the router's fields are there as the controller sends them).
 */
function attachObject(name: string, segment: number): NetworkJobObject {
  const network = networkObject(name, { cidr: '10.30.0.0/24' }, { namespace: tenant });
  return {
    apiVersion: network.apiVersion,
    kind: network.kind,
    metadata: {
      name,
      namespace: tenant,
      uid: `00000000-0000-4000-8000-${String(segment).padStart(12, '0')}`,
      generation: 1,
    },
    spec: network.spec,
    status: { router: 'edge-1', segment: { type: 'vxlan', id: segment }, gateway: '10.30.0.1' },
  };
}

describe('libvirt agent host networks (in network namespaces)', function () {
  this.timeout(60_000);
  const hostNetworks = (sharedWithRouter = false) =>
    new HostNetworks({
      settings: { vxlan: { port: 4789, local: '10.29.0.2', remotes: ['10.29.0.1'] } },
      exec: (argv) => ['ip', 'netns', 'exec', hostNs, ...argv],
      logger: testLogger,
      sharedWithRouter,
    });

  before(() => {
    sh(['ip', 'netns', 'add', hostNs]);
    sh(['ip', 'netns', 'add', routerNs]);
    // The underlay: one veth between the host and the router.
    sh([
      'ip',
      'link',
      'add',
      `ul${suffix}`,
      'netns',
      hostNs,
      'type',
      'veth',
      'peer',
      'ul0',
      'netns',
      routerNs,
    ]);
    inHost('ip', 'link', 'set', `ul${suffix}`, 'name', 'ul0');
    inHost('ip', 'address', 'add', '10.29.0.2/24', 'dev', 'ul0');
    inHost('ip', 'link', 'set', 'ul0', 'up');
    inRouter('ip', 'address', 'add', '10.29.0.1/24', 'dev', 'ul0');
    inRouter('ip', 'link', 'set', 'ul0', 'up');
  });

  after(() => {
    for (const ns of [hostNs, routerNs]) sh(['ip', 'netns', 'delete', ns]);
  });

  it('attaches a Network: a bridge recording whose it is, a VXLAN port flooding to the remotes', async () => {
    const networks = hostNetworks();
    const object = attachObject('lan', 4100);
    assert.deepEqual(await networks.attach(object), { segment: { type: 'vxlan', id: 4100 } });
    const links = hostLinks();
    const bridge = [...links.values()].find((link) => link.linkinfo?.info_kind === 'bridge');
    assert.ok(bridge, 'a bridge');
    assert.match(bridge.ifname, /^loam_[a-z2-7]{6}_br$/);
    assert.equal(bridge.ifalias, `loam:${tenant}/lan uid=${object.metadata.uid}`);
    const vxlan = links.get(bridge.ifname.replace(/_br$/, '_vx'));
    assert.equal(vxlan?.master, bridge.ifname);
    assert.equal(vxlan?.linkinfo?.info_data?.id, 4100);
    assert.equal(vxlan?.linkinfo?.info_data?.local, '10.29.0.2');
    const fdb = JSON.parse(inHost('bridge', '-j', 'fdb', 'show', 'dev', vxlan.ifname)) as {
      mac: string;
      dst?: string;
    }[];
    assert.deepEqual(
      fdb.filter((entry) => entry.mac === '00:00:00:00:00:00').map((entry) => entry.dst),
      ['10.29.0.1'],
    );

    // Twice changes nothing: the same links, not made anew.
    const shown = () =>
      [...hostLinks().values()].map(({ ifindex, ifname, master }) => ({ ifindex, ifname, master }));
    const before = shown();
    await networks.attach(object);
    assert.deepEqual(shown(), before);
  });

  it('carries frames to the router over the segment', () => {
    const bridge =
      [...hostLinks().values()].find((link) => link.linkinfo?.info_kind === 'bridge')?.ifname ?? '';
    // The router's end of the segment, and an "instance" (a veth end) on the host's bridge.
    inRouter(
      'ip',
      'link',
      'add',
      'vx0',
      'type',
      'vxlan',
      'id',
      '4100',
      'dstport',
      '4789',
      'local',
      '10.29.0.1',
    );
    inRouter('bridge', 'fdb', 'append', '00:00:00:00:00:00', 'dev', 'vx0', 'dst', '10.29.0.2');
    inRouter('ip', 'address', 'add', '10.30.0.1/24', 'dev', 'vx0');
    inRouter('ip', 'link', 'set', 'vx0', 'up');
    inHost('ip', 'link', 'add', 'vm0', 'type', 'veth', 'peer', 'vm0p');
    inHost('ip', 'link', 'set', 'vm0p', 'master', bridge);
    inHost('ip', 'link', 'set', 'vm0p', 'up');
    inHost('ip', 'address', 'add', '10.30.0.10/24', 'dev', 'vm0');
    inHost('ip', 'link', 'set', 'vm0', 'up');
    assert.match(inHost('busybox', 'ping', '-c', '1', '-W', '5', '10.30.0.1'), /1 packets received/);
    inHost('ip', 'link', 'delete', 'vm0');
  });

  it('reports the Networks it attached after a restart, and detaches them', async () => {
    const object = attachObject('lan', 4100);
    const restarted = hostNetworks();
    assert.deepEqual(await restarted.inventory(), [
      {
        ref: { kind: 'Network', namespace: tenant, name: 'lan', uid: object.metadata.uid },
        observed: { segment: { type: 'vxlan', id: 4100 } },
      },
    ]);
    // A new segment replaces the port.
    await restarted.attach(attachObject('lan', 4200));
    assert.deepEqual((await restarted.inventory())[0]?.observed, { segment: { type: 'vxlan', id: 4200 } });

    assert.deepEqual(await restarted.detach(object), { deleted: true });
    assert.deepEqual(
      [...hostLinks().keys()].filter((name) => name.startsWith('loam_')),
      [],
      'no Loam link left',
    );
    assert.deepEqual(await restarted.inventory(), []);
    // Detaching what is not there is fine.
    assert.deepEqual(await restarted.detach(object), { deleted: true });
  });

  it("shares the local router's bridge instead of making one", async () => {
    const shared = hostNetworks(true);
    const object = attachObject('lan', 4100);
    await assert.rejects(shared.attach(object), (err: Error) => {
      assert.match(err.message, /waiting for the network agent on this machine to make bridge loam_\w+_br/);
      return true;
    });
    assert.deepEqual(
      [...hostLinks().keys()].filter((name) => name.startsWith('loam_')),
      [],
      'nothing made',
    );
  });

  it('refuses a VLAN segment without a trunk', async () => {
    const object = attachObject('lan', 4100);
    const vlan = { ...object, status: { ...object.status, segment: { type: 'vlan' as const, id: 100 } } };
    await assert.rejects(hostNetworks().attach(vlan), /VLAN 100, and this host has no --trunk device/);
  });
});
