/** The libvirt Driver against libvirt's test driver, with a test double for the artifact cache. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { pino } from 'pino';
import { parseDomainXml } from '../../../agents/libvirt/domain-xml.js';
import { type ArtifactFetcher, LibvirtDriver } from '../../../agents/libvirt/driver.js';
import { bridgeName } from '../../../agents/libvirt/host-network.js';
import type { Virsh } from '../../../agents/libvirt/virsh.js';
import type {
  AgentJob,
  InventoryUpdate,
  JobOutcome,
  LifecycleNotice,
} from '../../../agents/runtime/driver.js';
import type { InstanceJobObject, ObservedInstance } from '../../../controllers/instance/reconcile.js';
import { type ErrorCode, isLoamError, LoamError } from '../../../crds/errors.js';
import type { Instance } from '../../../crds/v1alpha1/instance.js';
import { pollUntil } from '../../harness/poll.js';
import { imageSpec, instance, testDriver } from './fixtures.js';

/** Stands in for the artifact cache: every URL is a file the test wrote, or the failure it was given. */
class ArtifactCacheDouble implements ArtifactFetcher {
  readonly fetched: string[] = [];
  failure?: LoamError;

  constructor(private readonly file: string) {}

  async fetch(artifact: { url: string }): Promise<string> {
    this.fetched.push(artifact.url);
    if (this.failure !== undefined) throw this.failure;
    return this.file;
  }
}

const mac = '52:54:00:12:34:56';

function job(type: string, inst: Instance): AgentJob {
  const { name = '', namespace = 'default', uid = '', generation = 0 } = inst.metadata;
  const object: InstanceJobObject = {
    apiVersion: inst.apiVersion,
    kind: inst.kind,
    metadata: { name, namespace, uid, generation },
    spec: inst.spec,
    status: {
      host: 'hv1',
      interfaces: (inst.spec.networks ?? []).map((n) => ({ network: n.name, mac, ipAddress: '10.0.0.5' })),
    },
  };
  return { id: `${type}-${name}`, type, key: `Instance/${namespace}/${name}`, object: object as never };
}

const rejectsWith = (promise: Promise<unknown>, code: ErrorCode, message: RegExp) =>
  assert.rejects(promise, (err) => {
    assert.ok(isLoamError(err), `not a LoamError: ${err}`);
    assert.equal(err.code, code, err.message);
    assert.match(err.message, message);
    return true;
  });

