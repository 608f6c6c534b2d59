import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type PreflightCondition,
  type PreflightResult,
  preflight,
  recheck,
} from '../../../agents/libvirt/preflight.js';
import { Virsh } from '../../../agents/libvirt/virsh.js';

const byType = (result: PreflightResult, type: string): PreflightCondition => {
  const found = result.conditions.find((condition) => condition.type === type);
  assert.ok(found, `no ${type} condition`);
  return found;
};

describe('agents/libvirt/preflight (on this machine)', () => {
  let dir: string;
  let testDriver: Virsh;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'loam-preflight-'));
    testDriver = new Virsh({ uri: 'test:///default' });
  });
  after(() => rm(dir, { recursive: true, force: true }));

  describe('with everything in place', () => {
    let result: PreflightResult;
    before(async () => {
      result = await preflight({ hypervisor: testDriver, storageDir: join(dir, 'storage') });
    });

    it('reaches libvirt and reports its version', () => {
      assert.deepEqual(byType(result, 'LibvirtReachable'), {
        type: 'LibvirtReachable',
        status: 'True',
        reason: 'Connected',
        message: 'libvirt 9.0.0 at test:///default',
        required: true,
      });
      assert.equal(result.facts.libvirtVersion, 'libvirt 9.0.0');
    });

    it('finds qemu-img and an ISO tool', () => {
      assert.equal(byType(result, 'QemuImgAvailable').status, 'True');
      assert.equal(byType(result, 'IsoToolAvailable').status, 'True');
      assert.match(result.facts.isoTool ?? '', /\/(xorriso|genisoimage|cloud-localds)$/);
    });

    it('writes to the storage directory, creating it', () =>
      assert.equal(byType(result, 'StorageWritable').status, 'True'));

    it('runs a guest with TCG', () => assert.equal(byType(result, 'EmulatorWorks').reason, 'GuestRan'));

    // KVM here opens and starts guests but runs them hundreds of times slower than TCG
    // (DESIGN.md §8), which is what the probe exists to catch.
    it('finds KVM unusable and falls back to TCG', () => {
      const kvm = byType(result, 'KVMUsable');
      assert.equal(kvm.status, 'False');
      assert.match(kvm.reason, /^(KVMTooSlow|KVMUnavailable)$/);
      assert.match(kvm.message, /instances run with QEMU TCG/);
      assert.equal(result.domainType, 'qemu');
      assert.equal(result.facts.domainType, 'qemu');
    });

    it('is ready: KVM is not required', () => {
      assert.equal(byType(result, 'KVMUsable').required, false);
      assert.equal(result.ready, true);
    });

    it('checks libvirt, the tools and the storage again, keeping the probes', async () => {
      const down = new Virsh({ uri: 'qemu+unix:///system?socket=/nonexistent/libvirt-sock' });
      const again = await recheck(result, { hypervisor: down, storageDir: join(dir, 'storage') });
      assert.equal(byType(again, 'LibvirtReachable').reason, 'LibvirtUnreachable');
      assert.equal(again.ready, false);
      assert.deepEqual(
        again.conditions.filter(({ type }) => type === 'EmulatorWorks' || type === 'KVMUsable'),
        result.conditions.filter(({ type }) => type === 'EmulatorWorks' || type === 'KVMUsable'),
      );
      assert.equal(again.domainType, result.domainType);
      const back = await recheck(again, { hypervisor: testDriver, storageDir: join(dir, 'storage') });
      assert.deepEqual(back.conditions, result.conditions);
      assert.equal(back.ready, true);
    });
  });

  it('explains an unreachable libvirt', async () => {
    const result = await preflight({
      hypervisor: new Virsh({ uri: 'qemu+unix:///system?socket=/nonexistent/libvirt-sock' }),
      storageDir: dir,
      path: join(dir, 'empty-path'),
    });
    const libvirt = byType(result, 'LibvirtReachable');
    assert.equal(libvirt.status, 'False');
    assert.equal(libvirt.reason, 'LibvirtUnreachable');
    assert.match(
      libvirt.message,
      /Failed to connect socket to '\/nonexistent\/libvirt-sock'.*Start libvirtd/,
    );
    assert.equal(result.ready, false);
  });

  it('names each missing tool and what to install', async () => {
    const result = await preflight({
      hypervisor: testDriver,
      storageDir: dir,
      path: join(dir, 'empty-path'),
    });
    const expected: [string, string, RegExp][] = [
      ['QemuImgAvailable', 'QemuImgNotFound', /qemu-utils/],
      ['IsoToolAvailable', 'IsoToolNotFound', /xorriso/],
      ['EmulatorWorks', 'EmulatorNotFound', /qemu-system-x86/],
      ['KVMUsable', 'EmulatorNotFound', /qemu-system-x86/],
    ];
    for (const [type, reason, message] of expected) {
      const condition = byType(result, type);
      assert.equal(condition.status, 'False', type);
      assert.equal(condition.reason, reason);
      assert.match(condition.message, message);
    }
    assert.equal(result.ready, false);
    assert.equal(result.domainType, 'qemu');
  });

  it('explains a storage directory it cannot write', async () => {
    const file = join(dir, 'a-file');
    await writeFile(file, '');
    const result = await preflight({ hypervisor: testDriver, storageDir: join(file, 'storage'), path: '' });
    const storage = byType(result, 'StorageWritable');
    assert.equal(storage.reason, 'StorageNotWritable');
    assert.match(storage.message, /ENOTDIR.*make it writable/);
  });

  it('calls KVM too slow when the guest misses its budget', async () => {
    const result = await preflight({ hypervisor: testDriver, storageDir: dir, kvmBudgetMs: 1 });
    const kvm = byType(result, 'KVMUsable');
    assert.equal(kvm.reason, 'KVMTooSlow');
    assert.match(kvm.message, /did not finish within 1 ms/);
    assert.equal(result.domainType, 'qemu');
  });
});
