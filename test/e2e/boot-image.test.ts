/**
 * A real image boot, end to end: `loam up` with this machine's libvirt agent on `qemu:///system`,
 * and `kubectl apply` of an Instance that boots a disk image (hack/guest.ts: the Debian cloud
 * kernel and a busybox initramfs on a FAT file system SYSLINUX boots, served over loopback HTTP)
 * with a NoCloud seed. The image lands in the agent's cache under its sha256, the root disk is a
 * qcow2 overlay on it grown to spec.rootDisk.size, the guest prints what its seed says on the
 * console, and `kubectl delete` removes the domain and its files. An Instance whose image does not
 * have the sha256 it names fails with the mismatch in its condition, and no domain is defined.
 *
 * It needs a system libvirtd (hack/libvirtd.ts starts one when none answers) and the packages
 * hack/install-deps.sh installs; a missing one fails the test with its name, never skips it.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { buildGuestImage, type GuestFile, seedMarker } from '../../hack/guest.js';
import { ensureLibvirtd, run } from '../../hack/libvirtd.js';
import { type Kubectl, kubectl } from '../harness/kubectl.js';
import {
  conditionOf,
  type FileServer,
  removeDomains,
  serveFiles,
  systemDomains,
  waitForStatus,
} from '../harness/libvirt.js';
import { LoamProcess } from '../harness/loam.js';
import { tempDir } from '../harness/plane.js';
import { pollUntil } from '../harness/poll.js';

const good = 'boot-image';
const bad = 'bad-image-sha';
const domains = [good, bad].map((name) => `loam.default.${name}`);
const rootDiskBytes = 64 * 1024 * 1024;
const userData = '#cloud-config\n# written by test/e2e/boot-image.test.ts\n';

function instanceManifest(name: string, image: { url: string; sha256: string }): string {
  return `
apiVersion: loam.dev/v1alpha1
kind: Instance
metadata: { name: ${name}, namespace: default }
spec:
  cpus: 1
  memory: 256Mi
  image: { url: "${image.url}", sha256: ${image.sha256} }
  rootDisk: { size: 64Mi }
  cloudInit:
    userData: ${JSON.stringify(userData)}
`;
}

describe('a real image boot: loam up on qemu:///system, an image Instance with a NoCloud seed', function () {
  this.timeout(300_000);
  let dir: string;
  let dataDir: string;
  let image: GuestFile;
  let files: FileServer;
  let loam: LoamProcess | undefined;
  let k: Kubectl;

  before(async () => {
    await ensureLibvirtd();
    await removeDomains(domains);
    dir = tempDir('boot-image');
    // QEMU runs as libvirt-qemu: it must enter the temp dir (mkdtemp makes it 0700) to reach the
    // cache and the disks in the storage dir beside the data dir.
    chmodSync(dir, 0o755);
    image = await buildGuestImage(join(dir, 'guest'));
    files = await serveFiles({ '/guest.img': image.bytes });
    dataDir = join(dir, 'data');
    loam = await LoamProcess.start({ dataDir, store: 'sqlite', libvirtUri: 'qemu:///system' }, 60_000);
    k = kubectl('1.33', loam.kubeconfig);
  });

  after(async () => {
    await loam?.stop();
    await removeDomains(domains);
    await files?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('boots the image with its seed, on an overlay grown to rootDisk.size, and deletes it all', async () => {
    const appliedAt = Date.now();
    const applied = await k.run(['apply', '-f', '-'], {
      input: instanceManifest(good, { url: files.url('/guest.img'), sha256: image.sha256 }),
    });
    assert.equal(applied.code, 0, applied.stderr);
    await waitForStatus(k, 'instance', good, 'Running', (status) => status.phase === 'Running', 120_000);
    const runningAt = Date.now();

    // The image is in the cache under its sha256, and the root disk is an overlay on that file.
    const storage = `${dataDir}-libvirt`;
    const cached = join(storage, 'cache', 'sha256', image.sha256);
    assert.equal(createHash('sha256').update(readFileSync(cached)).digest('hex'), image.sha256);
    assert.deepEqual(readdirSync(join(storage, 'cache', 'partial')), [], 'no download left half done');
    const uid = (await k('get', 'instance', good, '-o', 'jsonpath={.metadata.uid}')).trim();
    const instanceDir = join(storage, 'instances', uid);
    const root = join(instanceDir, 'root.qcow2');
    // -U: QEMU holds the image's write lock while the guest runs.
    const info = await run('qemu-img', ['info', '-U', '--output=json', root]);
    assert.equal(info.code, 0, info.stderr);
    const disk = JSON.parse(info.stdout) as Record<string, unknown>;
    assert.equal(disk.format, 'qcow2');
    assert.equal(disk['backing-filename'], cached);
    assert.equal(disk['backing-filename-format'], 'raw');
    assert.equal(disk['virtual-size'], rootDiskBytes, 'the overlay is grown to spec.rootDisk.size');

    // The guest read its seed: the meta-data names the Instance, the user data arrived intact.
    const consoleLog = join(instanceDir, 'console.log');
    let logged = '';
    await pollUntil(
      () => {
        logged = existsSync(consoleLog) ? readFileSync(consoleLog, 'utf8') : '';
        return logged.includes(seedMarker) || logged.includes('LOAM-SEED-MISSING');
      },
      {
        timeoutMs: 120_000,
        intervalMs: 250,
        what: () => `${seedMarker} in ${consoleLog} (it ends: ${JSON.stringify(logged.slice(-2000))})`,
      },
    );
    const markerAt = Date.now();
    const line = logged.split('\n').find((candidate) => /LOAM-SEED-(OK|MISSING)/.test(candidate)) ?? '';
    const userDataSha256 = createHash('sha256').update(userData).digest('hex');
    assert.equal(
      line.trim(),
      `${seedMarker} instance-id=${uid} local-hostname=${good} user-data-sha256=${userDataSha256}`,
    );
    console.log(
      `      apply -> Running ${((runningAt - appliedAt) / 1000).toFixed(1)} s, ` +
        `Running -> seed read on the console ${((markerAt - runningAt) / 1000).toFixed(1)} s`,
    );

    const deleted = await k.run(['delete', 'instance', good, '--timeout=60s']);
    assert.equal(deleted.code, 0, deleted.stderr);
    assert.ok(!(await systemDomains()).includes(`loam.default.${good}`), 'the domain is gone');
    assert.ok(!existsSync(instanceDir), `${instanceDir} is still there`);
    assert.ok(existsSync(cached), 'the cache keeps the image for the next Instance');
  });

  it('fails an image whose sha256 does not match, naming both digests, and defines no domain', async () => {
    const url = files.url('/guest.img');
    const wrong = createHash('sha256').update('some other image').digest('hex');
    const applied = await k.run(['apply', '-f', '-'], {
      input: instanceManifest(bad, { url, sha256: wrong }),
    });
    assert.equal(applied.code, 0, applied.stderr);
    const status = await waitForStatus(k, 'instance', bad, 'Failed', (s) => s.phase === 'Failed');
    const provisioned = conditionOf(status, 'Provisioned');
    assert.equal(provisioned?.status, 'False');
    assert.equal(provisioned?.reason, 'ProvisioningFailed');
    assert.equal(
      provisioned?.message,
      `spec.image: the download of ${url} has sha256 ${image.sha256}, not ${wrong}`,
    );
    const described = await k('describe', 'instance', bad);
    assert.match(described, /Warning\s+ProvisioningFailed/, 'an Event says it too');

    assert.ok(!(await systemDomains()).includes(`loam.default.${bad}`), 'no domain is defined');
    const storage = `${dataDir}-libvirt`;
    assert.ok(
      !existsSync(join(storage, 'cache', 'sha256', wrong)),
      'nothing is cached under the wrong digest',
    );
    assert.deepEqual(
      readdirSync(join(storage, 'cache', 'partial')),
      [],
      'the mismatched download is deleted',
    );

    const deleted = await k.run(['delete', 'instance', bad, '--timeout=60s']);
    assert.equal(deleted.code, 0, deleted.stderr);
  });
});
