/** `loam render` as an admin runs it: the real CLI on the sample manifests and on bad input. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { applyBatch, parseBatch } from '../../../agents/network/uci-format.js';

const root = fileURLToPath(new URL('../../../../', import.meta.url));
const samples = readdirSync(`${root}crds/samples`)
  .filter((f) => f.endsWith('.yaml'))
  .flatMap((f) => ['-f', `${root}crds/samples/${f}`]);

function render(args: string[], input?: string) {
  const res = spawnSync(`${root}bin/loam`, ['render', ...args], {
    cwd: root,
    encoding: 'utf8',
    input,
    timeout: 30_000,
  });
  return { status: res.status, stdout: res.stdout, stderr: res.stderr };
}

const manifest = (kind: string, name: string, spec: string, namespace = 'default') =>
  `apiVersion: loam.dev/v1alpha1\nkind: ${kind}\nmetadata: {name: ${name}${kind === 'Router' ? '' : `, namespace: ${namespace}`}}\nspec: ${spec}\n---\n`;

describe('loam render', () => {
  it('prints the Linux plan for the samples, on the sample Router', () => {
    const res = render(['--driver', 'linux', ...samples]);
    assert.equal(res.status, 0, res.stderr);
    assert.match(res.stdout, /^# Loam: what the network agent applies to router edge-1 \(linux\)/);
    assert.match(res.stdout, /\nip link add name loam_\w{6}_vx type vxlan id 4096 dstport 4789\n/);
    assert.match(
      res.stdout,
      /\n==> \/var\/lib\/loam\/network\/loam\.nft <==\ntable inet loam\ndelete table inet loam\n/,
    );
    assert.match(res.stdout, /\ndhcp-host=52:54:00(:[0-9a-f]{2}){3},10\.20\.0\.10,web-1\n/);
    assert.match(res.stdout, /\nAllowedIPs = 10\.99\.0\.10\/32, 192\.168\.178\.0\/24\n/);
    assert.match(res.stderr, /note: WireGuardPeer default\/bob-phone: no public key yet/);
    assert.match(res.stderr, /note: no --vtep or --vxlan-group/);
  });

  it('prints a uci batch for OpenWrt that applies to a router without Loam sections', () => {
    const res = render(['--driver', 'openwrt', ...samples, '--vtep', '192.0.2.11']);
    assert.equal(res.status, 0, res.stderr);
    assert.match(res.stderr, /note: Router edge-1 uses the linux driver; rendering for openwrt as asked/);
    const applied = applyBatch({ network: [], dhcp: [], firewall: [] }, parseBatch(res.stdout));
    assert.ok(applied.firewall?.some((s) => s.type === 'nat' && s.options.src_ip === '10.20.0.0/24'));
    assert.ok(applied.network?.some((s) => s.type === 'vxlan_peer' && s.options.dst === '192.0.2.11'));
  });

  it('reads manifests from stdin and renders for a default Router when none is given', () => {
    const res = render(
      ['--driver', 'linux', '--router', 'gw', '-f', '-'],
      manifest('Network', 'lab', '{cidr: 10.5.0.0/24}'),
    );
    assert.equal(res.status, 0, res.stderr);
    assert.match(res.stdout, /router gw \(linux\)/);
    assert.match(res.stderr, /note: no Router in the manifests: rendering for Router gw/);
  });

  const bad: { name: string; args?: string[]; input: string; stderr: RegExp[]; stdout?: RegExp }[] = [
    {
      name: 'invalid manifests: file, object and field, and nothing rendered',
      input:
        manifest('Network', 'lab', '{cidr: 10.20.0.1/24}') +
        manifest('WireGuardPeer', 'laptop', '{network: lab, publicKey: not-a-key}'),
      stderr: [
        /^-: Network\/lab: spec\.cidr: Invalid value: "10\.20\.0\.1\/24": host bits must be zero$/m,
        /^-: WireGuardPeer\/laptop: spec\.publicKey: Invalid value: "not-a-key": must be a WireGuard key/m,
      ],
      stdout: /^$/,
    },
    {
      name: 'overlapping CIDRs on one router: the newcomer is refused, the other rendered',
      input:
        manifest('Network', 'a', '{cidr: 10.20.0.0/24}') + manifest('Network', 'b', '{cidr: 10.20.0.0/16}'),
      stderr: [
        /^Network default\/b: spec\.cidr: 10\.20\.0\.0\/16 overlaps 10\.20\.0\.0\/24 of Network default\/a on router router$/m,
      ],
      stdout: /# default\/a \(loam_\w+\): vxlan 4096/,
    },
    {
      name: 'a segment outside the pool',
      input: manifest('Network', 'a', '{cidr: 10.20.0.0/24, segment: {type: vxlan, id: 42}}'),
      stderr: [
        /^Network default\/a: spec\.segment\.id: 42 is outside router router's vxlan pool 4096-8191$/m,
      ],
    },
    {
      name: 'the same WireGuard port twice',
      input:
        manifest('Network', 'a', '{cidr: 10.20.0.0/24, wireguard: {cidr: 10.98.0.0/24}}', 'one') +
        manifest('Network', 'a', '{cidr: 10.21.0.0/24, wireguard: {cidr: 10.99.0.0/24}}', 'two'),
      stderr: [
        /^Network two\/a: spec\.wireguard\.port: UDP port 51820 is already used by the WireGuard server of Network one\/a/m,
      ],
    },
    {
      name: 'an object defined twice',
      input:
        manifest('Network', 'a', '{cidr: 10.20.0.0/24}') + manifest('Network', 'a', '{cidr: 10.21.0.0/24}'),
      stderr: [/^-: Network\/a: Network default\/a is also defined in -$/m],
    },
    {
      name: 'a bad router setting',
      args: ['--vtep', '192.0.2.300', '--vxlan-group', '10.0.0.1'],
      input: manifest('Network', 'a', '{cidr: 10.20.0.0/24}'),
      stderr: [
        /^--vtep: Invalid value: "192\.0\.2\.300": must be an IPv4 address$/m,
        /^--vxlan-group: Invalid value: "10\.0\.0\.1": must be an IPv4 multicast address$/m,
      ],
    },
    {
      name: 'a Router that is not in the manifests',
      args: ['--router', 'elsewhere'],
      input: manifest('Router', 'edge-1', '{driver: linux}'),
      stderr: [/^--router: no Router elsewhere in the manifests \(they hold edge-1\)$/m],
    },
  ];
  for (const c of bad) {
    it(`fails with exit 1 on ${c.name}`, () => {
      const res = render(['--driver', 'linux', ...(c.args ?? []), '-f', '-'], c.input);
      assert.equal(res.status, 1, res.stdout);
      for (const pattern of c.stderr) assert.match(res.stderr, pattern);
      if (c.stdout) assert.match(res.stdout, c.stdout);
    });
  }

  it('needs a known --driver', () => {
    const missing = render(samples);
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /required option '--driver <driver>' not specified/);
    const unknown = render(['--driver', 'vyos', ...samples]);
    assert.equal(unknown.status, 1);
    assert.match(unknown.stderr, /Allowed choices are openwrt, linux/);
  });

  it('leaves out Networks placed on another router, saying so', () => {
    const res = render(
      ['--driver', 'linux', '-f', '-'],
      manifest('Router', 'edge-1', '{driver: linux}') +
        manifest('Network', 'far', '{cidr: 10.20.0.0/24, router: edge-2}'),
    );
    assert.equal(res.status, 0, res.stderr);
    assert.match(res.stderr, /note: Network default\/far is placed on router edge-2, not edge-1: left out/);
    assert.match(res.stdout, /# No Networks: everything Loam made on the router is removed\./);
  });
});
