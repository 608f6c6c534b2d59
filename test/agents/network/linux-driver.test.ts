/**
 * The linux driver against a real kernel: every command runs in network namespaces this test
 * makes (`ip netns exec`), with its state in a temporary directory, so nothing of the machine's
 * own networking is read or changed.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { Registry } from 'prom-client';
import { LinuxRouterDriver } from '../../../agents/network/drivers/linux.js';
import { networkId, type RouterSettings } from '../../../agents/network/model.js';
import type { AgentJob, InventoryUpdate, JobOutcome } from '../../../agents/runtime/driver.js';
import type { Lease } from '../../../controllers/network/allocate.js';
import type { RouterPeer } from '../../../controllers/network/reconcile.js';
import { generateKeyPair, publicKeyOf } from '../../../controllers/wireguardpeer/client-config.js';
import { sample } from './exposition.js';
import { latestGeneration, networkApplyJob, networkDeleteJob } from './jobs.js';

const suffix = randomBytes(3).toString('hex');
/** The router's namespace and a WireGuard client's. */
const routerNs = `loam-t-${suffix}`;
const clientNs = `loam-c-${suffix}`;
/** Networks live in a namespace of their own, so their device names (and wireguard-go sockets, which are global) are this run's. */
const tenant = `t-${suffix}`;
/** wireguard-go's control socket is global: the client's device gets a name of this run. */
const clientWg = `wgc${suffix}`;

function sh(argv: string[], input?: string): string {
  return execFileSync(argv[0] ?? '', argv.slice(1), {
    encoding: 'utf8',
    timeout: 20_000,
    input,
    stdio: 'pipe',
  });
}

function inRouter(...argv: string[]): string {
  return sh(['ip', 'netns', 'exec', routerNs, ...argv]);
}

function inClient(...argv: string[]): string {
  return sh(['ip', 'netns', 'exec', clientNs, ...argv]);
}

interface ShownLink {
  ifname: string;
  master?: string;
  flags: string[];
  linkinfo?: { info_kind?: string; info_data?: Record<string, unknown> };
  addr_info?: { family: string; local: string; prefixlen: number }[];
}

function routerLinks(): Map<string, ShownLink> {
  const links = JSON.parse(inRouter('ip', '-j', '-d', 'address', 'show')) as ShownLink[];
  return new Map(links.map((link) => [link.ifname, link]));
}

function names(name: string) {
  const id = networkId({ metadata: { namespace: tenant, name } } as never);
  return { id, bridge: `loam_${id}_br`, vxlan: `loam_${id}_vx`, wireguard: `loam_${id}_wg` };
}

function applyJob(
  name: string,
  spec: Record<string, unknown>,
  segment: number,
  more: { leases?: Lease[]; peers?: RouterPeer[] } = {},
): AgentJob {
  return networkApplyJob({ tenant, name, spec, segment, ...more });
}

function deleteJob(name: string): AgentJob {
  return networkDeleteJob(tenant, name);
}

/** Commands that only read; the rest change something. */
function changes(commands: string[][]): string[] {
  const reads = [/^ip -j /, /^bridge -j /, /^sysctl -n /, /^nft list /, /^wg show /];
  return commands.map((argv) => argv.join(' ')).filter((line) => !reads.some((read) => read.test(line)));
}

/** Running, not a zombie nobody reaps. */
function processAlive(pid: number): boolean {
  const stat = existsSync(`/proc/${pid}/stat`) ? readFileSync(`/proc/${pid}/stat`, 'utf8') : '';
  return stat !== '' && !/\) Z /.test(stat);
}

/** The pid in `pidFile` when that process runs. */
function pidAlive(pidFile: string): number | undefined {
  if (!existsSync(pidFile)) return undefined;
  const pid = Number(readFileSync(pidFile, 'utf8'));
  return processAlive(pid) ? pid : undefined;
}

