/**
 * The data path of Networks, driven only through `kubectl apply` against `loam up`: every machine
 * is a network namespace this test makes, every agent the real `loam agent` process running in
 * its machine's namespace, dialing the hub over a management veth from the root namespace.
 *
 *   router      `loam agent network` (linux driver): bridge, VXLAN, dnsmasq, nftables, WireGuard
 *   hv1, hv2    `loam agent libvirt` (libvirt's test driver for domains; real host bridges)
 *   a1 (hv1), a2 (hv2)   "instances" of tenant-a: veth ends on their host's bridge of tenant-a/lan
 *   b1 (hv1)    an "instance" of tenant-b, on tenant-b/lan
 *   client      a WireGuard client using the generated wg-quick config (wireguard-go)
 *
 * The router and the hosts share an underlay (a bridge in the router's namespace) the VXLAN
 * segments cross, each host flooding to the router and the other host; the client reaches the
 * router's WAN address over a veth of its own.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { bridgeName } from '../../agents/libvirt/host-network.js';
import { type Kubectl, kubectl } from '../harness/kubectl.js';
import { LoamProcess } from '../harness/loam.js';
import { tempDir } from '../harness/plane.js';
import { pollUntil } from '../harness/poll.js';

const run = promisify(execFile);
const cli = new URL('../../bin/loam.js', import.meta.url).pathname;
const suffix = randomBytes(3).toString('hex');

type Machine = 'router' | 'hv1' | 'hv2';
/** The agents' machines: namespace, management veth (root end, hub and agent addresses), underlay address. */
const machines: Record<Machine, { ns: string; root: string; hub: string; agent: string; underlay: string }> =
  {
    router: {
      ns: `lr-${suffix}`,
      root: `mr${suffix}`,
      hub: '10.253.7.1',
      agent: '10.253.7.2',
      underlay: '10.99.0.1',
    },
    hv1: {
      ns: `lh1-${suffix}`,
      root: `m1${suffix}`,
      hub: '10.253.7.5',
      agent: '10.253.7.6',
      underlay: '10.99.0.2',
    },
    hv2: {
      ns: `lh2-${suffix}`,
      root: `m2${suffix}`,
      hub: '10.253.7.9',
      agent: '10.253.7.10',
      underlay: '10.99.0.3',
    },
  };
const ns = {
  client: `lc-${suffix}`,
  a1: `la1-${suffix}`,
  a2: `la2-${suffix}`,
  b1: `lb1-${suffix}`,
};
const allNamespaces = [...Object.values(machines).map((m) => m.ns), ...Object.values(ns)];
/** wireguard-go's control socket is global: the client's interface has a name of this run. */
const clientWg = `wgc${suffix}`;
const kernelBytes = Buffer.from('not a kernel: the test driver boots nothing\n');

function sh(argv: string[]): string {
  return execFileSync(argv[0] ?? '', argv.slice(1), { encoding: 'utf8', timeout: 20_000, stdio: 'pipe' });
}

function inNs(name: string, ...argv: string[]): string {
  return sh(['ip', 'netns', 'exec', name, ...argv]);
}

/** Whether one ping from `from` to `address` is answered within a second. */
async function pings(from: string, address: string): Promise<boolean> {
  try {
    await run('ip', ['netns', 'exec', from, 'busybox', 'ping', '-c', '1', '-W', '1', address], {
      timeout: 5_000,
    });
    return true;
  } catch {
    return false;
  }
}

/** A veth pair `a` (in namespace `nsA`) to `b` (in `nsB`). */
function veth(a: string, nsA: string, b: string, nsB: string): void {
  sh(['ip', 'link', 'add', `t${suffix}a`, 'type', 'veth', 'peer', 'name', `t${suffix}b`]);
  sh(['ip', 'link', 'set', `t${suffix}a`, 'netns', nsA]);
  sh(['ip', 'link', 'set', `t${suffix}b`, 'netns', nsB]);
  inNs(nsA, 'ip', 'link', 'set', `t${suffix}a`, 'name', a);
  inNs(nsB, 'ip', 'link', 'set', `t${suffix}b`, 'name', b);
  inNs(nsA, 'ip', 'link', 'set', a, 'up');
  inNs(nsB, 'ip', 'link', 'set', b, 'up');
}

interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
}

interface Resource {
  metadata: { name: string; namespace?: string };
  status?: {
    phase?: string;
    conditions?: Condition[];
    interfaces?: { network: string; mac: string; ipAddress: string }[];
  };
}

describe('the data path of Networks: kubectl apply to guests getting leases, isolation and WireGuard', function () {
  this.timeout(180_000);
  let dir: string;
  let loam: LoamProcess;
  let k: Kubectl;
  const agents = new Map<Machine, { child: ChildProcess; logs: () => string; args: string[] }>();

  function startAgent(machine: Machine, args: string[]): void {
    const child = spawn('ip', ['netns', 'exec', machines[machine].ns, process.execPath, cli, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let logs = '';
    child.stdout?.on('data', (d: Buffer) => {
      logs = (logs + d).slice(-20_000);
    });
    child.stderr?.on('data', (d: Buffer) => {
      logs = (logs + d).slice(-20_000);
    });
    agents.set(machine, { child, logs: () => logs, args });
  }

  async function stopAgent(machine: Machine): Promise<void> {
    const child = agents.get(machine)?.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }

  async function get(kind: string, name: string, namespace?: string): Promise<Resource | undefined> {
    const got = await k.run(['get', kind, name, '-o', 'json', ...(namespace ? ['-n', namespace] : [])]);
    return got.code === 0 ? (JSON.parse(got.stdout) as Resource) : undefined;
  }

  const condition = (r: Resource | undefined, type: string) =>
    r?.status?.conditions?.find((c) => c.type === type);

  /** Polls `kind/name` until `done` holds; the failure names the object's last status and the agents' logs. */
  async function until(
    kind: string,
    name: string,
    namespace: string | undefined,
    done: (r: Resource) => boolean,
    timeoutMs = 60_000,
  ): Promise<Resource> {
    let last: Resource | undefined;
    await pollUntil(
      async () => {
        last = await get(kind, name, namespace);
        return last !== undefined && done(last);
      },
      {
        timeoutMs,
        what: () =>
          `${kind} ${namespace ?? ''}/${name}: ${JSON.stringify(last?.status)}\n` +
          [...agents]
            .map(([machine, agent]) => `--- ${machine} agent:\n${agent.logs().slice(-3000)}`)
            .join('\n'),
      },
    );
    return last as Resource;
  }

  /** Puts `instance` (a namespace) on `host`'s bridge of `namespace/lan` with `mac`, and runs udhcpc. */
  async function plugIn(instance: string, host: Machine, namespace: string, mac: string): Promise<string> {
    const port = `p${instance.slice(1, 3)}${suffix}`;
    veth(port, machines[host].ns, 'eth0', instance);
    inNs(machines[host].ns, 'ip', 'link', 'set', port, 'master', bridgeName(namespace, 'lan'));
    inNs(instance, 'ip', 'link', 'set', 'eth0', 'down');
    inNs(instance, 'ip', 'link', 'set', 'eth0', 'address', mac);
    inNs(instance, 'ip', 'link', 'set', 'eth0', 'up');
    return dhcp(instance);
  }

  /** The address udhcpc leased on eth0 of `machine`, configured there with the default route. */
  async function dhcp(machine: string): Promise<string> {
    const udhcpc = ['busybox', 'udhcpc', '-i', 'eth0', '-n', '-q', '-f', '-t', '5', '-T', '2'];
    const { stdout, stderr } = await run(
      'ip',
      ['netns', 'exec', machine, ...udhcpc, '-s', join(dir, 'udhcpc.sh')],
      {
        timeout: 30_000,
      },
    );
    // busybox prints its progress on stderr.
    return /lease of (\S+) obtained/.exec(`${stdout}${stderr}`)?.[1] ?? '';
  }

  before(async () => {
    dir = tempDir('datapath');
    for (const name of allNamespaces) {
      sh(['ip', 'netns', 'add', name]);
      inNs(name, 'ip', 'link', 'set', 'lo', 'up');
    }
    const router = machines.router.ns;
    inNs(router, 'ip', 'link', 'add', 'ul0', 'type', 'bridge');
    inNs(router, 'ip', 'address', 'add', `${machines.router.underlay}/24`, 'dev', 'ul0');
    inNs(router, 'ip', 'link', 'set', 'ul0', 'up');
    for (const [machine, { ns: name, root, hub, agent, underlay }] of Object.entries(machines)) {
      sh(['ip', 'link', 'add', root, 'type', 'veth', 'peer', 'name', `t${suffix}m`]);
      sh(['ip', 'link', 'set', `t${suffix}m`, 'netns', name]);
      inNs(name, 'ip', 'link', 'set', `t${suffix}m`, 'name', 'mgmt0');
      sh(['ip', 'address', 'add', `${hub}/30`, 'dev', root]);
      sh(['ip', 'link', 'set', root, 'up']);
      inNs(name, 'ip', 'address', 'add', `${agent}/30`, 'dev', 'mgmt0');
      inNs(name, 'ip', 'link', 'set', 'mgmt0', 'up');
      if (machine === 'router') continue;
      veth(`u${machine}`, router, 'ul0', name);
      inNs(router, 'ip', 'link', 'set', `u${machine}`, 'master', 'ul0');
      inNs(name, 'ip', 'address', 'add', `${underlay}/24`, 'dev', 'ul0');
    }
    veth('wan0', router, 'wan0', ns.client);
    inNs(router, 'ip', 'address', 'add', '10.98.0.1/24', 'dev', 'wan0');
    inNs(ns.client, 'ip', 'address', 'add', '10.98.0.2/24', 'dev', 'wan0');
    // busybox udhcpc's hook: the leased address and the default route through the router.
    writeFileSync(
      join(dir, 'udhcpc.sh'),
      [
        '#!/bin/sh',
        'case "$1" in bound|renew)',
        '  ip address flush dev "$interface"',
        '  ip address add "$ip/$mask" dev "$interface"',
        '  ip route replace default via "$router" dev "$interface";;',
        'esac',
        '',
      ].join('\n'),
    );
    chmodSync(join(dir, 'udhcpc.sh'), 0o755);

    loam = await LoamProcess.start({
      dataDir: join(dir, 'plane'),
      store: 'sqlite',
      agentHost: '0.0.0.0',
      tlsSans: Object.values(machines).map((m) => m.hub),
    });
    k = kubectl('', loam.kubeconfig);
    const underlays = (machine: Machine) =>
      Object.entries(machines)
        .filter(([other]) => other !== machine)
        .map(([, m]) => m.underlay)
        .join(',');
    for (const machine of Object.keys(machines) as Machine[]) {
      const role = machine === 'router' ? 'network' : 'libvirt';
      const { stdout } = await run(process.execPath, [
        cli,
        'token',
        'create',
        '--role',
        role,
        '--data-dir',
        join(dir, 'plane'),
      ]);
      const flags = (/loam agent \w+ (.+)$/m.exec(stdout)?.[1] ?? '').trim().split(/\s+/);
      const at = (flag: string) => flags[flags.indexOf(flag) + 1] ?? '';
      const port = at('--server').split(':').pop();
      const common = [
        ...['--name', machine === 'router' ? 'edge' : machine],
        ...[
          '--server',
          `${machines[machine].hub}:${port}`,
          '--token',
          at('--token'),
          '--ca-pin',
          at('--ca-pin'),
        ],
        ...['--data-dir', join(dir, machine), '--metrics-address', '127.0.0.1:0', '--backoff-max', '2'],
        ...['--vxlan-local', machines[machine].underlay, '--vxlan-remotes', underlays(machine)],
      ];
      const own =
        role === 'network'
          ? [
              ...['--state-dir', join(dir, 'router-state'), '--wan', 'wan0'],
              ...['--wireguard-endpoint', '10.98.0.1', '--resync-interval', '1'],
            ]
          : ['--libvirt-uri', 'test:///default', '--storage-dir', join(dir, `storage-${machine}`)];
      startAgent(machine, ['agent', role, ...common, ...own]);
    }
    await until('router', 'edge', undefined, (r) => condition(r, 'Ready')?.status === 'True');
    for (const host of ['hv1', 'hv2']) {
      await until('host', host, undefined, (r) => condition(r, 'Ready')?.status === 'True');
    }
  });

  after(async () => {
    await run('ip', ['netns', 'exec', ns.client, 'wg-quick', 'down', join(dir, `${clientWg}.conf`)]).catch(
      () => undefined,
    );
    for (const machine of Object.keys(machines) as Machine[]) await stopAgent(machine);
    await loam?.stop();
    // dnsmasq and wireguard-go outlive the router agent by design: end them with their namespace.
    for (const name of allNamespaces) {
      for (const pid of sh(['ip', 'netns', 'pids', name]).split('\n').filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // gone already
        }
      }
      sh(['ip', 'netns', 'delete', name]);
    }
    for (const { root } of Object.values(machines)) {
      try {
        sh(['ip', 'link', 'delete', root]);
      } catch {
        // gone with its peer's namespace
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });

  const leases = new Map<string, string>();

  it('gives each instance its reserved address by DHCP over VXLAN; a tenant reaches its own, never another', async () => {
    mkdirSync(join(dir, 'www'));
    const kernel = join(dir, 'www', 'vmlinuz');
    writeFileSync(kernel, kernelBytes);
    const sha256 = createHash('sha256').update(kernelBytes).digest('hex');
    assert.equal((await k.run(['create', 'namespace', 'tenant-a'])).code, 0);
    assert.equal((await k.run(['create', 'namespace', 'tenant-b'])).code, 0);
    const instance = (namespace: string, name: string, host: Machine) => `
apiVersion: loam.dev/v1alpha1
kind: Instance
metadata: { name: ${name}, namespace: ${namespace} }
spec:
  host: ${host}
  cpus: 1
  memory: 64Mi
  kernel: { url: "file://${kernel}", sha256: ${sha256} }
  networks: [{ name: lan }]
`;
    const manifests = [
      `
apiVersion: loam.dev/v1alpha1
kind: Network
metadata: { name: lan, namespace: tenant-a }
spec:
  cidr: 10.61.0.0/24
  wireguard: { cidr: 10.71.0.0/24 }
`,
      `
apiVersion: loam.dev/v1alpha1
kind: Network
metadata: { name: lan, namespace: tenant-b }
spec:
  cidr: 10.62.0.0/24
`,
      instance('tenant-a', 'a1', 'hv1'),
      instance('tenant-a', 'a2', 'hv2'),
      instance('tenant-b', 'b1', 'hv1'),
    ].join('---');
    const applied = await k.run(['apply', '-f', '-'], { input: manifests });
    assert.equal(applied.code, 0, applied.stderr);

    for (const [instance, host, namespace, name] of [
      [ns.a1, 'hv1', 'tenant-a', 'a1'],
      [ns.a2, 'hv2', 'tenant-a', 'a2'],
      [ns.b1, 'hv1', 'tenant-b', 'b1'],
    ] as const) {
      // Running: defined on its host, on the host's bridge, with its lease on the router.
      const running = await until(
        'instance',
        name,
        namespace,
        (r) => r.status?.phase === 'Running' && Boolean(r.status.interfaces?.[0]?.ipAddress),
      );
      const nic = running.status?.interfaces?.[0];
      assert.ok(nic);
      assert.equal(
        await plugIn(instance, host, namespace, nic.mac),
        nic.ipAddress,
        `${name} gets its reserved address`,
      );
      leases.set(name, nic.ipAddress);
    }

    assert.ok(await pings(ns.a1, '10.61.0.1'), 'a1 reaches its gateway');
    assert.ok(await pings(ns.a1, leases.get('a2') ?? ''), 'a1 reaches a2 on the other host');
    assert.ok(await pings(ns.b1, '10.62.0.1'), 'b1 reaches its gateway');
    assert.equal(await pings(ns.a1, leases.get('b1') ?? ''), false, 'tenant-a cannot reach tenant-b');
    assert.equal(await pings(ns.b1, leases.get('a1') ?? ''), false, 'tenant-b cannot reach tenant-a');
    assert.equal(await pings(ns.a1, '10.62.0.1'), false, "tenant-a cannot reach tenant-b's gateway");
    assert.equal(await pings(ns.b1, '10.98.0.1'), false, "a tenant cannot reach the router's WAN address");
  });

  it('refuses bad Networks and peers with a clear reason, and the others keep working', async () => {
    const apply = (manifest: string) => k.run(['apply', '-f', '-'], { input: manifest });
    // Overlapping CIDRs on one router: another tenant's Network on tenant-a/lan's prefix.
    let applied = await apply(`
apiVersion: loam.dev/v1alpha1
kind: Network
metadata: { name: clash, namespace: tenant-b }
spec: { cidr: 10.61.0.0/25, router: edge }
`);
    assert.equal(applied.code, 0, applied.stderr);
    const clash = await until(
      'network',
      'clash',
      'tenant-b',
      (r) => condition(r, 'Placed')?.status === 'False',
    );
    assert.match(
      condition(clash, 'Placed')?.message ?? '',
      /10\.61\.0\.0\/25 overlaps 10\.61\.0\.0\/24 of Network tenant-a\/lan/,
    );
    // A segment outside the router's pool.
    applied = await apply(`
apiVersion: loam.dev/v1alpha1
kind: Network
metadata: { name: far, namespace: tenant-b }
spec: { cidr: 10.63.0.0/24, router: edge, segment: { type: vxlan, id: 100 } }
`);
    assert.equal(applied.code, 0, applied.stderr);
    const far = await until('network', 'far', 'tenant-b', (r) => condition(r, 'Placed')?.status === 'False');
    assert.match(
      condition(far, 'Placed')?.message ?? '',
      /100 is outside router edge's vxlan pool 4096-8191/,
    );
    // A peer public key that is not a key: refused by the API, naming the field.
    applied = await apply(`
apiVersion: loam.dev/v1alpha1
kind: WireGuardPeer
metadata: { name: broken, namespace: tenant-a }
spec: { network: lan, publicKey: not-a-key }
`);
    assert.equal(applied.code, 1);
    assert.match(applied.stderr, /spec\.publicKey/);

    assert.ok(await pings(ns.a1, leases.get('a2') ?? ''), 'tenant-a still works');
    assert.ok(await pings(ns.b1, '10.62.0.1'), 'tenant-b still works');
    for (const name of ['clash', 'far']) {
      assert.equal((await k.run(['delete', 'network', name, '-n', 'tenant-b'])).code, 0);
    }
  });

  it('lets a WireGuard peer in with its generated wg-quick config, and out again on kubectl delete', async () => {
    const applied = await k.run(['apply', '-f', '-'], {
      input: `
apiVersion: loam.dev/v1alpha1
kind: WireGuardPeer
metadata: { name: admin, namespace: tenant-a }
spec: { network: lan }
`,
    });
    assert.equal(applied.code, 0, applied.stderr);
    await until('wireguardpeer', 'admin', 'tenant-a', (r) => condition(r, 'Ready')?.status === 'True');
    const { stdout: config } = await run(process.execPath, [
      cli,
      'wg-config',
      'tenant-a/admin',
      '--kubeconfig',
      loam.kubeconfig,
    ]);
    assert.match(config, /Endpoint = 10\.98\.0\.1:51820/);
    const file = join(dir, `${clientWg}.conf`);
    writeFileSync(file, config, { mode: 0o600 });
    // A TEST DOUBLE of resolvconf: wg-quick hands it the config's DNS line; the real one would
    // rewrite this machine's resolver. It keeps what it was given, so the DNS is checked too.
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'resolvconf'), `#!/bin/sh\ncat > ${join(dir, 'resolvconf.out')}\n`, {
      mode: 0o755,
    });
    await run('ip', ['netns', 'exec', ns.client, 'wg-quick', 'up', file], {
      timeout: 30_000,
      // Without LOG_LEVEL wireguard-go detaches from wg-quick's output.
      env: {
        ...Object.fromEntries(Object.entries(process.env).filter(([key]) => key !== 'LOG_LEVEL')),
        PATH: `${bin}:${process.env.PATH}`,
        WG_QUICK_USERSPACE_IMPLEMENTATION: 'wireguard-go',
      },
    });
    await pollUntil(() => pings(ns.client, leases.get('a1') ?? ''), {
      timeoutMs: 30_000,
      what: 'the WireGuard client to reach a1 through the tunnel',
    });
    assert.equal(
      await pings(ns.client, leases.get('b1') ?? ''),
      false,
      'nor tenant-b through tenant-a’s tunnel',
    );

    assert.equal((await k.run(['delete', 'wireguardpeer', 'admin', '-n', 'tenant-a'])).code, 0);
    await pollUntil(async () => !(await pings(ns.client, leases.get('a1') ?? '')), {
      timeoutMs: 30_000,
      what: 'the deleted peer to be cut off',
    });
  });

  it('repairs a hand-deleted nftables table and dnsmasq at the next resync', async () => {
    inNs(machines.router.ns, 'nft', 'delete', 'table', 'inet', 'loam');
    const stateDir = join(dir, 'router-state');
    for (const file of readdirSync(stateDir).filter((name) => /^dnsmasq-.*\.pid$/.test(name))) {
      process.kill(Number(readFileSync(join(stateDir, file), 'utf8')), 'SIGKILL');
    }
    await pollUntil(
      () => {
        try {
          inNs(machines.router.ns, 'nft', 'list', 'table', 'inet', 'loam');
          return true;
        } catch {
          return false;
        }
      },
      { timeoutMs: 15_000, what: 'the nftables table to come back' },
    );
    assert.equal(await pings(ns.a1, leases.get('b1') ?? ''), false, 'isolation is back');
    await pollUntil(async () => (await dhcp(ns.a1).catch(() => '')) === leases.get('a1'), {
      timeoutMs: 30_000,
      what: 'dnsmasq to serve a1 again',
    });
  });

  it('keeps traffic flowing while the router agent restarts', async () => {
    const pinging = run(
      'ip',
      ['netns', 'exec', ns.a1, 'busybox', 'ping', '-c', '60', '-i', '0.1', '-W', '1', leases.get('a2') ?? ''],
      { timeout: 30_000 },
    );
    const pingingGateway = run(
      'ip',
      ['netns', 'exec', ns.a1, 'busybox', 'ping', '-c', '60', '-i', '0.1', '-W', '1', '10.61.0.1'],
      { timeout: 30_000 },
    );
    const agent = agents.get('router');
    assert.ok(agent);
    const connected = async () =>
      /loam_agent_connected\{role="network"\} 1/.test((await k.run(['get', '--raw', '/metrics'])).stdout);
    await stopAgent('router');
    await pollUntil(async () => !(await connected()), {
      timeoutMs: 15_000,
      what: 'the hub to see the agent go',
    });
    // Started again with its identity, without the token.
    const args = [...agent.args];
    args.splice(args.indexOf('--token'), 2);
    startAgent('router', args);
    await pollUntil(connected, {
      timeoutMs: 30_000,
      what: () => `the agent back: ${agents.get('router')?.logs()}`,
    });
    for (const result of await Promise.all([pinging, pingingGateway])) {
      assert.match(result.stdout, / 0% packet loss/, result.stdout);
    }
  });
});
