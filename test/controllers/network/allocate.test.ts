import assert from 'node:assert/strict';
import {
  AllocationError,
  allocateLeases,
  allocateNetwork,
  allocatePeers,
  instanceMac,
  type NetworkAllocation,
  type PlacedNetwork,
} from '../../../controllers/network/allocate.js';
import { instance, network, peer, publicKeys, router } from './objects.js';

const lab = (spec: Record<string, unknown> = {}, extra = {}) =>
  network('lab', { cidr: '10.20.0.0/24', ...spec }, extra);

const placedVxlan4096: PlacedNetwork = {
  key: 'other/web',
  cidr: '10.30.0.0/24',
  segment: { type: 'vxlan', id: 4096 },
  wireguard: { cidr: '10.99.0.0/24', port: 51820 },
};

describe('allocateNetwork', () => {
  const cases: {
    name: string;
    network: ReturnType<typeof lab>;
    router?: ReturnType<typeof router>;
    placed?: PlacedNetwork[];
    want: Partial<NetworkAllocation> | { field: string; message: RegExp };
  }[] = [
    {
      name: 'a bare Network: lowest vxlan id, first host as gateway, upper half as pool',
      network: lab(),
      want: {
        segment: { type: 'vxlan', id: 4096 },
        gateway: '10.20.0.1',
        dhcpPool: { start: '10.20.0.128', end: '10.20.0.254' },
      },
    },
    {
      name: 'the lowest id another Network does not use',
      network: lab(),
      placed: [placedVxlan4096, { key: 'x/y', cidr: '10.31.0.0/24', segment: { type: 'vxlan', id: 4098 } }],
      want: { segment: { type: 'vxlan', id: 4097 } },
    },
    {
      name: 'the vlan pool when the router has no vxlan pool',
      network: lab(),
      router: router({ segmentPool: { vlan: { start: 100, end: 199 } } }),
      want: { segment: { type: 'vlan', id: 100 } },
    },
    {
      name: 'an exhausted pool',
      network: lab(),
      router: router({ segmentPool: { vxlan: { start: 4096, end: 4096 } } }),
      placed: [placedVxlan4096],
      want: { field: 'spec.segment', message: /vxlan pool 4096-4096 is exhausted/ },
    },
    {
      name: 'a router without a pool',
      network: lab(),
      router: router({ segmentPool: {} }),
      want: { field: 'spec.segment', message: /no segment pool/ },
    },
    {
      name: 'a chosen segment in the pool',
      network: lab({ segment: { type: 'vlan', id: 150 } }),
      router: router({ segmentPool: { vlan: { start: 100, end: 199 } } }),
      want: { segment: { type: 'vlan', id: 150 } },
    },
    {
      name: 'a chosen segment outside the pool',
      network: lab({ segment: { type: 'vxlan', id: 10 } }),
      want: { field: 'spec.segment.id', message: /10 is outside router edge-1's vxlan pool 4096-8191/ },
    },
    {
      name: 'a chosen segment type the router has no pool for',
      network: lab({ segment: { type: 'vlan', id: 10 } }),
      want: { field: 'spec.segment.type', message: /no vlan segment pool/ },
    },
    {
      name: 'a chosen segment another Network uses',
      network: lab({ segment: { type: 'vxlan', id: 4096 } }),
      placed: [placedVxlan4096],
      want: { field: 'spec.segment.id', message: /vxlan 4096 is already used by Network other\/web/ },
    },
    {
      name: 'the segment recorded in status on this router is kept',
      network: lab({}, { status: { router: 'edge-1', segment: { type: 'vxlan', id: 5000 } } }),
      want: { segment: { type: 'vxlan', id: 5000 } },
    },
    {
      name: 'a segment recorded on another router is not',
      network: lab({}, { status: { router: 'edge-2', segment: { type: 'vxlan', id: 5000 } } }),
      want: { segment: { type: 'vxlan', id: 4096 } },
    },
    {
      name: 'a cidr overlapping another Network',
      network: network('lab', { cidr: '10.30.0.0/16' }),
      placed: [placedVxlan4096],
      want: {
        field: 'spec.cidr',
        message: /10\.30\.0\.0\/16 overlaps 10\.30\.0\.0\/24 of Network other\/web/,
      },
    },
    {
      name: "a cidr overlapping another Network's WireGuard cidr",
      network: network('lab', { cidr: '10.99.0.0/25' }),
      placed: [placedVxlan4096],
      want: { field: 'spec.cidr', message: /overlaps 10\.99\.0\.0\/24 of Network other\/web/ },
    },
    {
      name: 'a chosen gateway',
      network: lab({ gateway: '10.20.0.254' }),
      want: { gateway: '10.20.0.254', dhcpPool: { start: '10.20.0.128', end: '10.20.0.253' } },
    },
    {
      name: 'a gateway splitting the default pool: the larger side',
      network: lab({ gateway: '10.20.0.200' }),
      want: { dhcpPool: { start: '10.20.0.128', end: '10.20.0.199' } },
    },
    {
      name: 'a chosen DHCP range',
      network: lab({ dhcp: { rangeStart: '10.20.0.100', rangeEnd: '10.20.0.199' } }),
      want: { dhcpPool: { start: '10.20.0.100', end: '10.20.0.199' } },
    },
    {
      name: 'a chosen DHCP range over the default gateway',
      network: lab({ dhcp: { rangeStart: '10.20.0.1', rangeEnd: '10.20.0.99' } }),
      want: { field: 'spec.gateway', message: /default gateway 10\.20\.0\.1 .* inside the DHCP range/ },
    },
    {
      name: 'DHCP disabled: no pool',
      network: lab({ dhcp: { enabled: false } }),
      want: { dhcpPool: undefined },
    },
    {
      name: 'the smallest subnet',
      network: network('lab', { cidr: '10.20.0.0/30' }),
      want: { gateway: '10.20.0.1', dhcpPool: { start: '10.20.0.2', end: '10.20.0.2' } },
    },
    {
      name: 'the smallest subnet with its gateway in the upper half: no room for a pool',
      network: network('lab', { cidr: '10.20.0.0/30', gateway: '10.20.0.2' }),
      want: { field: 'spec.dhcp', message: /no room for a DHCP pool/ },
    },
    {
      name: 'a WireGuard server on the first host address',
      network: lab({ wireguard: { cidr: '10.98.0.0/24', port: 51821 } }),
      placed: [placedVxlan4096],
      want: { wireguard: { address: '10.98.0.1', port: 51821, cidr: '10.98.0.0/24' } },
    },
    {
      name: 'a disabled WireGuard server',
      network: lab({ wireguard: { enabled: false, cidr: '10.98.0.0/24' } }),
      want: { wireguard: undefined },
    },
    {
      name: "another Network's WireGuard port",
      network: lab({ wireguard: { cidr: '10.98.0.0/24' } }),
      placed: [placedVxlan4096],
      want: { field: 'spec.wireguard.port', message: /UDP port 51820 is already used .* Network other\/web/ },
    },
    {
      name: "a WireGuard cidr overlapping another Network's",
      network: lab({ wireguard: { cidr: '10.99.0.0/16', port: 51821 } }),
      placed: [placedVxlan4096],
      want: { field: 'spec.wireguard.cidr', message: /overlaps 10\.99\.0\.0\/24 of Network other\/web/ },
    },
  ];

  for (const c of cases) {
    it(c.name, () => {
      const allocate = () => allocateNetwork(c.network, c.router ?? router(), c.placed ?? []);
      if ('field' in c.want) {
        const { field, message } = c.want;
        assert.throws(allocate, (err: unknown) => {
          assert.ok(err instanceof AllocationError);
          assert.equal(err.field, field);
          assert.match(err.detail, message);
          return true;
        });
        return;
      }
      const got = allocate();
      for (const [key, value] of Object.entries(c.want)) {
        assert.deepEqual(got[key as keyof NetworkAllocation], value, key);
      }
    });
  }
});

describe('allocateLeases', () => {
  const net = lab({ dhcp: { rangeStart: '10.20.0.100', rangeEnd: '10.20.0.199' } });
  const allocation = allocateNetwork(net, router(), []);
  const attach = (address?: string, mac?: string) => [
    { name: 'lab', ...(address ? { address } : {}), ...(mac ? { mac } : {}) },
  ];
  const leasesOf = (instances: ReturnType<typeof instance>[], reserved: string[] = []) =>
    allocateLeases(net, allocation, instances, reserved);

  const cases: {
    name: string;
    instances: ReturnType<typeof instance>[];
    reserved?: string[];
    addresses: Record<string, string>;
    problems?: { object: string; field: string; message: RegExp }[];
  }[] = [
    {
      name: 'given addresses are kept; new ones take the lowest free outside the pool, oldest first',
      instances: [
        instance('c', attach(), { created: 3 }),
        instance('a', attach('10.20.0.2'), { created: 1 }),
        instance('b', attach(), { created: 2 }),
      ],
      addresses: { a: '10.20.0.2', b: '10.20.0.3', c: '10.20.0.4' },
    },
    {
      name: 'reserved addresses and the gateway are skipped',
      instances: [instance('a', attach())],
      reserved: ['10.20.0.2', '10.20.0.3'],
      addresses: { a: '10.20.0.4' },
    },
    {
      name: 'a given address inside the DHCP pool is allowed (dnsmasq reserves it)',
      instances: [instance('a', attach('10.20.0.150'))],
      addresses: { a: '10.20.0.150' },
    },
    {
      name: 'the address recorded in status is kept',
      instances: [
        instance('a', attach(), { status: { interfaces: [{ network: 'lab', ipAddress: '10.20.0.42' }] } }),
      ],
      addresses: { a: '10.20.0.42' },
    },
    {
      name: 'a given address wins over one recorded for another Instance, which moves',
      instances: [
        instance('old', attach(), {
          created: 1,
          status: { interfaces: [{ network: 'lab', ipAddress: '10.20.0.2' }] },
        }),
        instance('new', attach('10.20.0.2'), { created: 2 }),
      ],
      addresses: { new: '10.20.0.2', old: '10.20.0.3' },
    },
    {
      name: 'a given address twice: the second Instance is refused',
      instances: [
        instance('a', attach('10.20.0.9'), { created: 1 }),
        instance('b', attach('10.20.0.9'), { created: 2 }),
      ],
      addresses: { a: '10.20.0.9' },
      problems: [
        {
          object: 'Instance default/b',
          field: 'spec.networks[0].address',
          message: /10\.20\.0\.9 is already used by Instance default\/a/,
        },
      ],
    },
    {
      name: 'the gateway address, and one outside the subnet',
      instances: [instance('a', attach('10.20.0.1')), instance('b', attach('10.21.0.5'))],
      addresses: {},
      problems: [
        {
          object: 'Instance default/a',
          field: 'spec.networks[0].address',
          message: /already used by the gateway/,
        },
        {
          object: 'Instance default/b',
          field: 'spec.networks[0].address',
          message: /10\.21\.0\.5 is not a host address in 10\.20\.0\.0\/24/,
        },
      ],
    },
    {
      name: 'Instances of other namespaces or Networks are not attached',
      instances: [
        instance('a', attach(), { namespace: 'other' }),
        instance('b', [{ name: 'elsewhere' }]),
        instance('c', [{ name: 'elsewhere' }, { name: 'lab' }]),
      ],
      addresses: { c: '10.20.0.2' },
    },
  ];

  for (const c of cases) {
    it(c.name, () => {
      const { leases, problems } = leasesOf(c.instances, c.reserved);
      assert.deepEqual(Object.fromEntries(leases.map((l) => [l.instance, l.address])), c.addresses);
      assert.equal(problems.length, c.problems?.length ?? 0, JSON.stringify(problems));
      for (const [i, want] of (c.problems ?? []).entries()) {
        assert.equal(problems[i]?.object, want.object);
        assert.equal(problems[i]?.field, want.field);
        assert.match(problems[i]?.message ?? '', want.message);
      }
    });
  }

  it('sorts leases by address and names the field of the attachment it concerns', () => {
    const { leases, problems } = leasesOf([
      instance('z', attach('10.20.0.5')),
      instance('y', [{ name: 'elsewhere' }, { name: 'lab', address: '10.20.1.1' }]),
      instance('x', attach('10.20.0.4')),
    ]);
    assert.deepEqual(
      leases.map((l) => l.instance),
      ['x', 'z'],
    );
    assert.equal(problems[0]?.field, 'spec.networks[1].address');
  });

  it('runs out of addresses outside the pool with a clear problem', () => {
    const tiny = network('tiny', { cidr: '10.20.0.0/29' });
    const tinyAllocation = allocateNetwork(tiny, router(), []);
    // .1 gateway, .2 and .3 free, .4-.6 the pool.
    const instances = ['a', 'b', 'c'].map((name, i) => instance(name, [{ name: 'tiny' }], { created: i }));
    const { leases, problems } = allocateLeases(tiny, tinyAllocation, instances);
    assert.deepEqual(
      leases.map((l) => l.address),
      ['10.20.0.2', '10.20.0.3'],
    );
    assert.deepEqual(problems, [
      {
        object: 'Instance default/c',
        field: 'spec.networks[0].address',
        message: 'no free address left in 10.20.0.0/29 outside the DHCP pool 10.20.0.4-10.20.0.6',
      },
    ]);
  });

  describe('MACs', () => {
    it('are derived from the uid (or namespace/name) and the Network, stably, with QEMU’s prefix', () => {
      const a = instance('a', attach(), { uid: 'uid-a' });
      const mac = instanceMac(a, 'lab');
      assert.match(mac, /^52:54:00(:[0-9a-f]{2}){3}$/);
      assert.equal(instanceMac(instance('renamed', attach(), { uid: 'uid-a' }), 'lab'), mac);
      assert.notEqual(instanceMac(a, 'other'), mac);
      assert.notEqual(instanceMac(instance('a', attach()), 'lab'), mac);
      assert.equal(leasesOf([a]).leases[0]?.mac, mac);
    });

    it('keep the given and the recorded MAC', () => {
      const { leases } = leasesOf([
        instance('a', attach(undefined, '52:54:00:00:00:0a')),
        instance('b', attach(), { status: { interfaces: [{ network: 'lab', mac: '52:54:00:00:00:0b' }] } }),
      ]);
      assert.deepEqual(leases.map((l) => l.mac).sort(), ['52:54:00:00:00:0a', '52:54:00:00:00:0b']);
    });

    it('rehash when the derived MAC is taken, and refuse a given MAC used twice', () => {
      const a = instance('a', attach());
      const taken = instanceMac(a, 'lab');
      const { leases, problems } = leasesOf([
        a,
        instance('b', attach(undefined, taken), { created: 1 }),
        instance('c', attach(undefined, taken), { created: 2 }),
      ]);
      const macs = Object.fromEntries(leases.map((l) => [l.instance, l.mac]));
      assert.equal(macs.b, taken);
      assert.equal(macs.a, instanceMac(a, 'lab', 1));
      assert.equal(macs.c, undefined);
      assert.equal(problems[0]?.field, 'spec.networks[0].mac');
      assert.match(problems[0]?.message ?? '', /already used on Network default\/lab by Instance default\/b/);
    });
  });
});

describe('allocatePeers', () => {
  const net = lab({ wireguard: { cidr: '10.99.0.0/24' } });
  const allocation = allocateNetwork(net, router(), []);
  const routes = [
    { cidr: '10.20.0.0/24', owner: 'Network default/lab' },
    { cidr: '10.30.0.0/24', owner: 'Network other/web' },
  ];

  it('gives the given, the recorded and then the lowest free address after the server', () => {
    const { peers, problems } = allocatePeers(
      net,
      allocation,
      [
        peer('c', { network: 'lab', publicKey: publicKeys[0] }, { created: 3 }),
        peer('a', { network: 'lab', address: '10.99.0.10', publicKey: publicKeys[1] }, { created: 1 }),
        peer(
          'b',
          { network: 'lab' },
          { created: 2, status: { address: '10.99.0.7', publicKey: publicKeys[2] } },
        ),
        peer('d', { network: 'elsewhere' }),
        peer('e', { network: 'lab' }, { namespace: 'other' }),
      ],
      routes,
    );
    assert.deepEqual(problems, []);
    assert.deepEqual(peers, [
      { peer: 'c', publicKey: publicKeys[0], address: '10.99.0.2', allowedIPs: ['10.99.0.2/32'] },
      { peer: 'b', publicKey: publicKeys[2], address: '10.99.0.7', allowedIPs: ['10.99.0.7/32'] },
      { peer: 'a', publicKey: publicKeys[1], address: '10.99.0.10', allowedIPs: ['10.99.0.10/32'] },
    ]);
  });

  it('allocates an address to a peer whose key the controller has yet to make', () => {
    const { peers } = allocatePeers(net, allocation, [peer('phone', { network: 'lab' })]);
    assert.deepEqual(peers, [{ peer: 'phone', address: '10.99.0.2', allowedIPs: ['10.99.0.2/32'] }]);
  });

  const refused: { name: string; spec: Record<string, unknown>; field: string; message: RegExp }[] = [
    {
      name: 'the server address',
      spec: { address: '10.99.0.1' },
      field: 'spec.address',
      message: /used by the WireGuard server/,
    },
    {
      name: 'an address outside the cidr',
      spec: { address: '10.20.0.9' },
      field: 'spec.address',
      message: /not a host address in 10\.99\.0\.0\/24/,
    },
    {
      name: "allowedIPs over another tenant's Network",
      spec: { allowedIPs: ['192.168.1.0/24', '10.30.0.0/16'] },
      field: 'spec.allowedIPs[1]',
      message: /10\.30\.0\.0\/16 overlaps 10\.30\.0\.0\/24, routed to Network other\/web/,
    },
  ];
  for (const c of refused) {
    it(`refuses ${c.name}`, () => {
      const { peers, problems } = allocatePeers(
        net,
        allocation,
        [peer('p', { network: 'lab', ...c.spec })],
        routes,
      );
      assert.deepEqual(peers, []);
      assert.equal(problems.length, 1);
      assert.equal(problems[0]?.object, 'WireGuardPeer default/p');
      assert.equal(problems[0]?.field, c.field);
      assert.match(problems[0]?.message ?? '', c.message);
    });
  }

  it("refuses allowedIPs another peer already routes, keeping the first peer's", () => {
    const { peers, problems } = allocatePeers(
      net,
      allocation,
      [
        peer('first', { network: 'lab', allowedIPs: ['192.168.178.0/24'] }, { created: 1 }),
        peer('second', { network: 'lab', allowedIPs: ['192.168.178.128/25'] }, { created: 2 }),
      ],
      routes,
    );
    assert.deepEqual(
      peers.map((p) => [p.peer, p.allowedIPs]),
      [['first', ['10.99.0.2/32', '192.168.178.0/24']]],
    );
    assert.match(problems[0]?.message ?? '', /routed to WireGuardPeer default\/first/);
  });

  it('refuses every peer of a Network without a WireGuard server', () => {
    const plain = lab();
    const { peers, problems } = allocatePeers(plain, allocateNetwork(plain, router(), []), [
      peer('p', { network: 'lab' }),
    ]);
    assert.deepEqual(peers, []);
    assert.deepEqual(problems, [
      {
        object: 'WireGuardPeer default/p',
        field: 'spec.network',
        message: 'Network default/lab has no WireGuard server (spec.wireguard)',
      },
    ]);
  });

  it('runs out of tunnel addresses with a clear problem', () => {
    const small = lab({ wireguard: { cidr: '10.99.0.0/30' } });
    const { peers, problems } = allocatePeers(small, allocateNetwork(small, router(), []), [
      peer('a', { network: 'lab' }, { created: 1 }),
      peer('b', { network: 'lab' }, { created: 2 }),
    ]);
    assert.deepEqual(
      peers.map((p) => p.address),
      ['10.99.0.2'],
    );
    assert.deepEqual(problems, [
      {
        object: 'WireGuardPeer default/b',
        field: 'spec.address',
        message: 'no free address left in 10.99.0.0/30',
      },
    ]);
  });
});
