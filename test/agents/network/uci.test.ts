import assert from 'node:assert/strict';
import type { RouterModel } from '../../../agents/network/model.js';
import { renderManifests } from '../../../agents/network/render.js';
import {
  mergeUciFile,
  ownedByLoam,
  type RenderedUci,
  renderUci,
  uciBatch,
  uciConfigNames,
} from '../../../agents/network/uci.js';
import {
  applyBatch,
  formatBatch,
  parseBatch,
  parseUci,
  serializeUci,
  type UciSection,
} from '../../../agents/network/uci-format.js';
import { assertGolden, stockConfig, tenants, tenantsModel } from './fixtures.js';

const stock = () =>
  Object.fromEntries(uciConfigNames.map((name) => [name, parseUci(stockConfig(name))])) as RenderedUci;

function find(sections: UciSection[], name: string): UciSection {
  const section = sections.find((s) => s.name === name);
  assert.ok(section, `no section ${name}`);
  return section;
}

describe('UCI renderer', () => {
  const model = tenantsModel('openwrt');
  const rendered = renderUci(model);
  const [web, db, quiet, legacy] = model.networks as [
    RouterModel['networks'][number],
    RouterModel['networks'][number],
    RouterModel['networks'][number],
    RouterModel['networks'][number],
  ];

  it('renders the tenants scenario as the golden uci batch', () => {
    const { files, options } = tenants('openwrt');
    const result = renderManifests(files, options);
    assert.deepEqual(result.errors, []);
    assertGolden('tenants.openwrt.txt', result.output);
  });

  it('names every section loam_..., with devices within 15 characters and zones within 11', () => {
    for (const name of uciConfigNames) {
      for (const section of rendered[name]) assert.ok(ownedByLoam(section), `${name}.${section.name}`);
    }
    const devices = rendered.network.flatMap((s) =>
      s.type === 'device'
        ? [s.options.name as string]
        : s.type === 'interface' && s.options.proto !== 'static'
          ? [s.name as string]
          : [],
    );
    assert.equal(devices.length, 4 + 3 + 2 + 1);
    for (const device of devices) assert.ok(device.length <= 15, device);
    for (const zone of rendered.firewall.filter((s) => s.type === 'zone')) {
      assert.ok((zone.options.name as string).length <= 11, String(zone.options.name));
    }
  });

  it('puts a VXLAN segment in the bridge, flooding to each hypervisor', () => {
    assert.deepEqual(find(rendered.network, web.names.bridge).options, {
      name: web.names.bridge,
      type: 'bridge',
      bridge_empty: '1',
      ports: [web.names.segment],
    });
    assert.deepEqual(find(rendered.network, web.names.segment), {
      type: 'interface',
      name: web.names.segment,
      options: { proto: 'vxlan', vid: '4096', port: '4789', ipaddr: '192.0.2.1', tunlink: 'lan' },
    });
    assert.deepEqual(
      rendered.network
        .filter((s) => s.type === 'vxlan_peer' && s.options.vxlan === web.names.segment)
        .map((s) => s.options.dst),
      ['192.0.2.11', '192.0.2.12'],
    );
  });

  it("puts a VLAN segment on Loam's trunk bridge as a bridge-vlan tagged on the trunk port", () => {
    assert.deepEqual(find(rendered.network, 'loam_trunk').options, {
      name: 'loam_trunk',
      type: 'bridge',
      ports: ['lan4'],
    });
    assert.deepEqual(find(rendered.network, legacy.names.segment), {
      type: 'bridge-vlan',
      name: legacy.names.segment,
      options: { device: 'loam_trunk', vlan: '120', ports: ['lan4:t'] },
    });
    assert.deepEqual(find(rendered.network, legacy.names.bridge).options.ports, ['loam_trunk.120']);
    assert.deepEqual(find(rendered.network, legacy.names.interface).options, {
      device: legacy.names.bridge,
      proto: 'static',
      ipaddr: '192.168.50.254',
      netmask: '255.255.255.0',
    });
  });

  it('renders the WireGuard server without a private key, and a section per peer', () => {
    assert.deepEqual(find(rendered.network, web.names.wireguard).options, {
      proto: 'wireguard',
      listen_port: '51820',
      addresses: ['10.90.0.1/24'],
    });
    const peers = rendered.network.filter((s) => s.type === `wireguard_${web.names.wireguard}`);
    assert.deepEqual(
      peers.map((s) => [s.name, s.options.allowed_ips]),
      [
        [`${web.names.wireguard}_alice`, ['10.90.0.2/32', '192.168.178.0/24']],
        [`${web.names.wireguard}_bob`, ['10.90.0.20/32']],
      ],
    );
  });

  it('renders a DHCP pool counted from the network address and a host per static lease', () => {
    assert.deepEqual(find(rendered.dhcp, db.names.interface).options, {
      interface: db.names.interface,
      start: '50',
      limit: '50',
      leasetime: '90m',
      force: '1',
      dhcp_option: ['6,10.11.0.1'],
    });
    assert.deepEqual(find(rendered.dhcp, `${db.names.interface}_db_1`).options, {
      name: 'db-1',
      mac: '52:54:00:00:db:01',
      ip: '10.11.0.2',
    });
    assert.equal(
      rendered.dhcp.some((s) => s.name === quiet.names.interface),
      false,
      'no pool where DHCP is off',
    );
  });

  it('keeps tenants apart: forwardings only to wan, and only for egress Networks, each masqueraded', () => {
    const forwardings = rendered.firewall
      .filter((s) => s.type === 'forwarding')
      .map((s) => [s.options.src, s.options.dest]);
    assert.deepEqual(forwardings, [
      [web.names.interface, 'wan'],
      [legacy.names.interface, 'wan'],
    ]);
    const nats = rendered.firewall
      .filter((s) => s.type === 'nat')
      .map((s) => [s.options.src, s.options.src_ip, s.options.target]);
    assert.deepEqual(nats, [
      ['wan', '10.10.0.0/24', 'MASQUERADE'],
      ['wan', '192.168.50.0/24', 'MASQUERADE'],
    ]);
    assert.deepEqual(find(rendered.firewall, web.names.interface).options, {
      name: web.names.interface,
      network: [web.names.interface, web.names.wireguard],
      input: 'REJECT',
      output: 'ACCEPT',
      forward: 'ACCEPT',
    });
  });

  it('opens each WireGuard port from wan, and VXLAN from the hypervisors only', () => {
    const opened = rendered.firewall
      .filter((s) => s.type === 'rule' && s.options.src === 'wan')
      .map((s) => [s.name, s.options.proto, s.options.dest_port]);
    assert.deepEqual(opened, [
      [`${web.names.interface}_wg`, 'udp', '51820'],
      [`${legacy.names.interface}_wg`, 'udp', '51821'],
    ]);
    assert.deepEqual(find(rendered.firewall, 'loam_vxlan').options.src_ip, ['192.0.2.11', '192.0.2.12']);
  });

  it('lets a tenant reach only DHCP, DNS and ping on the router', () => {
    const fromTenant = rendered.firewall.filter(
      (s) => s.type === 'rule' && s.options.src === db.names.interface,
    );
    assert.deepEqual(
      fromTenant.map((s) => [s.options.proto, s.options.dest_port ?? s.options.icmp_type]),
      [
        ['udp', '67'],
        [['tcp', 'udp'], '53'],
        ['icmp', 'echo-request'],
      ],
    );
  });

  for (const name of uciConfigNames) {
    it(`writes ${name} as a config file that parses back into the same sections`, () => {
      assert.deepEqual(parseUci(serializeUci(rendered[name])), rendered[name]);
    });
  }

  describe('on a router with its own configuration', () => {
    it('the batch changes what a merge of the config files does, and nothing of the user’s', () => {
      const before = stock();
      const after = applyBatch(before, parseBatch(formatBatch(uciBatch(rendered, before))));
      for (const name of uciConfigNames) {
        const merged = parseUci(mergeUciFile(stockConfig(name), rendered[name]));
        assert.deepEqual(
          after[name]?.filter((s) => !ownedByLoam(s)),
          before[name].filter((s) => !ownedByLoam(s)),
          name,
        );
        const owned = (sections: UciSection[] = []) =>
          Object.fromEntries(sections.filter(ownedByLoam).map((s) => [s.name, s]));
        assert.deepEqual(owned(after[name]), owned(merged), name);
      }
    });

    it('removes stale Loam sections, and keeps the private key the router made for a WireGuard server', () => {
      const before = stock();
      const after = applyBatch(before, uciBatch(rendered, before)) as RenderedUci;
      // The stock config's Loam sections belong to Networks that are not in this scenario.
      for (const stale of ['loam_oldnet', 'loam_2xhx47_wg'])
        assert.equal(
          after.network.some((s) => s.name === stale),
          false,
        );
      assert.equal(
        after.firewall.some((s) => s.name === 'loam_oldnet_dhcp'),
        false,
      );
      // Had that WireGuard section been tenant-a/web's, its key would have stayed.
      const keyed = {
        ...before,
        network: before.network.map((s) =>
          s.name === 'loam_2xhx47_wg' ? { ...s, name: web.names.wireguard } : s,
        ),
      };
      const rekeyed = applyBatch(keyed, uciBatch(rendered, keyed)) as RenderedUci;
      assert.equal(
        find(rekeyed.network, web.names.wireguard).options.private_key,
        'aPrivateKeyMadeOnTheRouterxxxxxxxxxxxxxxxxx=',
      );
    });

    it('applying twice changes nothing, and dropping a Network deletes exactly its sections', () => {
      const applied = applyBatch(stock(), uciBatch(rendered, stock())) as RenderedUci;
      assert.deepEqual(uciBatch(rendered, applied), []);
      const withoutDb = renderUci({ ...model, networks: model.networks.filter((n) => n !== db) });
      const deleted = uciBatch(withoutDb, applied).map((c) => `${c.verb} ${c.config}.${c.section}`);
      assert.deepEqual(deleted, [
        `delete network.${db.names.bridge}`,
        `delete network.${db.names.segment}`,
        `delete network.${db.names.segment}_192_0_2_11`,
        `delete network.${db.names.segment}_192_0_2_12`,
        `delete network.${db.names.interface}`,
        `delete dhcp.${db.names.interface}`,
        `delete dhcp.${db.names.interface}_db_1`,
        `delete firewall.${db.names.interface}`,
        `delete firewall.${db.names.interface}_dhcp`,
        `delete firewall.${db.names.interface}_dns`,
        `delete firewall.${db.names.interface}_ping`,
      ]);
    });
  });
});
