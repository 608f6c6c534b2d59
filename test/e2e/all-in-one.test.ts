/**
 * One machine, one control plane, both local agents with their real drivers: the libvirt agent on
 * libvirt's test driver (domains defined and "running", nothing boots) and the network agent's
 * Linux driver confined to a network namespace this test makes. A Network and an Instance
 * applied through the API end with the router really serving the Network (bridge, gateway,
 * dnsmasq with the Instance's static lease) and the Instance Running with that address.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { openLibvirtDriver } from '../../agents/libvirt/driver.js';
import { LinuxRouterDriver } from '../../agents/network/drivers/linux.js';
import { defaultRouterSettings, networkId } from '../../agents/network/model.js';
import type { ControlPlane } from '../../controllers/up.js';
import type { Instance, Network } from '../../crds/v1alpha1/index.js';
import { testLogger } from '../agents/hub-double.js';
import { startPlane, tempDir } from '../harness/plane.js';
import { pollUntil } from '../harness/poll.js';

const group = { group: 'loam.dev', version: 'v1alpha1', namespace: 'default' };
const machine = (hostname().split('.')[0] ?? '').toLowerCase();
const routerNs = `loam-aio-${process.pid}`;
const kernelBytes = Buffer.from('not a kernel\n');

function sh(argv: string[]): string {
  return execFileSync(argv[0] as string, argv.slice(1), { encoding: 'utf8', timeout: 10_000 });
}

describe('all in one: loam up with its real local agents', function () {
  this.timeout(90_000);
  let dir: string;
  let plane: ControlPlane | undefined;
  const stateDir = () => join(dir, 'network');

  after(async () => {
    await plane?.stop();
    // dnsmasq by its pid files; the namespace takes the links with it.
    for (const file of existsSync(stateDir()) ? readdirSync(stateDir()) : []) {
      if (!file.endsWith('.pid')) continue;
      try {
        process.kill(Number(readFileSync(join(stateDir(), file), 'utf8')), 'SIGKILL');
      } catch {
        // already gone
      }
    }
    sh(['ip', 'netns', 'delete', routerNs]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves a Network on the router and runs an Instance on it with its static lease', async () => {
    dir = tempDir('all-in-one');
    sh(['ip', 'netns', 'add', routerNs]);
    // libvirt's test driver boots nothing, so any file will do as the kernel.
    const kernel = join(dir, 'vmlinuz');
    writeFileSync(kernel, kernelBytes);
    const libvirt = await openLibvirtDriver({
      uri: 'test:///default',
      storageDir: join(dir, 'libvirt'),
      logger: testLogger,
    });
    const router = new LinuxRouterDriver({
      settings: { ...defaultRouterSettings('linux'), stateDir: stateDir() },
      exec: (argv) => ['ip', 'netns', 'exec', routerNs, ...argv],
      logger: testLogger,
    });
    plane = await startPlane(join(dir, 'plane'), {
      controllers: true,
      localAgents: [
        { role: 'libvirt', driver: libvirt.driver, close: libvirt.close, metricsAddress: '127.0.0.1:0' },
        { role: 'network', driver: router, metricsAddress: '127.0.0.1:0' },
      ],
    });
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(plane.kubeconfigPath);
    const api = kc.makeApiClient(k8s.CustomObjectsApi);
    await api.createNamespacedCustomObject({
      ...group,
      plural: 'networks',
      body: {
        apiVersion: 'loam.dev/v1alpha1',
        kind: 'Network',
        metadata: { name: 'lab', namespace: 'default' },
        spec: { cidr: '10.77.0.0/24' },
      },
    });
    await api.createNamespacedCustomObject({
      ...group,
      plural: 'instances',
      body: {
        apiVersion: 'loam.dev/v1alpha1',
        kind: 'Instance',
        metadata: { name: 'web', namespace: 'default' },
        spec: {
          cpus: 1,
          memory: '64Mi',
          kernel: { url: `file://${kernel}`, sha256: createHash('sha256').update(kernelBytes).digest('hex') },
          networks: [{ name: 'lab' }],
        },
      },
    });

    let instance: Instance | undefined;
    let network: Network | undefined;
    await pollUntil(
      async () => {
        instance = (await api.getNamespacedCustomObject({
          ...group,
          plural: 'instances',
          name: 'web',
        })) as Instance;
        network = (await api.getNamespacedCustomObject({
          ...group,
          plural: 'networks',
          name: 'lab',
        })) as Network;
        const configured = network.status?.conditions?.find((c) => c.type === 'Configured');
        return instance.status?.phase === 'Running' && configured?.status === 'True';
      },
      {
        timeoutMs: 60_000,
        what: () =>
          `web Running and lab Configured: ${JSON.stringify({ web: instance?.status, lab: network?.status })}`,
      },
    );
    assert.equal(instance?.status?.host, machine);
    assert.equal(network?.status?.router, machine);
    const nic = instance?.status?.interfaces?.[0];
    assert.ok(nic?.ipAddress && nic.mac);

    // The router really serves it: the gateway on the Network's bridge, the lease in dnsmasq's config.
    const bridge = `loam_${networkId(network as Network)}_br`;
    const addresses = sh(['ip', '-n', routerNs, '-j', 'address', 'show', 'dev', bridge]);
    assert.match(addresses, /"local":"10\.77\.0\.1"/);
    const configs = readdirSync(stateDir()).filter((file) => file.endsWith('.conf'));
    const dnsmasq = configs.map((file) => readFileSync(join(stateDir(), file), 'utf8')).join('\n');
    assert.ok(
      dnsmasq.includes(nic.mac) && dnsmasq.includes(nic.ipAddress),
      `the static lease in:\n${dnsmasq}`,
    );
  });
});
