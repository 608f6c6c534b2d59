import assert from 'node:assert/strict';
import {
  buildRouterModel,
  defaultRouterSettings,
  dnsmasqDuration,
  networkId,
  type RouterModelInput,
} from '../../../agents/network/model.js';
import { instance, network, peer, publicKeys, router } from '../../controllers/network/objects.js';

function build(input: Partial<RouterModelInput>) {
  return buildRouterModel({
    router: router(),
    networks: [],
    instances: [],
    peers: [],
    settings: defaultRouterSettings('linux'),
    ...input,
  });
}

describe('router model', () => {
  it('names everything after a hash of namespace/name, within the limits of Linux and fw3', () => {
    const lab = network('lab', { cidr: '10.20.0.0/24', wireguard: { cidr: '10.99.0.0/24' } });
    const { model } = build({ networks: [lab] });
    const id = networkId(lab);
    assert.match(id, /^[a-z2-7]{6}$/);
    assert.equal(
      networkId(network('lab', { cidr: '10.30.0.0/24' })),
      id,
      'the same Network, whatever its spec',
    );
    assert.notEqual(networkId(network('lab', { cidr: '10.20.0.0/24' }, { namespace: 'other' })), id);
    assert.deepEqual(model.networks[0]?.names, {
      interface: `loam_${id}`,
      bridge: `loam_${id}_br`,
      segment: `loam_${id}_vx`,
      wireguard: `loam_${id}_wg`,
    });
    for (const name of Object.values(model.networks[0]?.names ?? {})) assert.ok(name.length <= 15, name);
    assert.ok(`loam_${id}`.length <= 11, 'the firewall zone name');
  });

  it('resolves every default into plain, sorted JSON', () => {
    const { model, problems } = build({
      networks: [
        network('b', { cidr: '10.2.0.0/24', dhcp: { leaseTime: '1h30m' } }, { created: 1 }),
        network('a', { cidr: '10.1.0.0/24', egress: true, dns: ['9.9.9.9'] }, { created: 2 }),
        network('c', { cidr: '10.3.0.0/24', dhcp: { enabled: false } }, { namespace: 'aaa' }),
      ],
    });
    assert.deepEqual(problems, []);
    assert.deepEqual(JSON.parse(JSON.stringify(model)), model);
    assert.deepEqual(
      model.networks.map((n) => [
        `${n.namespace}/${n.name}`,
        n.segment.id,
        n.egress,
        n.dns,
        n.dhcp?.leaseSeconds,
      ]),
      [
        ['aaa/c', 4096, false, ['10.3.0.1'], undefined],
        ['default/a', 4098, true, ['9.9.9.9'], 43200],
        ['default/b', 4097, false, ['10.2.0.1'], 5400],
      ],
    );
  });

  describe('when Networks collide', () => {
    const older = network('older', { cidr: '10.20.0.0/24' }, { created: 1 });
    const newer = network('newer', { cidr: '10.20.0.0/16' }, { created: 2 });
    const fine = network('fine', { cidr: '10.30.0.0/24' }, { created: 3 });

    it('refuses the newcomer and still serves the rest', () => {
      const { model, problems } = build({ networks: [newer, fine, older] });
      assert.deepEqual(
        model.networks.map((n) => n.name),
        ['fine', 'older'],
      );
      assert.deepEqual(problems, [
        {
          object: 'Network default/newer',
          field: 'spec.cidr',
          message: '10.20.0.0/16 overlaps 10.20.0.0/24 of Network default/older on router edge-1',
        },
      ]);
    });

    it('keeps a Network already allocated on this router, however new', () => {
      const placedNewer = network(
        'newer',
        { cidr: '10.20.0.0/16' },
        {
          created: 2,
          status: { router: 'edge-1', segment: { type: 'vxlan', id: 4100 } },
        },
      );
      const { model, problems } = build({ networks: [older, placedNewer] });
      assert.deepEqual(
        model.networks.map((n) => [n.name, n.segment.id]),
        [['newer', 4100]],
      );
      assert.equal(problems[0]?.object, 'Network default/older');
    });
  });

  it('refuses a vlan Network on a router without a trunk', () => {
    const { model, problems } = build({
      router: router({ segmentPool: { vlan: { start: 100, end: 199 } } }),
      networks: [network('legacy', { cidr: '10.20.0.0/24' })],
    });
    assert.deepEqual(model.networks, []);
    assert.deepEqual(problems, [
      {
        object: 'Network default/legacy',
        field: 'spec.segment',
        message: 'router edge-1 has no VLAN trunk configured; use a vxlan segment',
      },
    ]);
    const trunked = build({
      router: router({ segmentPool: { vlan: { start: 100, end: 199 } } }),
      networks: [network('legacy', { cidr: '10.20.0.0/24' })],
      settings: { ...defaultRouterSettings('linux'), trunk: 'eth1' },
    });
    assert.equal(trunked.model.networks[0]?.names.segment.endsWith('_vl'), true);
  });

  it('carries leases and peers, notes peers without keys, and reports the objects it leaves out', () => {
    const lab = network('lab', { cidr: '10.20.0.0/24', wireguard: { cidr: '10.99.0.0/24' } }, { created: 1 });
    const other = network(
      'web',
      { cidr: '10.30.0.0/24', wireguard: { cidr: '10.98.0.0/24', port: 51821 } },
      {
        created: 2,
        namespace: 'tenant-b',
      },
    );
    const { model, problems, notes } = build({
      networks: [lab, other],
      instances: [
        instance('vm', [{ name: 'lab', address: '10.20.0.7' }]),
        instance('clash', [{ name: 'lab', address: '10.20.0.7' }], { created: 5 }),
      ],
      peers: [
        peer('laptop', { network: 'lab', publicKey: publicKeys[0] }, { created: 1 }),
        peer('phone', { network: 'lab' }, { created: 2 }),
        peer(
          'thief',
          { network: 'lab', publicKey: publicKeys[1], allowedIPs: ['10.30.0.0/25'] },
          { created: 3 },
        ),
        peer(
          'home',
          { network: 'lab', publicKey: publicKeys[2], allowedIPs: ['192.168.1.0/24'] },
          { created: 4 },
        ),
        peer(
          'copycat',
          { network: 'web', publicKey: publicKeys[0], allowedIPs: ['192.168.1.0/26'] },
          {
            namespace: 'tenant-b',
          },
        ),
      ],
    });
    const labModel = model.networks.find((n) => n.name === 'lab');
    assert.deepEqual(
      labModel?.dhcp?.leases.map((l) => [l.instance, l.address]),
      [['vm', '10.20.0.7']],
    );
    assert.deepEqual(
      labModel?.wireguard?.peers.map((p) => [p.peer, p.address]),
      [
        ['laptop', '10.99.0.2'],
        ['home', '10.99.0.4'],
      ],
    );
    assert.deepEqual(notes, [
      'WireGuardPeer default/phone: no public key yet; the controller generates a key pair when it is applied, and the router gets the peer then',
    ]);
    assert.deepEqual(
      problems.map((p) => `${p.object}: ${p.field}: ${p.message}`),
      [
        'Instance default/clash: spec.networks[0].address: 10.20.0.7 is already used by Instance default/vm',
        'WireGuardPeer default/thief: spec.allowedIPs[0]: 10.30.0.0/25 overlaps 10.30.0.0/24, routed to Network tenant-b/web',
        // Another Network's peer may not capture a prefix a peer of this one routes.
        'WireGuardPeer tenant-b/copycat: spec.allowedIPs[0]: 192.168.1.0/26 overlaps 192.168.1.0/24, routed to WireGuardPeer default/home',
      ],
    );
  });

  it('takes the leases and peers the controller allocated as they are', () => {
    const lab = network('lab', { cidr: '10.20.0.0/24', wireguard: { cidr: '10.99.0.0/24' } });
    const leases = [{ instance: 'gone-from-view', mac: '52:54:00:00:00:09', address: '10.20.0.9' }];
    const peers = [
      { peer: 'laptop', publicKey: publicKeys[0] ?? '', address: '10.99.0.7', allowedIPs: ['10.99.0.7/32'] },
    ];
    const { model, problems } = build({
      networks: [lab],
      // Ignored for a Network with allocations given: they would allocate other addresses.
      instances: [instance('vm', [{ name: 'lab', address: '10.20.0.7' }])],
      peers: [peer('phone', { network: 'lab', publicKey: publicKeys[1] })],
      allocated: new Map([['default/lab', { leases, peers }]]),
    });
    assert.deepEqual(problems, []);
    assert.deepEqual(model.networks[0]?.dhcp?.leases, leases);
    assert.deepEqual(model.networks[0]?.wireguard?.peers, peers);
  });

  it('formats lease times as dnsmasq reads them', () => {
    assert.deepEqual([86400, 43200, 5400, 150, 121].map(dnsmasqDuration), ['1d', '12h', '90m', '150', '121']);
  });
});
