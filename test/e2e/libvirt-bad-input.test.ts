/**
 * Bad input to the libvirt agent, end to end through `loam up` and kubectl: each mistake shows as
 * a condition a person can act on, the agent and the other Instances carry on, and the Instance
 * recovers once the cause is fixed.
 *
 * On libvirt's test driver (domains "run" without booting): an image URL that answers 404 until
 * the file is published, a sha256 that does not match until the spec is corrected, a kernel path
 * that does not exist until the file is written, and more memory than any Host has until the spec
 * asks for less.
 *
 * On `qemu:///system`: libvirt going away. The agent talks to libvirtd through a unix socket the
 * test forwards to libvirtd's own (`qemu+unix:///system?socket=…`); taking that socket away is,
 * as the agent sees it, libvirtd stopping (virsh cannot connect), without stopping the daemon
 * other tests share. Whether libvirt is away when the agent starts or goes while it runs, the
 * Host turns not Ready with the reason, the agent stays connected, and once the socket is back
 * the Host is Ready and Instances run again.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmodSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { buildGuest } from '../../hack/guest.js';
import { ensureLibvirtd } from '../../hack/libvirtd.js';
import { type Kubectl, kubectl } from '../harness/kubectl.js';
import {
  conditionOf,
  type FileServer,
  type ObjectStatus,
  removeDomains,
  serveFiles,
  statusOf,
  systemDomains,
  waitForStatus,
} from '../harness/libvirt.js';
import { LoamProcess } from '../harness/loam.js';
import { tempDir } from '../harness/plane.js';
import { pollUntil } from '../harness/poll.js';

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
/** A file the test driver takes for a kernel or image: distinct bytes, as the cache is by content. */
const artifact = (fill: number) => Buffer.alloc(64 * 1024, fill);

/** An Instance of 128Mi with `spec` (a kernel or image to boot, other fields), as JSON, which is YAML too. */
function instance(name: string, spec: object): string {
  const metadata = { name, namespace: 'default' };
  return JSON.stringify({
    apiVersion: 'loam.dev/v1alpha1',
    kind: 'Instance',
    metadata,
    spec: { memory: '128Mi', ...spec },
  });
}

const isRunning = (status: ObjectStatus) => status.phase === 'Running';

async function apply(k: Kubectl, manifests: string[]): Promise<void> {
  const applied = await k.run(['apply', '-f', '-'], { input: manifests.join('\n---\n') });
  assert.equal(applied.code, 0, applied.stderr);
}

async function patchSpec(k: Kubectl, name: string, spec: object): Promise<void> {
  await k('patch', 'instance', name, '--type', 'merge', '-p', JSON.stringify({ spec }));
}