describe('linux network driver (in network namespaces)', function () {
  this.timeout(120_000);
  const tempDir = mkdtempSync(join(tmpdir(), 'loam-router-'));
  // Made by the driver.
  const stateDir = join(tempDir, 'state');
  const settings: RouterSettings = {
    wan: 'eth0',
    vxlan: { port: 4789, remotes: ['192.0.2.11'] },
    stateDir,
  };
  /** Every command the driver ran, unwrapped; a test may make one fail. */
  let commands: string[][] = [];
  let sabotage: ((argv: string[]) => string[] | undefined) | undefined;
  const updates: InventoryUpdate[] = [];
  const exec = (argv: string[]) => {
    commands.push(argv);
    return ['ip', 'netns', 'exec', routerNs, ...(sabotage?.(argv) ?? argv)];
  };
  let driver: LinuxRouterDriver;
  /** The first driver's metrics, and the codes of the jobs it answered. */
  const registry = new Registry();
  const codes: status[] = [];

  async function handle(job: AgentJob): Promise<JobOutcome> {
    commands = [];
    const outcome = await driver.handle(job);
    codes.push(outcome.code);
    return outcome;
  }

  const web = names('web');
  const db = names('db');
  const vpn = names('vpn');
  const bad = names('bad');
  const lease = { instance: 'vm1', mac: '52:54:00:00:00:01', address: '10.10.0.10' };

  before(async () => {
    sh(['ip', 'netns', 'add', routerNs]);
    sh(['ip', 'netns', 'add', clientNs]);
    inRouter('ip', 'link', 'set', 'lo', 'up');
    driver = new LinuxRouterDriver({ settings, exec, wireguardEndpoint: 'vpn.example.com' });
    driver.registerMetrics(registry);
    await driver.start({ inventoryChanged: (update) => updates.push(update), lifecycle: () => {} });
  });

  after(() => {
    // dnsmasq by its pid files; wireguard-go ends with its link.
    for (const file of existsSync(stateDir) ? readdirSync(stateDir) : []) {
      const pid = file.endsWith('.pid') ? pidAlive(join(stateDir, file)) : undefined;
      if (pid !== undefined) process.kill(pid, 'SIGKILL');
    }
    for (const ns of [routerNs, clientNs]) {
      try {
        const links = JSON.parse(sh(['ip', '-n', ns, '-j', 'link', 'show'])) as { ifname: string }[];
        for (const { ifname } of links.filter((l) => l.ifname !== 'lo')) {
          sh(['ip', '-n', ns, 'link', 'delete', ifname]);
        }
      } catch {
        // a link already gone with its peer or bridge
      }
      sh(['ip', 'netns', 'delete', ns]);
    }
    rmSync(tempDir, { recursive: true, force: true });
  });

  it('serves a VXLAN Network: bridge, segment, gateway, nftables table and dnsmasq with the static lease', async () => {
    const outcome = await handle(applyJob('web', { cidr: '10.10.0.0/24' }, 4096, { leases: [lease] }));
    assert.equal(outcome.code, status.OK, outcome.message);
    assert.deepEqual(outcome.observed, {
      generation: 1,
      configHash: 'hash-1',
      peers: [],
      leases: [`${lease.mac}=${lease.address}`],
    });

    const links = routerLinks();
    assert.equal(links.get(web.bridge)?.linkinfo?.info_kind, 'bridge');
    assert.ok(links.get(web.bridge)?.flags.includes('UP'));
    assert.deepEqual(
      links
        .get(web.bridge)
        ?.addr_info?.filter((a) => a.family === 'inet')
        .map((a) => `${a.local}/${a.prefixlen}`),
      ['10.10.0.1/24'],
    );
    const vxlan = links.get(web.vxlan);
    assert.equal(vxlan?.linkinfo?.info_kind, 'vxlan');
    assert.equal(vxlan?.master, web.bridge);
    assert.equal(vxlan?.linkinfo?.info_data?.id, 4096);
    assert.match(inRouter('bridge', 'fdb', 'show', 'dev', web.vxlan), /00:00:00:00:00:00 dst 192\.0\.2\.11/);
    assert.equal(inRouter('sysctl', '-n', 'net.ipv4.ip_forward').trim(), '1');

    const table = inRouter('nft', 'list', 'table', 'inet', 'loam');
    for (const chain of ['input', 'from_tenant', 'forward'])
      assert.match(table, new RegExp(`chain ${chain} \\{`));
    assert.match(table, new RegExp(`iifname "${web.bridge}" drop`));

    const pid = pidAlive(join(stateDir, `dnsmasq-${web.id}.pid`));
    assert.ok(pid, 'dnsmasq runs');
    assert.ok(readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(`dnsmasq-${web.id}.conf`));
    assert.match(
      readFileSync(join(stateDir, `dnsmasq-${web.id}.conf`), 'utf8'),
      /^dhcp-host=52:54:00:00:00:01,10\.10\.0\.10,vm1$/m,
    );
    assert.match(inRouter('ss', '-lnup'), /10\.10\.0\.1(%\S+)?:53 /, 'dnsmasq answers DNS on the gateway');
  });

  it('changes nothing when the same configuration is applied again', async () => {
    const pid = pidAlive(join(stateDir, `dnsmasq-${web.id}.pid`));
    const outcome = await handle(applyJob('web', { cidr: '10.10.0.0/24' }, 4096, { leases: [lease] }));
    assert.equal(outcome.code, status.OK, outcome.message);
    assert.deepEqual(changes(commands), []);
    assert.equal(pidAlive(join(stateDir, `dnsmasq-${web.id}.pid`)), pid);
  });

  it('repairs what was removed by hand, and only that', async () => {
    inRouter('nft', 'delete', 'table', 'inet', 'loam');
    inRouter('ip', 'address', 'flush', 'dev', web.bridge);
    const outcome = await handle(applyJob('web', { cidr: '10.10.0.0/24' }, 4096, { leases: [lease] }));
    assert.equal(outcome.code, status.OK, outcome.message);
    assert.deepEqual(changes(commands), [
      `ip address replace 10.10.0.1/24 dev ${web.bridge}`,
      `nft -f ${stateDir}/loam.nft`,
    ]);
  });

  it('restarts dnsmasq when the static leases change', async () => {
    const pidFile = join(stateDir, `dnsmasq-${web.id}.pid`);
    const pid = pidAlive(pidFile);
    const second = { instance: 'vm2', mac: '52:54:00:00:00:02', address: '10.10.0.11' };
    const outcome = await handle(
      applyJob('web', { cidr: '10.10.0.0/24' }, 4096, { leases: [lease, second] }),
    );
    assert.equal(outcome.code, status.OK, outcome.message);
    assert.deepEqual(changes(commands), [`dnsmasq --conf-file=${stateDir}/dnsmasq-${web.id}.conf`]);
    assert.notEqual(pidAlive(pidFile), pid);
    assert.ok(pidAlive(pidFile));
    assert.match(
      readFileSync(join(stateDir, `dnsmasq-${web.id}.conf`), 'utf8'),
      /^dhcp-host=52:54:00:00:00:02,10\.10\.0\.11,vm2$/m,
    );
  });

  it('isolates a second tenant Network from the first', async () => {
    const outcome = await handle(applyJob('db', { cidr: '10.20.0.0/24' }, 4097));
    assert.equal(outcome.code, status.OK, outcome.message);
    const links = routerLinks();
    assert.ok(links.has(db.bridge) && links.has(db.vxlan) && links.has(web.bridge));
    const forward = inRouter('nft', 'list', 'chain', 'inet', 'loam', 'forward');
    // Nothing is accepted from one bridge to another; every other forward from or to one is dropped.
    assert.doesNotMatch(forward, /iifname .*loam_\w+_br.* oifname .*accept/);
    for (const direction of ['iifname', 'oifname']) {
      const drop = new RegExp(`${direction} \\{ ([^}]+) \\} drop`).exec(forward)?.[1];
      assert.deepEqual(drop?.split(', ').sort(), [`"${web.bridge}"`, `"${db.bridge}"`].sort(), forward);
    }
    assert.ok(pidAlive(join(stateDir, `dnsmasq-${db.id}.pid`)));
  });

  it('refuses a Network that overlaps another, changing nothing', async () => {
    const outcome = await handle(applyJob('bad', { cidr: '10.20.0.0/16' }, 4099));
    assert.equal(outcome.code, status.INVALID_ARGUMENT);
    assert.match(outcome.message ?? '', /spec\.cidr: 10\.20\.0\.0\/16 overlaps 10\.20\.0\.0\/24/);
    assert.deepEqual(commands, []);
  });

  it('rolls back a failed apply and answers with the failing command', async () => {
    const ruleset = readFileSync(join(stateDir, 'loam.nft'), 'utf8');
    let failed = false;
    sabotage = (argv) => {
      if (failed || argv[0] !== 'nft' || argv[1] !== '-f') return undefined;
      failed = true;
      return ['sh', '-c', 'echo "injected: syntax error" >&2; exit 1'];
    };
    try {
      const outcome = await handle(applyJob('bad', { cidr: '10.30.0.0/24' }, 4099));
      assert.equal(outcome.code, status.UNAVAILABLE);
      assert.match(outcome.message ?? '', /^nft -f \S+: injected: syntax error$/);
    } finally {
      sabotage = undefined;
    }
    const links = routerLinks();
    assert.ok(!links.has(bad.bridge) && !links.has(bad.vxlan), 'its links are gone again');
    assert.ok(links.has(web.bridge) && links.has(db.bridge));
    assert.equal(readFileSync(join(stateDir, 'loam.nft'), 'utf8'), ruleset);
    assert.doesNotMatch(inRouter('nft', 'list', 'table', 'inet', 'loam'), new RegExp(bad.bridge));
    assert.ok(!existsSync(join(stateDir, `dnsmasq-${bad.id}.conf`)));
    const served = (await driver.inventory()).map((item) => item.ref?.name);
    assert.deepEqual(served.sort(), ['db', 'web']);
  });

  it('refuses a WireGuard Network on a router without WireGuard, saying what to install', async () => {
    sabotage = (argv) => (argv[0] === 'wireguard-go' ? ['sh', '-c', 'exit 127'] : undefined);
    try {
      const spec = { cidr: '10.31.0.0/24', wireguard: { cidr: '10.91.0.0/24', port: 51830 } };
      const outcome = await handle(applyJob('bad', spec, 4098));
      assert.equal(outcome.code, status.INVALID_ARGUMENT);
      assert.equal(
        outcome.message,
        'spec.wireguard: this router cannot serve WireGuard: the kernel has no WireGuard and wireguard-go is not installed (Debian: wireguard-go)',
      );
      assert.deepEqual(
        (await driver.conditions()).map(({ type, status, reason }) => [type, status, reason]),
        [['WireGuardSupported', 'False', 'WireGuardMissing']],
      );
    } finally {
      sabotage = undefined;
    }
    assert.ok(!routerLinks().has(bad.bridge), 'nothing of it was made');
    assert.equal((await driver.conditions())[0]?.status, 'True');
  });

  it('removes a deleted Network and leaves the other alone', async () => {
    const webPid = pidAlive(join(stateDir, `dnsmasq-${web.id}.pid`));
    const dbPid = pidAlive(join(stateDir, `dnsmasq-${db.id}.pid`));
    const outcome = await handle(deleteJob('db'));
    assert.equal(outcome.code, status.OK, outcome.message);
    assert.deepEqual(outcome.observed, { deleted: true });
    const links = routerLinks();
    assert.ok(!links.has(db.bridge) && !links.has(db.vxlan));
    assert.ok(links.has(web.bridge) && links.has(web.vxlan));
    assert.ok(dbPid !== undefined && !processAlive(dbPid), 'its dnsmasq has ended');
    assert.equal(pidAlive(join(stateDir, `dnsmasq-${web.id}.pid`)), webPid);
    assert.ok(!readdirSync(stateDir).some((file) => file.includes(db.id)), 'its files are gone');
    assert.doesNotMatch(inRouter('nft', 'list', 'table', 'inet', 'loam'), new RegExp(db.bridge));
    assert.deepEqual(
      updates.at(-1)?.removed?.map((ref) => ref.name),
      ['db'],
    );
    // Deleting what is not there (again) is fine.
    assert.equal((await handle(deleteJob('db'))).code, status.OK);
  });

  it('serves a WireGuard server and changes its peers without restarting it', async () => {
    const first = generateKeyPair();
    const second = generateKeyPair();
    const peer = (name: string, publicKey: string, host: number) => ({
      peer: name,
      publicKey,
      address: `10.90.0.${host}`,
      allowedIPs: [`10.90.0.${host}/32`],
    });
    const spec = { cidr: '10.40.0.0/24', wireguard: { cidr: '10.90.0.0/24', port: 51820 } };
    const outcome = await handle(
      applyJob('vpn', spec, 4100, { peers: [peer('laptop', first.publicKey, 2)] }),
    );
    assert.equal(outcome.code, status.OK, outcome.message);
    const key = readFileSync(join(stateDir, `wireguard-${vpn.id}.key`), 'utf8').trim();
    assert.deepEqual(outcome.observed, {
      generation: latestGeneration(),
      configHash: `hash-${latestGeneration()}`,
      wireguard: { publicKey: publicKeyOf(key), endpoint: 'vpn.example.com:51820' },
      peers: ['laptop'],
      leases: [],
    });
    assert.equal(
      execFileSync('stat', ['-c', '%a', join(stateDir, `wireguard-${vpn.id}.key`)], {
        encoding: 'utf8',
      }).trim(),
      '600',
    );
    assert.equal(inRouter('wg', 'show', vpn.wireguard, 'peers').trim(), first.publicKey);
    assert.equal(inRouter('wg', 'show', vpn.wireguard, 'listen-port').trim(), '51820');

    // A client in a namespace of its own dials the server over a veth pair, so a handshake happens.
    sh([
      'ip',
      'link',
      'add',
      `vr${suffix}`,
      'netns',
      routerNs,
      'type',
      'veth',
      'peer',
      'name',
      `vc${suffix}`,
      'netns',
      clientNs,
    ]);
    inRouter('ip', 'address', 'add', '198.51.100.1/24', 'dev', `vr${suffix}`);
    inRouter('ip', 'link', 'set', `vr${suffix}`, 'up');
    inClient('ip', 'link', 'set', 'lo', 'up');
    inClient('ip', 'address', 'add', '198.51.100.2/24', 'dev', `vc${suffix}`);
    inClient('ip', 'link', 'set', `vc${suffix}`, 'up');
    inClient('wireguard-go', clientWg);
    const clientKey = join(tempDir, 'client.key');
    writeFileSync(clientKey, first.privateKey, { mode: 0o600 });
    inClient(
      'wg',
      'set',
      clientWg,
      'private-key',
      clientKey,
      'peer',
      publicKeyOf(key),
      'endpoint',
      '198.51.100.1:51820',
      'allowed-ips',
      '10.90.0.0/24,10.40.0.0/24',
    );
    inClient('ip', 'address', 'add', '10.90.0.2/32', 'dev', clientWg);
    inClient('ip', 'link', 'set', clientWg, 'up');
    inClient('ip', 'route', 'add', '10.90.0.0/24', 'dev', clientWg);
    inClient('busybox', 'ping', '-c', '1', '-W', '5', '10.90.0.1');
    const handshake = () => inRouter('wg', 'show', vpn.wireguard, 'latest-handshakes').trim();
    const before = handshake();
    assert.match(before, new RegExp(`^${first.publicKey.replace(/[+/]/g, '\\$&')}\\t[1-9]\\d*$`));
    const daemon = inRouter('wg', 'show', vpn.wireguard, 'private-key');

    const again = await handle(
      applyJob('vpn', spec, 4100, {
        peers: [peer('laptop', first.publicKey, 2), peer('phone', second.publicKey, 3)],
      }),
    );
    assert.equal(again.code, status.OK, again.message);
    assert.deepEqual((again.observed as { peers: string[] }).peers, ['laptop', 'phone']);
    assert.deepEqual(changes(commands), [
      `wg syncconf ${vpn.wireguard} ${stateDir}/wireguard-${vpn.id}.conf.keyed`,
    ]);
    assert.deepEqual(
      inRouter('wg', 'show', vpn.wireguard, 'peers').trim().split('\n').sort(),
      [first.publicKey, second.publicKey].sort(),
    );
    assert.ok(handshake().includes(before), 'the first peer keeps its session');
    assert.equal(inRouter('wg', 'show', vpn.wireguard, 'private-key'), daemon);
    inClient('busybox', 'ping', '-c', '1', '-W', '5', '10.90.0.1');
  });

  it('exports metrics of its Networks, their DHCP leases and WireGuard peers, and of its jobs', async () => {
    // An instance of web takes a lease from the pool, so dnsmasq writes its lease file.
    sh([
      'ip',
      'link',
      'add',
      `vd${suffix}`,
      'netns',
      routerNs,
      'type',
      'veth',
      'peer',
      'name',
      `vi${suffix}`,
      'netns',
      clientNs,
    ]);
    inRouter('ip', 'link', 'set', `vd${suffix}`, 'master', web.bridge, 'up');
    inClient('ip', 'link', 'set', `vi${suffix}`, 'up');
    inClient('busybox', 'udhcpc', '-i', `vi${suffix}`, '-n', '-q', '-f', '-s', '/bin/true');

    const exposition = await registry.metrics();
    const laptop = { namespace: tenant, network: 'vpn', peer: 'laptop' };
    const phone = { namespace: tenant, network: 'vpn', peer: 'phone' };
    const handshake = 'loam_wireguard_peer_latest_handshake_seconds';
    const now = Date.now() / 1000;
    assert.ok((sample(exposition, handshake, laptop) ?? 0) > now - 600, exposition);
    assert.ok((sample(exposition, handshake, laptop) ?? 0) <= now);
    assert.equal(sample(exposition, handshake, phone), 0, 'no handshake yet');
    for (const direction of ['receive', 'transmit']) {
      const name = `loam_wireguard_peer_${direction}_bytes_total`;
      assert.match(exposition, new RegExp(`^# TYPE ${name} counter$`, 'm'));
      assert.ok((sample(exposition, name, laptop) ?? 0) > 0, `${name} of laptop`);
      assert.equal(sample(exposition, name, phone), 0);
    }

    const labels = (network: string) => ({ namespace: tenant, network });
    assert.equal(sample(exposition, 'loam_network_applied_generation', labels('vpn')), latestGeneration());
    assert.equal(sample(exposition, 'loam_network_applied_generation', labels('web')), 4);
    assert.equal(sample(exposition, 'loam_network_applied_generation', labels('db')), undefined);
    assert.equal(sample(exposition, 'loam_network_dhcp_static_leases', labels('web')), 2);
    assert.equal(sample(exposition, 'loam_network_dhcp_leases', labels('web')), 1);
    assert.equal(sample(exposition, 'loam_network_dhcp_leases', labels('vpn')), 0);

    const results = { ok: 0, refused: 0, failed: 0 };
    for (const code of codes) {
      results[code === status.OK ? 'ok' : code === status.INVALID_ARGUMENT ? 'refused' : 'failed'] += 1;
    }
    assert.ok(results.refused > 0 && results.failed > 0, 'the tests above had jobs refused and failed');
    for (const [result, total] of Object.entries(results)) {
      assert.equal(sample(exposition, 'loam_router_apply_total', { result }), total, result);
      const last = sample(exposition, 'loam_router_last_apply_timestamp_seconds', { result }) ?? 0;
      assert.ok(last > now - 600 && last <= now, `${result} at ${last}`);
    }
  });

  it('serves the stored Networks again after a restart, without touching them', async () => {
    const pid = pidAlive(join(stateDir, `dnsmasq-${web.id}.pid`));
    commands = [];
    driver = new LinuxRouterDriver({ settings, exec, wireguardEndpoint: 'vpn.example.com' });
    await driver.start({ inventoryChanged: () => {}, lifecycle: () => {} });
    assert.deepEqual(changes(commands), []);
    const inventory = await driver.inventory();
    assert.deepEqual(inventory.map((item) => [item.ref?.kind, item.ref?.namespace, item.ref?.name]).sort(), [
      ['Network', tenant, 'vpn'],
      ['Network', tenant, 'web'],
    ]);
    const webItem = inventory.find((item) => item.ref?.name === 'web');
    assert.deepEqual(webItem?.observed, {
      generation: 4,
      configHash: 'hash-4',
      peers: [],
      leases: ['52:54:00:00:00:01=10.10.0.10', '52:54:00:00:00:02=10.10.0.11'],
    });
    assert.equal(pidAlive(join(stateDir, `dnsmasq-${web.id}.pid`)), pid);
  });

  it('reports its facts and capabilities', async () => {
    const facts = await driver.facts();
    assert.equal(facts.driver, 'linux');
    assert.match(facts.nftablesVersion ?? '', /^\d+\.\d+/);
    assert.match(facts.dnsmasqVersion ?? '', /^\d+\.\d+/);
    assert.match(facts.wireguardToolsVersion ?? '', /^\d+\.\d+/);
    const interfaces = facts.interfaces?.split(',') ?? [];
    assert.ok(interfaces.includes(`vr${suffix}`), facts.interfaces);
    assert.ok(!interfaces.some((name) => name === 'lo' || name.startsWith('loam_')), facts.interfaces);
    assert.deepEqual(driver.capabilities, ['vxlan', 'wireguard']);
  });

  it('removes a WireGuard server with its wireguard-go process and key', async () => {
    const outcome = await handle(deleteJob('vpn'));
    assert.equal(outcome.code, status.OK, outcome.message);
    assert.ok(!routerLinks().has(vpn.wireguard));
    assert.ok(!existsSync(`/var/run/wireguard/${vpn.wireguard}.sock`), 'wireguard-go has ended');
    assert.ok(!existsSync(join(stateDir, `wireguard-${vpn.id}.key`)));
  });
});
