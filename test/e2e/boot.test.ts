/**
 * A real boot, end to end: `loam up` with this machine's libvirt agent on `qemu:///system`, and
 * `kubectl apply` of an Instance that boots a Debian kernel with a busybox initramfs (both built
 * from installed Debian packages, served over loopback HTTP) as a direct-kernel domain under QEMU
 * (TCG here: no KVM). The Instance reaches Running, the guest's marker appears in its console log
 * and through `loam console` (the real CLI, waiting from the apply to attach as soon as the
 * Instance runs), whose typing the guest's tty echoes; `loam reset` boots the guest again, and
 * `kubectl delete` removes the domain and its files.
 *
 * It needs a system libvirtd (hack/libvirtd.ts starts one when none answers) and the
 * packages hack/install-deps.sh installs; a missing one fails the test with its name, never skips it.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { bootMarker, buildGuest, type Guest } from '../../hack/guest.js';
import { ensureLibvirtd, virsh } from '../../hack/libvirtd.js';
import { runLoam } from '../harness/cli.js';
import { ConsoleProcess } from '../harness/console.js';
import { kubectl } from '../harness/kubectl.js';
import { LoamProcess } from '../harness/loam.js';
import { tempDir } from '../harness/plane.js';
import { pollUntil } from '../harness/poll.js';

const domain = 'loam.default.boot';

describe('a real boot: loam up on qemu:///system, a direct-kernel Instance', function () {
  this.timeout(300_000);
  let dir: string;
  let guest: Guest;
  let files: Server;
  let loam: LoamProcess | undefined;
  let attached: ConsoleProcess | undefined;

  before(async () => {
    await ensureLibvirtd();
    // A domain left by an earlier run that was killed would stand in the way.
    await removeDomain();
    dir = tempDir('boot');
    guest = await buildGuest(join(dir, 'guest'));
    files = createServer((request, response) => {
      const file = { '/vmlinuz': guest.kernel, '/initrd.gz': guest.initrd }[request.url ?? ''];
      if (file === undefined) response.writeHead(404).end();
      else response.writeHead(200, { 'content-length': file.bytes.length }).end(file.bytes);
    });
    await new Promise<void>((resolve) => files.listen(0, '127.0.0.1', resolve));
  });

  after(async () => {
    attached?.kill();
    await loam?.stop();
    await removeDomain();
    files?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('runs the guest, logs its console, resets it and deletes the domain and its files', async () => {
    const dataDir = join(dir, 'data');
    // QEMU runs as libvirt-qemu (Debian's qemu.conf): it must reach the kernel, initrd and disks
    // in the storage dir beside the data dir (the data dir itself stays 0700). mkdtemp makes the
    // temp dir 0700, which QEMU cannot enter, so the test opens it.
    chmodSync(dir, 0o755);
    loam = await LoamProcess.start({ dataDir, store: 'sqlite', libvirtUri: 'qemu:///system' }, 60_000);
    const k = kubectl('1.33', loam.kubeconfig);
    const { port } = files.address() as AddressInfo;
    const manifest = `
apiVersion: loam.dev/v1alpha1
kind: Instance
metadata: { name: boot, namespace: default }
spec:
  cpus: 1
  memory: 256Mi
  kernel:
    url: http://127.0.0.1:${port}/vmlinuz
    sha256: ${guest.kernel.sha256}
    initrd:
      url: http://127.0.0.1:${port}/initrd.gz
      sha256: ${guest.initrd.sha256}
    cmdline: ${guest.cmdline}
`;
    const appliedAt = Date.now();
    const applied = await k.run(['apply', '-f', '-'], { input: manifest });
    assert.equal(applied.code, 0, applied.stderr);
    // Now, waiting for the Instance to run: the pty passes on only what the guest prints while
    // someone reads it (the log keeps everything), and the guest prints its marker once.
    attached = ConsoleProcess.start('default/boot', loam.kubeconfig, ['--wait', '2m']);

    let status = '';
    await pollUntil(
      async () => {
        status = (await k.run(['get', 'instance', 'boot', '-o', 'jsonpath={.status}'])).stdout;
        return /"phase":"Running"/.test(status);
      },
      { timeoutMs: 120_000, intervalMs: 250, what: () => `the Instance to run (status: ${status})` },
    );
    const runningAt = Date.now();
    // libvirt shows a starting domain as paused (reason: starting up) for a moment, and the agent
    // counts paused as running, so the Instance can be Running a little before the domain is.
    let state = '';
    await pollUntil(
      async () => {
        const shown = await virsh(['domstate', '--reason', domain]);
        state = `${shown.stdout.trim()}${shown.stderr.trim()}`;
        return /^running\b/.test(state);
      },
      {
        timeoutMs: 30_000,
        intervalMs: 250,
        what: () => `domain ${domain} to run (virsh domstate: ${state})`,
      },
    );

    const uid = (await k('get', 'instance', 'boot', '-o', 'jsonpath={.metadata.uid}')).trim();
    const instanceDir = join(`${dataDir}-libvirt`, 'instances', uid);
    const consoleLog = join(instanceDir, 'console.log');
    let logged = '';
    await pollUntil(
      () => {
        logged = existsSync(consoleLog) ? readFileSync(consoleLog, 'utf8') : '';
        return logged.includes(bootMarker);
      },
      {
        timeoutMs: 120_000,
        intervalMs: 250,
        what: () => `${bootMarker} in ${consoleLog} (it ends: ${JSON.stringify(logged.slice(-2000))})`,
      },
    );
    const markerAt = Date.now();
    // The guest's own `uname -r` follows the marker: the line came from its userland.
    assert.match(
      logged,
      new RegExp(`${bootMarker} \\d+\\.\\d+\\.\\d+-\\S+`),
      'the marker line names the guest kernel',
    );
    assert.match(logged, /Linux version/, 'the kernel logged its boot to the serial console');
    console.log(
      `      apply -> Running ${((runningAt - appliedAt) / 1000).toFixed(1)} s, ` +
        `Running -> ${bootMarker} on the console ${((markerAt - runningAt) / 1000).toFixed(1)} s ` +
        `(apply -> marker ${((markerAt - appliedAt) / 1000).toFixed(1)} s): ` +
        (logged.split('\n').find((line) => line.includes(bootMarker)) ?? '').trim(),
    );
    // The same line through `loam console`; what is typed reaches the guest, whose tty echoes it.
    await attached.waitFor(bootMarker, 60_000);
    assert.match(attached.stdout, new RegExp(`${bootMarker} \\d+\\.\\d+\\.\\d+-\\S+`));
    const typed = `loam-console-${randomBytes(4).toString('hex')}`;
    attached.write(`${typed}\r`);
    await attached.waitFor(typed, 30_000);
    assert.equal(await attached.detach(), 0, attached.stderr);

    // `loam reset` presses the domain's reset button: the same QEMU boots the guest again.
    const markers = () => readFileSync(consoleLog, 'utf8').split(bootMarker).length - 1;
    const before = markers();
    const reset = await runLoam(['reset', 'default/boot', '--kubeconfig', loam.kubeconfig]);
    assert.equal(reset.code, 0, reset.stderr);
    assert.match(reset.stdout, /^default\/boot: reset done on Host \S+\n$/);
    await pollUntil(() => markers() > before, {
      timeoutMs: 120_000,
      intervalMs: 250,
      what: () =>
        `${bootMarker} again in ${consoleLog} after the reset (it ends: ${JSON.stringify(readFileSync(consoleLog, 'utf8').slice(-1500))})`,
    });

    const deleted = await k.run(['delete', 'instance', 'boot', '--timeout=60s']);
    assert.equal(deleted.code, 0, deleted.stderr);
    const gone = await k.run(['get', 'instance', 'boot']);
    assert.match(gone.stderr, /NotFound/);
    const listed = await virsh(['list', '--all', '--name']);
    assert.equal(listed.code, 0, listed.stderr);
    assert.ok(!listed.stdout.split('\n').includes(domain), `virsh list --all still shows ${domain}`);
    assert.ok(!existsSync(instanceDir), `${instanceDir} is still there`);
  });
});

/** Destroys and undefines the test's domain if it exists; a failed test leaves nothing behind. */
async function removeDomain(): Promise<void> {
  const listed = await virsh(['list', '--all', '--name']);
  if (!listed.stdout.split('\n').includes(domain)) return;
  await virsh(['destroy', domain]);
  await virsh(['undefine', domain]);
}
