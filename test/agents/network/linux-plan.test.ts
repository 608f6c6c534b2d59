import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type LinuxPlan, planCommands, planLinux } from '../../../agents/network/linux-plan.js';
import type { RouterModel } from '../../../agents/network/model.js';
import { renderManifests } from '../../../agents/network/render.js';
import { assertGolden, tenants, tenantsModel } from './fixtures.js';

/**
 * Runs `command` in a new user and network namespace: nft and dnsmasq checks need no root and
 * never see, let alone change, the machine's own rule set.
 */
function inFreshNamespace(command: string[], input?: string) {
  const result = spawnSync('unshare', ['--user', '--map-root-user', '--net', ...command], {
    encoding: 'utf8',
    input,
    timeout: 20_000,
  });
  return { status: result.status, output: `${result.stdout}${result.stderr}${result.error ?? ''}` };
}

function assertValidNftables(ruleset: string): void {
  const check = inFreshNamespace(['nft', '--check', '--file', '-'], ruleset);
  assert.equal(check.status, 0, `nft --check rejected the rule set:\n${check.output}\n${ruleset}`);
}

describe('Linux plan', () => {
  const model = tenantsModel('linux');
  const plan = planLinux(model);
  const [web, db, quiet, legacy] = model.networks as RouterModel['networks'];
  assert.ok(web && db && quiet && legacy);

  it('renders the tenants scenario as the golden plan', () => {
    const { files, options } = tenants('linux');
    const result = renderManifests(files, options);
    assert.deepEqual(result.errors, []);
    assertGolden('tenants.linux.txt', result.output);
  });

  it('makes a bridge per Network with its segment device as a port, all named within 15 characters', () => {
    assert.deepEqual(
      plan.links.map((l) => [l.name, l.kind, l.master ?? '']),
      [
        [web.names.bridge, 'bridge', ''],
        [web.names.segment, 'vxlan', web.names.bridge],
        [web.names.wireguard, 'wireguard', ''],
        [db.names.bridge, 'bridge', ''],
        [db.names.segment, 'vxlan', db.names.bridge],
        [quiet.names.bridge, 'bridge', ''],
        [quiet.names.segment, 'vxlan', quiet.names.bridge],
        [legacy.names.bridge, 'bridge', ''],
        [legacy.names.segment, 'vlan', legacy.names.bridge],
        [legacy.names.wireguard, 'wireguard', ''],
      ],
    );
    for (const link of plan.links) assert.ok(link.name.length <= 15, link.name);
    const [bridge, vxlan, wireguard] = plan.links;
    assert.deepEqual(bridge?.addresses, ['10.10.0.1/24']);
    assert.deepEqual(vxlan?.args, [
      'type',
      'vxlan',
      'id',
      '4096',
      'dstport',
      '4789',
      'local',
      '192.0.2.1',
      'dev',
      'eth1',
    ]);
    assert.deepEqual(vxlan?.flood, ['192.0.2.11', '192.0.2.12']);
    assert.deepEqual(wireguard?.addresses, ['10.90.0.1/24']);
    assert.deepEqual(wireguard?.routes, ['192.168.178.0/24']);
    assert.deepEqual(plan.links[8]?.args, ['link', 'eth1', 'type', 'vlan', 'id', '120']);
  });

  it('floods through a multicast group instead of copies when the router has one', () => {
    const grouped = planLinux({
      ...model,
      settings: { ...model.settings, vxlan: { ...model.settings.vxlan, group: '239.1.1.1' } },
    });
    assert.deepEqual(grouped.links[1]?.flood, []);
    assert.deepEqual(grouped.links[1]?.args.slice(-2), ['group', '239.1.1.1']);
  });

  it('orders the commands: each link made and joined to its bridge before it comes up, files last', () => {
    const commands = planCommands(plan).map((argv) => argv.join(' '));
    const at = (command: string) => {
      const index = commands.indexOf(command);
      assert.ok(index >= 0, `missing: ${command}`);
      return index;
    };
    assert.equal(commands[0], 'sysctl -w net.ipv4.ip_forward=1');
    assert.ok(
      at(`ip link add name ${web.names.bridge} type bridge`) <
        at(`ip link set ${web.names.segment} master ${web.names.bridge}`),
    );
    assert.ok(
      at(`ip link set ${web.names.segment} master ${web.names.bridge}`) <
        at(`ip link set ${web.names.segment} up`),
    );
    const syncconf = at(`wg syncconf ${web.names.wireguard} /var/lib/loam/network/wireguard-${web.id}.conf`);
    assert.ok(
      syncconf <
        at(`wg set ${web.names.wireguard} private-key /var/lib/loam/network/wireguard-${web.id}.key`),
    );
    assert.ok(syncconf < at(`ip link set ${web.names.wireguard} up`));
    assert.equal(commands.at(-5), 'nft -f /var/lib/loam/network/loam.nft');
    assert.equal(commands.at(-1), `dnsmasq --conf-file=/var/lib/loam/network/dnsmasq-${legacy.id}.conf`);
  });

  describe('nftables', () => {
    it('is accepted by nft --check', () => assertValidNftables(plan.nftables.content));

    it('replaces the table atomically: applying it twice in a namespace leaves one table', () => {
      const dir = mkdtempSync(join(tmpdir(), 'loam-nft-'));
      try {
        const file = join(dir, 'loam.nft');
        writeFileSync(file, plan.nftables.content);
        const applied = inFreshNamespace([
          'sh',
          '-ec',
          `nft -f ${file}; nft -f ${file}; nft list tables; nft list table inet loam`,
        ]);
        assert.equal(applied.status, 0, applied.output);
        assert.match(applied.output, /^table inet loam\n/);
        assert.equal(applied.output.match(/^table /gm)?.length, 2, applied.output);
        assert.match(
          applied.output,
          /oifname "eth0" ip saddr \{ 10\.10\.0\.0\/24, 192\.168\.50\.0\/24 \} masquerade/,
        );
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('drops every forward from or to a Loam device but within a Network and out to the WAN', () => {
      const text = plan.nftables.content;
      const all = `{ "${web.names.bridge}", "${web.names.wireguard}", "${db.names.bridge}", "${quiet.names.bridge}", "${legacy.names.bridge}", "${legacy.names.wireguard}" }`;
      assert.ok(text.includes(`\t\tiifname ${all} drop\n\t\toifname ${all} drop\n`), text);
      const accepts = text.split('\n').filter((line) => line.includes(' accept comment "tenant-'));
      assert.deepEqual(
        accepts.map((line) => line.trim()),
        [
          `iifname { "${web.names.bridge}", "${web.names.wireguard}" } oifname { "${web.names.bridge}", "${web.names.wireguard}" } accept comment "tenant-a/web"`,
          `iifname { "${legacy.names.bridge}", "${legacy.names.wireguard}" } oifname { "${legacy.names.bridge}", "${legacy.names.wireguard}" } accept comment "tenant-c/legacy"`,
          `iifname "${web.names.bridge}" oifname "eth0" accept comment "tenant-a/web egress"`,
          `iifname "${legacy.names.bridge}" oifname "eth0" accept comment "tenant-c/legacy egress"`,
        ],
      );
      assert.match(text, /udp dport \{ 51820, 51821 \} accept comment "WireGuard"/);
    });

    const variants: { name: string; model: RouterModel; absent: RegExp[] }[] = [
      {
        name: 'no Networks: only the removal of the table',
        model: { ...model, networks: [] },
        absent: [/chain/],
      },
      {
        name: 'one Network without egress or WireGuard',
        model: { ...model, networks: [db] },
        absent: [/masquerade/, /WireGuard/, /postrouting/],
      },
      {
        name: 'one VLAN Network with both',
        model: { ...model, networks: [legacy] },
        absent: [/loam_\w+_vx/],
      },
    ];
    for (const v of variants) {
      it(`is valid for ${v.name}`, () => {
        const text = planLinux(v.model).nftables.content;
        assertValidNftables(text);
        for (const pattern of v.absent) assert.doesNotMatch(text, pattern);
      });
    }

    it('is the removal of the table when no Network is left', () => {
      assert.equal(
        planLinux({ ...model, networks: [] }).nftables.content,
        'table inet loam\ndelete table inet loam\n',
      );
    });
  });

  describe('dnsmasq', () => {
    it('accepts every config (dnsmasq --test)', () => {
      const dir = mkdtempSync(join(tmpdir(), 'loam-dnsmasq-'));
      try {
        for (const { config } of plan.dnsmasq) {
          const file = join(dir, 'dnsmasq.conf');
          writeFileSync(file, config.content);
          const result = spawnSync('dnsmasq', ['--test', `--conf-file=${file}`], { encoding: 'utf8' });
          assert.equal(result.status, 0, `${config.path}: ${result.stderr}`);
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('serves the pool and the static leases on the bridge only, with files in the state dir', () => {
      const config = plan.dnsmasq.find((d) => d.network === 'tenant-a/web')?.config.content ?? '';
      const lines = config.split('\n');
      for (const line of [
        `interface=${web.names.bridge}`,
        'except-interface=lo',
        'bind-interfaces',
        `pid-file=/var/lib/loam/network/dnsmasq-${web.id}.pid`,
        `dhcp-leasefile=/var/lib/loam/network/dnsmasq-${web.id}.leases`,
        'dhcp-range=10.10.0.128,10.10.0.254,255.255.255.0,12h',
        'dhcp-option=option:router,10.10.0.1',
        'dhcp-option=option:dns-server,1.1.1.1,9.9.9.9',
      ]) {
        assert.ok(lines.includes(line), `missing ${line}`);
      }
      assert.deepEqual(
        lines
          .filter((line) => line.startsWith('dhcp-host='))
          .map((line) => line.split(',').slice(1).join(',')),
        ['10.10.0.2,web-2', '10.10.0.10,web-1'],
      );
    });

    it('leaves DHCP out where it is disabled', () => {
      const config = plan.dnsmasq.find((d) => d.network === 'tenant-b/quiet')?.config.content ?? '';
      assert.doesNotMatch(config, /dhcp-/);
    });
  });

  describe('WireGuard', () => {
    it('lists the peers for wg syncconf and keeps the private key out, referenced by path', () => {
      const [first] = plan.wireguard as LinuxPlan['wireguard'];
      assert.equal(first?.device, web.names.wireguard);
      assert.equal(first?.privateKeyFile, `/var/lib/loam/network/wireguard-${web.id}.key`);
      const content = first?.config.content ?? '';
      assert.doesNotMatch(content, /PrivateKey/);
      assert.match(
        content,
        /\[Interface\]\nListenPort = 51820\n\n\[Peer\]\n# tenant-a\/alice\nPublicKey = VERk\S+\nAllowedIPs = 10\.90\.0\.2\/32, 192\.168\.178\.0\/24\n/,
      );
      assert.equal(plan.wireguard.length, 2);
    });
  });
});