describe('bad input to the libvirt agent: a clear condition, and recovery once fixed', function () {
  this.timeout(180_000);
  let dir: string;
  let files: FileServer;
  let loam: LoamProcess | undefined;

  before(async () => {
    dir = tempDir('libvirt-bad-input');
    files = await serveFiles();
  });

  after(async () => {
    await loam?.stop();
    await files?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  describe("on libvirt's test driver", () => {
    let k: Kubectl;
    let host: string;
    let steady: ObjectStatus;
    const kernel = artifact(1);
    let kernelRef: { url: string; sha256: string };

    // One Instance runs throughout. A Host may have 2 cpus (as here): the others come one at a time.
    before(async () => {
      loam = await LoamProcess.start({
        dataDir: join(dir, 'test-driver'),
        store: 'sqlite',
        libvirtUri: 'test:///default',
      });
      k = kubectl('1.33', loam.kubeconfig);
      files.publish('/vmlinuz', kernel);
      kernelRef = { url: files.url('/vmlinuz'), sha256: sha256(kernel) };
      await apply(k, [instance('steady', { kernel: kernelRef })]);
      steady = await waitForStatus(k, 'instance', 'steady', 'Running', isRunning);
      host = steady.host as string;
    });
    after(() => loam?.stop());

    /** Waits for `name` to fail as `broken` accepts, and returns that status. */
    const failure = (name: string, what: string, broken: (status: ObjectStatus) => boolean) =>
      waitForStatus(k, 'instance', name, what, broken);
    /** Once its cause is fixed: `name` runs, and is deleted to free the Host's cpus. */
    async function recovers(name: string): Promise<void> {
      await waitForStatus(k, 'instance', name, 'Running once fixed', isRunning);
      await k('delete', 'instance', name, '--timeout=30s');
    }
    // Not found (a 404, no such file) is worth retrying, as the file may yet appear.
    const retrying = (cause: string) => (status: ObjectStatus) => {
      const provisioned = conditionOf(status, 'Provisioned');
      return provisioned?.reason === 'ApplyFailed' && provisioned.message.includes(cause);
    };

    it('an image URL that answers 404: retried, and Running once the file is published', async () => {
      const image = artifact(2);
      const url = files.url('/late.img');
      await apply(k, [instance('missing-image', { image: { url, sha256: sha256(image) } })]);
      const status = await failure(
        'missing-image',
        'a 404',
        retrying(`spec.image: ${url} answered 404 Not Found`),
      );
      assert.equal(status.phase, 'Provisioning');
      assert.match(conditionOf(status, 'Provisioned')?.message ?? '', /; retrying$/);
      files.publish('/late.img', image);
      await recovers('missing-image');
    });

    it('a sha256 mismatch: Failed, naming both digests, and Running once the spec is corrected', async () => {
      const image = artifact(3);
      files.publish('/disk.img', image);
      const url = files.url('/disk.img');
      const wrong = sha256(Buffer.from('not the image'));
      await apply(k, [instance('wrong-sha', { image: { url, sha256: wrong } })]);
      const status = await failure('wrong-sha', 'Failed', (s) => s.phase === 'Failed');
      const provisioned = conditionOf(status, 'Provisioned');
      assert.equal(provisioned?.reason, 'ProvisioningFailed');
      assert.equal(
        provisioned?.message,
        `spec.image: the download of ${url} has sha256 ${sha256(image)}, not ${wrong}`,
      );
      await patchSpec(k, 'wrong-sha', { image: { url, sha256: sha256(image) } });
      await recovers('wrong-sha');
    });

    it('a kernel path that does not exist: retried, and Running once the file is there', async () => {
      const late = artifact(4);
      const path = join(dir, 'late-vmlinuz');
      await apply(k, [
        instance('missing-kernel', { kernel: { url: pathToFileURL(path).href, sha256: sha256(late) } }),
      ]);
      await failure('missing-kernel', 'no such file', retrying(`spec.kernel: ${path} does not exist`));
      writeFileSync(path, late);
      await recovers('missing-kernel');
    });

    it('more memory than any Host has: Unschedulable, naming the largest Host, until it asks for less', async () => {
      await apply(k, [instance('too-big', { kernel: kernelRef, memory: '64Ti' })]);
      const status = await failure('too-big', 'Unschedulable', (s) => {
        return conditionOf(s, 'Scheduled')?.reason === 'Unschedulable';
      });
      assert.equal(status.phase, 'Scheduling');
      assert.equal(status.host, undefined);
      assert.match(
        conditionOf(status, 'Scheduled')?.message ?? '',
        new RegExp(
          '^0/1 Hosts fit 1 cpu and 64Ti of memory: 1 with less allocatable memory than spec.memory; ' +
            `spec.memory 64Ti is more than any Host has: the largest, ${host}, has [\\d.]+[KMGT]i allocatable$`,
        ),
      );
      await patchSpec(k, 'too-big', { memory: '128Mi' });
      await recovers('too-big');
    });

    it('kept the agent, its Host and the other Instance running throughout', async () => {
      const ready = conditionOf(await statusOf(k, 'host', host), 'Ready');
      assert.deepEqual([ready?.status, ready?.reason], ['True', 'AgentConnected']);
      const now = await statusOf(k, 'instance', 'steady');
      assert.equal(now?.phase, 'Running');
      assert.equal(
        conditionOf(now, 'Ready')?.lastTransitionTime,
        conditionOf(steady, 'Ready')?.lastTransitionTime,
        'the steady Instance stayed Ready',
      );
    });
  });

  describe('on qemu:///system, libvirt going away and coming back', () => {
    const names = ['before-outage', 'during-outage'];
    const domains = names.map((name) => `loam.default.${name}`);
    let k: Kubectl;
    let libvirt: LibvirtSocket;
    let bootable: object;
    let host: string;
    /** The Host's status once its Ready condition has `status`; the reason and message say why. */
    const hostWhen = (status: string) =>
      waitForStatus(k, 'host', host, `Ready=${status}`, (s) => conditionOf(s, 'Ready')?.status === status);
    const libvirtDown =
      /LibvirtReachable is False: cannot reach libvirt at qemu\+unix:\/\/\/system\?socket=\S+: .*Failed to connect socket.*Start libvirtd/;
    before(async () => {
      await ensureLibvirtd();
      await removeDomains(domains);
      // QEMU (user libvirt-qemu) must reach the kernel and initrd in the storage dir.
      chmodSync(dir, 0o755);
      const guest = await buildGuest(join(dir, 'guest'));
      files.publish('/guest/vmlinuz', guest.kernel.bytes);
      files.publish('/guest/initrd.gz', guest.initrd.bytes);
      bootable = {
        url: files.url('/guest/vmlinuz'),
        sha256: guest.kernel.sha256,
        initrd: { url: files.url('/guest/initrd.gz'), sha256: guest.initrd.sha256 },
        cmdline: guest.cmdline,
      };
      // Away at first: `loam up` before libvirtd, as on a machine still being set up.
      libvirt = new LibvirtSocket(join(dir, 'libvirt-sock'));
      loam = await LoamProcess.start(
        {
          dataDir: join(dir, 'qemu'),
          store: 'sqlite',
          libvirtUri: `qemu+unix:///system?socket=${libvirt.path}`,
        },
        60_000,
      );
      k = kubectl('1.33', loam.kubeconfig);
    });
    after(async () => {
      await loam?.stop();
      await libvirt?.down();
      await removeDomains(domains);
    });

    it('starts without libvirt: the agent connects, its Host says why it is not Ready, until libvirt answers', async () => {
      let hosts = '';
      await pollUntil(
        async () => {
          hosts = (await k.run(['get', 'hosts', '-o', 'jsonpath={.items[*].metadata.name}'])).stdout.trim();
          return hosts !== '';
        },
        { timeoutMs: 30_000, what: 'the agent to enroll its Host' },
      );
      host = hosts;
      const down = await hostWhen('False');
      assert.equal(conditionOf(down, 'Ready')?.reason, 'LibvirtUnreachable');
      assert.match(conditionOf(down, 'Ready')?.message ?? '', libvirtDown);
      await libvirt.up();
      const up = await hostWhen('True');
      assert.equal(conditionOf(up, 'LibvirtReachable')?.reason, 'Connected');
    });

    it('loses libvirt while it runs an Instance: not Ready with the reason, connected, and resumes', async () => {
      await apply(k, [instance('before-outage', { kernel: bootable })]);
      await waitForStatus(k, 'instance', 'before-outage', 'Running', isRunning, 120_000);

      await libvirt.down();
      const down = await hostWhen('False');
      const ready = conditionOf(down, 'Ready');
      assert.equal(ready?.reason, 'LibvirtUnreachable');
      assert.match(ready?.message ?? '', libvirtDown);
      assert.equal(conditionOf(down, 'LibvirtReachable')?.status, 'False');
      // The agent stays connected: only libvirt is missing.
      assert.match(await k('get', '--raw', '/metrics'), /^loam_agent_connected\{role="libvirt"\} 1$/m);
      const unknown = await waitForStatus(
        k,
        'instance',
        'before-outage',
        'Unknown',
        (s) => s.phase === 'Unknown',
      );
      assert.match(
        conditionOf(unknown, 'HostReachable')?.message ?? '',
        /is not Ready \(LibvirtUnreachable: /,
      );
      await apply(k, [instance('during-outage', { kernel: bootable })]);
      await waitForStatus(k, 'instance', 'during-outage', 'waiting for a Ready Host', (status) => {
        const scheduled = conditionOf(status, 'Scheduled');
        return scheduled?.message === '0/1 Hosts fit 1 cpu and 128Mi of memory: 1 not Ready';
      });

      await libvirt.up();
      const back = await hostWhen('True');
      assert.equal(conditionOf(back, 'LibvirtReachable')?.status, 'True');
      for (const name of names) await waitForStatus(k, 'instance', name, 'Running', isRunning, 120_000);

      const deleted = await k.run(['delete', 'instance', ...names, '--timeout=60s']);
      assert.equal(deleted.code, 0, deleted.stderr);
      const left = await systemDomains();
      assert.deepEqual(
        domains.filter((domain) => left.includes(domain)),
        [],
        'the domains are gone',
      );
    });
  });
});

/**
 * A unix socket that forwards every connection to libvirtd's. `down` takes it away (and cuts the
 * connections through it), which a libvirt client cannot tell from libvirtd stopping; `up` brings
 * it back.
 */
class LibvirtSocket {
  private server: Server | undefined;
  private readonly connections = new Set<Socket>();

  constructor(readonly path: string) {}

  async up(): Promise<void> {
    const server = createServer((client) => {
      const daemon = connect('/run/libvirt/libvirt-sock');
      for (const end of [client, daemon]) {
        this.connections.add(end);
        end.once('close', () => this.connections.delete(end));
        end.once('error', () => {
          client.destroy();
          daemon.destroy();
        });
      }
      client.pipe(daemon).pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, resolve);
    });
    this.server = server;
  }

  async down(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const connection of this.connections) connection.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(this.path, { force: true });
  }
}