describe('agents/libvirt/driver', () => {
  let storageDir: string;
  let file: string;
  let artifacts: ArtifactCacheDouble;
  let virsh: Virsh;
  let driver: LibvirtDriver;
  const web = instance('web');
  const uid = web.metadata.uid ?? '';
  const newDriver = (hypervisor: Virsh = virsh) =>
    new LibvirtDriver({
      hypervisor,
      storageDir,
      artifacts,
      domainType: 'qemu',
      logger: pino({ level: 'silent' }),
      eventPollMs: 50,
      shutdownTimeoutMs: 5_000,
    });
  const handle = (type: string, inst: Instance): Promise<JobOutcome> =>
    driver.handle(job(type, inst), new AbortController().signal);
  const instanceDir = (id = uid) => join(storageDir, 'instances', id);

  beforeEach(async () => {
    storageDir = await mkdtemp(join(tmpdir(), 'loam-libvirt-driver-'));
    file = join(storageDir, 'artifact');
    await writeFile(file, 'not really a kernel');
    artifacts = new ArtifactCacheDouble(file);
    virsh = testDriver();
    driver = newDriver();
  });

  afterEach(async () => {
    await driver.stop();
    await virsh.close();
    await rm(storageDir, { recursive: true, force: true });
  });

  it('reports its facts and capabilities', async () => {
    assert.deepEqual(driver.capabilities, ['tcg']);
    const facts = await driver.facts();
    assert.equal(facts.domainType, 'qemu');
    assert.match(facts.libvirtVersion ?? '', /^libvirt \d+\.\d+/);
  });

  it('boots a kernel: fetched kernel and initrd, console log in the instance dir, running at its generation', async () => {
    const inst = instance(
      'web',
      {
        kernel: {
          url: 'https://example.org/vmlinuz',
          sha256: 'a'.repeat(64),
          initrd: { url: 'https://example.org/initrd', sha256: 'c'.repeat(64) },
          cmdline: 'console=ttyS0',
        },
        networks: [{ name: 'lan' }],
      },
      { generation: 3 },
    );
    const outcome = await handle('instance.apply', inst);
    assert.equal(outcome.code, status.OK);
    assert.deepEqual(outcome.observed, {
      state: 'running',
      generation: 3,
      interfaces: [{ mac }],
    } satisfies ObservedInstance);
    assert.deepEqual(artifacts.fetched, ['https://example.org/vmlinuz', 'https://example.org/initrd']);
    const facts = parseDomainXml(await virsh.dumpxml(uid));
    assert.equal(facts.kernel, file);
    assert.equal(facts.initrd, file);
    assert.equal(facts.consoleLog, join(instanceDir(), 'console.log'));
    assert.deepEqual(facts.interfaces, [{ mac, bridge: bridgeName('team-a', 'lan') }]);
    assert.match(bridgeName('team-a', 'lan'), /^loam_[a-z2-7]{6}_br$/);

    const inventory = await driver.inventory();
    assert.deepEqual(inventory, [
      {
        ref: { kind: 'Instance', namespace: 'team-a', name: 'web', uid },
        observed: { state: 'running', generation: 3, interfaces: [{ mac }] },
      },
    ]);
  });

  it('applies twice without defining again', async () => {
    await handle('instance.apply', web);
    let defines = 0;
    const define = virsh.define.bind(virsh);
    virsh.define = (xml) => {
      defines++;
      return define(xml);
    };
    const again = await handle('instance.apply', web);
    assert.equal(defines, 0);
    assert.deepEqual(again.observed, { state: 'running', generation: 1, interfaces: [] });
  });

  it('stops the domain for runStrategy Halted', async () => {
    await handle('instance.apply', web);
    const halted = instance('web', { runStrategy: 'Halted' }, { generation: 2 });
    const outcome = await handle('instance.apply', halted);
    assert.deepEqual(outcome.observed, { state: 'stopped', generation: 2, interfaces: [] });
    assert.equal((await virsh.state(uid)).state, 'shutoff');
  });

  it('runs power actions on its own domain: stop, start, reboot, reset', async () => {
    const manual = instance('web', { runStrategy: 'Manual' });
    await handle('instance.apply', manual);
    const power = (action: string, inst = manual) => {
      const { namespace, name, uid } = inst.metadata;
      const object = {
        apiVersion: inst.apiVersion,
        kind: 'Instance',
        metadata: { namespace, name, uid },
        action,
      };
      return driver.handle(
        {
          id: `power-${action}`,
          type: 'instance.power',
          key: `Instance/${namespace}/${name}`,
          object: object as never,
        },
        new AbortController().signal,
      );
    };
    assert.deepEqual((await power('start')).observed, { state: 'running', generation: 1, interfaces: [] });
    assert.equal((await virsh.state(uid)).state, 'running');
    for (const action of ['reboot', 'reset']) {
      assert.deepEqual(
        (await power(action)).observed,
        { state: 'running', generation: 1, interfaces: [] },
        action,
      );
    }
    assert.deepEqual((await power('stop')).observed, { state: 'stopped', generation: 1, interfaces: [] });
    assert.deepEqual(await virsh.state(uid), {
      name: 'loam.team-a.web',
      state: 'shutoff',
      reason: 'shutdown',
    });
    // Asked again: already there, nothing to do.
    assert.deepEqual((await power('stop')).observed, { state: 'stopped', generation: 1, interfaces: [] });
    await rejectsWith(power('reset'), 'Conflict', /is not running/);
    assert.equal((await virsh.state(uid)).state, 'shutoff', 'a reset started nothing');
    await rejectsWith(power('pause'), 'Invalid', /action "pause" is not one of start, stop, reboot, reset/);
    await rejectsWith(power('reboot', instance('db')), 'NotFound', /no domain to reboot/);
    await rejectsWith(
      power('reboot', { ...manual, metadata: { ...manual.metadata, uid: '../x' } }),
      'Invalid',
      /metadata\.uid/,
    );
  });

  it('boots an image: a qcow2 overlay grown to rootDisk.size and data disks, made only once', async () => {
    const base = join(storageDir, 'base.raw');
    execFileSync('qemu-img', ['create', '-f', 'raw', base, '1M']);
    artifacts = new ArtifactCacheDouble(base);
    driver = newDriver();
    const inst = instance('vm', {
      ...imageSpec,
      rootDisk: { size: '2Mi' },
      disks: [{ name: 'root', size: '1Mi' }],
      cloudInit: { userData: '#cloud-config\n' },
    });
    const vmUid = inst.metadata.uid ?? '';
    const outcome = await handle('instance.apply', inst);
    assert.equal((outcome.observed as ObservedInstance).state, 'running');
    const root = join(instanceDir(vmUid), 'root.qcow2');
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', root], { encoding: 'utf8' }));
    assert.equal(info.format, 'qcow2');
    assert.equal(info['backing-filename'], base);
    assert.equal(info['backing-filename-format'], 'raw');
    assert.equal(info['virtual-size'], 2 * 1024 * 1024);
    const data = join(instanceDir(vmUid), 'disk-root.qcow2');
    assert.ok(existsSync(data));
    const facts = parseDomainXml(await virsh.dumpxml(vmUid));
    const seed = join(instanceDir(vmUid), 'seed.iso');
    assert.deepEqual(
      facts.disks.map(({ device, source }) => [device, source]),
      [
        ['disk', root],
        ['disk', data],
        ['disk', seed],
      ],
    );
    const label = execFileSync('xorriso', ['-indev', seed, '-pvd_info'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    assert.match(label, /^Volume Id\s*:\s*cidata$/m);

    const made = statSync(root).mtimeMs;
    const seeded = statSync(seed).ino;
    await handle('instance.apply', inst);
    assert.equal(statSync(root).mtimeMs, made);
    assert.equal(statSync(seed).ino, seeded, 'the same seed is not rebuilt');
  });

  it('refuses user data from a Secret before fetching anything', async () => {
    const inst = instance('vm', { ...imageSpec, cloudInit: { userDataSecretRef: { name: 'boot' } } });
    await rejectsWith(
      handle('instance.apply', inst),
      'Invalid',
      /^spec\.cloudInit\.userDataSecretRef: the controller sends the Secret.s value inline, and this job has only the reference$/,
    );
    assert.deepEqual(artifacts.fetched, []);
    await assert.rejects(virsh.state(inst.metadata.uid ?? ''), (err) => isLoamError(err, 'NotFound'));
  });

  it('refuses to shrink an image with rootDisk.size', async () => {
    const base = join(storageDir, 'base.raw');
    execFileSync('qemu-img', ['create', '-f', 'raw', base, '4M']);
    artifacts = new ArtifactCacheDouble(base);
    driver = newDriver();
    const inst = instance('vm', { ...imageSpec, rootDisk: { size: '1Mi' } });
    await rejectsWith(handle('instance.apply', inst), 'Invalid', /^spec\.rootDisk\.size: 1Mi is smaller/);
  });

  it('deletes the domain and its files', async () => {
    await handle('instance.apply', web);
    assert.ok(existsSync(instanceDir()));
    const outcome = await handle('instance.delete', web);
    assert.deepEqual(outcome, { code: status.OK, observed: { state: 'absent', deleted: true } });
    assert.equal(existsSync(instanceDir()), false);
    await assert.rejects(virsh.state(uid), (err) => isLoamError(err, 'NotFound'));
    assert.deepEqual(await driver.inventory(), []);
  });

  it('deletes a domain that is already gone', async () => {
    const outcome = await handle('instance.delete', web);
    assert.deepEqual(outcome.observed, { state: 'absent', deleted: true });
  });

  it('recognises its domains after a restart, and only those', async () => {
    await handle('instance.apply', web);
    // The test driver's own domain "test" runs too, without Loam metadata.
    assert.ok((await virsh.list()).some((domain) => domain.name === 'test'));
    const restarted = newDriver();
    const inventory = await restarted.inventory();
    assert.deepEqual(
      inventory.map((item) => item.ref),
      [{ kind: 'Instance', namespace: 'team-a', name: 'web', uid }],
    );
  });

  it('passes an artifact failure on, naming the field, and defines nothing', async () => {
    artifacts.failure = new LoamError('NotFound', 'https://example.org/vmlinuz answered 404');
    await rejectsWith(
      handle('instance.apply', web),
      'NotFound',
      /^spec\.kernel: https:\/\/example\.org\/vmlinuz answered 404$/,
    );
    await assert.rejects(virsh.state(uid), (err) => isLoamError(err, 'NotFound'));
  });

  it('refuses a network attachment without a MAC in the placement', async () => {
    const inst = instance('web', { networks: [{ name: 'lan' }] });
    const noPlacement = job('instance.apply', inst);
    (noPlacement.object as unknown as InstanceJobObject).status.interfaces = [];
    await rejectsWith(
      driver.handle(noPlacement, new AbortController().signal),
      'Invalid',
      /^spec\.networks\[0\]: no MAC for Network lan/,
    );
  });

  it('answers other jobs UNIMPLEMENTED', async () => {
    await rejectsWith(handle('instance.reboot', web), 'MethodNotAllowed', /does not run instance\.reboot/);
  });

  /** The driver watching its domains, with web applied and reported Started: what it reports. */
  async function watchingWeb(): Promise<{ updates: InventoryUpdate[]; notices: LifecycleNotice[] }> {
    const updates: InventoryUpdate[] = [];
    const notices: LifecycleNotice[] = [];
    await driver.start({
      inventoryChanged: (update) => updates.push(update),
      lifecycle: (notice) => notices.push(notice),
    });
    await handle('instance.apply', web);
    await pollUntil(() => notices.some((n) => n.reason === 'Started'), {
      timeoutMs: 5_000,
      what: 'a Started notice',
    });
    return { updates, notices };
  }

  it('reports a domain stopped behind its back, and its removal', async () => {
    const { updates, notices } = await watchingWeb();
    const ref = { kind: 'Instance', namespace: 'team-a', name: 'web', uid };

    // Both change state in one poll; only the Loam domain is reported.
    await virsh.destroy('test');
    await virsh.destroy(uid);
    await pollUntil(() => notices.some((n) => n.reason === 'Stopped'), {
      timeoutMs: 5_000,
      what: 'a Stopped notice',
    });
    assert.deepEqual(updates.at(-1), {
      upserted: [{ ref, observed: { state: 'stopped', generation: 1, interfaces: [] } }],
    });
    const stopped = notices.find((n) => n.reason === 'Stopped');
    assert.equal(stopped?.type, 'Normal');
    assert.deepEqual(stopped?.resource, ref);
    assert.match(stopped?.message ?? '', /stopped \(destroyed\)/);

    await virsh.undefine(uid);
    await pollUntil(() => updates.some((u) => u.removed !== undefined), {
      timeoutMs: 5_000,
      what: 'a removal',
    });
    assert.deepEqual(updates.at(-1), { removed: [ref] });
    assert.equal(
      updates.some((u) => u.upserted?.some((item) => item.ref.name === 'test')),
      false,
      'the domain without Loam metadata is never reported',
    );
  });

  it("passes over a domain whose change it cannot read, and reports the others'", async () => {
    // Someone's domain whose XML does not parse, listed before the Loam one (by name).
    const foreign = (await virsh.dumpxml('test'))
      .replace(/<name>test<\/name>/, '<name>aaa-foreign</name>')
      .replace(/<uuid>[^<]*<\/uuid>/, '');
    await virsh.define(foreign);
    await virsh.start('aaa-foreign');
    const unreadable = Object.create(virsh) as Virsh;
    unreadable.dumpxml = async (name, options) => {
      if (name === 'aaa-foreign') throw new LoamError('Invalid', 'domain XML that does not parse');
      return virsh.dumpxml(name, options);
    };
    await driver.stop();
    driver = newDriver(unreadable);
    const { notices } = await watchingWeb();
    await virsh.destroy('aaa-foreign');
    await virsh.destroy(uid);
    await pollUntil(() => notices.some((n) => n.reason === 'Stopped'), {
      timeoutMs: 5_000,
      what: "web's Stopped notice, past the unreadable domain",
    });
  });
});
