/** What a hypervisor keeps for itself: its allocatable facts (a table), and the driver reporting them. */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { openLibvirtDriver } from '../../../agents/libvirt/driver.js';
import { allocatableFacts, type Reserved } from '../../../agents/libvirt/reserved.js';
import { hostCapacity } from '../../../agents/runtime/driver.js';
import { parseQuantity } from '../../../crds/quantity.js';

describe('reserved resources', () => {
  const capacity = { cpus: '8', memory: '16Gi' };
  const rows: { name: string; reserved: Reserved; facts?: Record<string, string>; error?: RegExp }[] = [
    {
      name: 'nothing reserved',
      reserved: { cpus: 0, memory: '0' },
      facts: { allocatableCpus: '8', allocatableMemory: '16777216Ki' },
    },
    {
      name: 'the defaults',
      reserved: { cpus: 0, memory: '512Mi' },
      facts: { allocatableCpus: '8', allocatableMemory: '16252928Ki' },
    },
    {
      name: 'decimal quantities, rounded down to whole Ki',
      reserved: { cpus: 2, memory: '1G' },
      facts: { allocatableCpus: '6', allocatableMemory: '15800653Ki' },
    },
    {
      name: 'all but one cpu and one Ki',
      reserved: { cpus: 7, memory: '16777215Ki' },
      facts: { allocatableCpus: '1', allocatableMemory: '1Ki' },
    },
    {
      name: 'every cpu',
      reserved: { cpus: 8, memory: '512Mi' },
      error: /invalid agent configuration: --reserved-cpus 8 leaves none of this host's 8 cpus to Instances/,
    },
    {
      name: 'more memory than there is, and more cpus',
      reserved: { cpus: 9, memory: '32Gi' },
      error:
        /--reserved-cpus 9 leaves none of this host's 8 cpus; --reserved-memory 32Gi leaves none of this host's 16Gi of memory to Instances/,
    },
  ];
  for (const row of rows) {
    it(`${row.error ? 'refuses' : 'reports allocatable for'} ${row.name}`, () => {
      if (row.error) assert.throws(() => allocatableFacts(capacity, row.reserved), row.error);
      else assert.deepEqual(allocatableFacts(capacity, row.reserved), row.facts);
    });
  }

  it('is what the libvirt driver reports, with the settings defaults unless told', async () => {
    const storageDir = await mkdtemp(join(tmpdir(), 'loam-reserved-'));
    const logger = pino({ level: 'silent' });
    try {
      const { driver, close } = await openLibvirtDriver({ uri: 'test:///default', storageDir, logger });
      try {
        const facts = await driver.facts();
        const host = hostCapacity();
        assert.equal(facts.allocatableCpus, host.cpus);
        assert.equal(
          parseQuantity(facts.allocatableMemory ?? '') + 512n * 1024n * 1024n,
          parseQuantity(host.memory),
        );
      } finally {
        await close();
      }
      await assert.rejects(
        openLibvirtDriver({
          uri: 'test:///default',
          storageDir,
          logger,
          reserved: { cpus: Number(hostCapacity().cpus), memory: '0' },
        }),
        /--reserved-cpus/,
      );
    } finally {
      await rm(storageDir, { recursive: true, force: true });
    }
  });
});
