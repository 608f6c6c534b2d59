/**
 * Per-Instance metrics: the pure conversion from domstats, and the libvirt Driver's registry on
 * libvirt's test driver. The test driver has only the state group, so the counters come from a
 * fixture captured from QEMU.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { LibvirtDriver } from '../../../agents/libvirt/driver.js';
import type { StatsGroup } from '../../../agents/libvirt/hypervisor.js';
import {
  type InstanceLabels,
  type InstanceSamples,
  instanceMetrics,
  statsGroups,
} from '../../../agents/libvirt/stats.js';
import { parseDomstats, type Virsh } from '../../../agents/libvirt/virsh.js';
import type { AgentJob } from '../../../agents/runtime/driver.js';
import { LoamError } from '../../../crds/errors.js';
import { instance, testDriver } from './fixtures.js';

// `virsh -q -c qemu:///system domstats --raw --state --cpu-total --balloon --interface --block`,
// libvirt 9.0.0 and QEMU 7.2 (TCG): a running domain with two virtio disks and a tap NIC.
const running = `Domain: 'loamstats-capture'
  state.state=1
  state.reason=1
  cpu.time=1643694000
  cpu.user=1024797000
  cpu.system=618897000
  cpu.cache.monitor.count=0
  cpu.haltpoll.success.time=0
  cpu.haltpoll.fail.time=0
  balloon.current=131072
  balloon.maximum=131072
  balloon.last-update=0
  balloon.rss=43952
  net.count=1
  net.0.name=lsc0tap
  net.0.rx.bytes=90
  net.0.rx.pkts=1
  net.0.rx.errs=0
  net.0.rx.drop=0
  net.0.tx.bytes=0
  net.0.tx.pkts=0
  net.0.tx.errs=0
  net.0.tx.drop=0
  block.count=2
  block.0.name=vda
  block.0.path=/tmp/loamcap/disk.qcow2
  block.0.backingIndex=2
  block.0.rd.reqs=1
  block.0.rd.bytes=512
  block.0.rd.times=196263
  block.0.wr.reqs=0
  block.0.wr.bytes=0
  block.0.wr.times=0
  block.0.fl.reqs=0
  block.0.fl.times=0
  block.0.allocation=0
  block.0.capacity=67108864
  block.0.physical=204800
  block.1.name=vdb
  block.1.path=/tmp/loamcap/data.qcow2
  block.1.backingIndex=1
  block.1.rd.reqs=0
  block.1.rd.bytes=0
  block.1.rd.times=0
  block.1.wr.reqs=0
  block.1.wr.bytes=0
  block.1.wr.times=0
  block.1.fl.reqs=0
  block.1.fl.times=0
  block.1.allocation=0
  block.1.capacity=33554432
  block.1.physical=204800
`;

// The same domain shut off: cpu.time is then not the domain's (no QEMU process), and no balloon.rss.
const shutOff = `Domain: 'loamstats-capture'
  state.state=5
  state.reason=0
  cpu.time=2980000000
  cpu.user=1330000000
  cpu.system=1650000000
  balloon.current=131072
  balloon.maximum=131072
  block.count=2
  block.0.name=vda
  block.0.path=/tmp/loamcap/disk.qcow2
  block.0.allocation=200704
  block.0.capacity=67108864
  block.0.physical=196616
  block.1.name=vdb
  block.1.path=/tmp/loamcap/data.qcow2
  block.1.allocation=200704
  block.1.capacity=33554432
  block.1.physical=196616
`;

// A user-mode NIC (no host-side device, so no counters) and one disk, captured the same way.
const userNic = `Domain: 'loamstats-capture'
  state.state=1
  state.reason=1
  cpu.time=1308692000
  balloon.current=131072
  balloon.maximum=131072
  balloon.last-update=0
  balloon.rss=43036
  net.count=1
  block.count=1
  block.0.name=vda
  block.0.rd.bytes=512
  block.0.wr.bytes=0
`;

// `virsh -c test:///default domstats --raw --state --cpu-total --balloon --interface --block`:
// the test driver has the state group only.
const testDriverOutput = `Domain: 'test'
  state.state=1
  state.reason=0
`;

const web: InstanceLabels = { namespace: 'default', name: 'web' };
const identities = new Map([['loamstats-capture', web]]);

/** The samples of a single Instance, by metric; metrics without a sample left out. */
function values(samples: InstanceSamples): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [metric, rows] of Object.entries(samples)) {
    for (const { labels, value } of rows) {
      assert.deepEqual(labels, web);
      out[metric] = value;
    }
  }
  return out;
}

/** The test driver's domains and states, with the counters of the QEMU capture added to each. */
function withCounters(domstats: Virsh['domstats']): Virsh['domstats'] {
  const counters = parseDomstats(running).get('loamstats-capture') ?? {};
  return async (domains, groups) =>
    new Map(
      [...(await domstats(domains, groups))].map(([name, fields]) => [name, { ...counters, ...fields }]),
    );
}

describe('agents/libvirt/stats', () => {
  describe('instanceMetrics', () => {
    const cases: { name: string; output: string; ids?: Map<string, InstanceLabels>; want: object }[] = [
      {
        name: 'a running domain: cpu ns as seconds, rss KiB as bytes, device counters summed',
        output: running,
        want: {
          loam_instance_cpu_seconds_total: 1.643694,
          loam_instance_memory_resident_bytes: 43952 * 1024,
          loam_instance_network_receive_bytes_total: 90,
          loam_instance_network_transmit_bytes_total: 0,
          loam_instance_storage_read_bytes_total: 512,
          loam_instance_storage_write_bytes_total: 0,
        },
      },
      {
        name: 'counters of several disks add up',
        output: running
          .replace('block.1.rd.bytes=0', 'block.1.rd.bytes=4096')
          .replace('block.1.wr.bytes=0', 'block.1.wr.bytes=8192'),
        want: {
          loam_instance_cpu_seconds_total: 1.643694,
          loam_instance_memory_resident_bytes: 43952 * 1024,
          loam_instance_network_receive_bytes_total: 90,
          loam_instance_network_transmit_bytes_total: 0,
          loam_instance_storage_read_bytes_total: 4608,
          loam_instance_storage_write_bytes_total: 8192,
        },
      },
      {
        name: 'a NIC without counters: no network samples',
        output: userNic,
        want: {
          loam_instance_cpu_seconds_total: 1.308692,
          loam_instance_memory_resident_bytes: 43036 * 1024,
          loam_instance_storage_read_bytes_total: 512,
          loam_instance_storage_write_bytes_total: 0,
        },
      },
      {
        name: 'no balloon.rss: no memory sample (balloon.current is not resident memory)',
        output: userNic.replace('  balloon.rss=43036\n', ''),
        want: {
          loam_instance_cpu_seconds_total: 1.308692,
          loam_instance_storage_read_bytes_total: 512,
          loam_instance_storage_write_bytes_total: 0,
        },
      },
      { name: 'a shut-off domain: nothing', output: shutOff, want: {} },
      { name: 'not a Loam domain: nothing', output: running, ids: new Map(), want: {} },
      {
        name: "the test driver's state-only stats: nothing",
        output: testDriverOutput,
        ids: new Map([['test', web]]),
        want: {},
      },
    ];
    for (const { name, output, ids = identities, want } of cases) {
      it(name, () => {
        assert.deepEqual(values(instanceMetrics(parseDomstats(output), ids)), want);
      });
    }

    it('labels each domain with its Instance', () => {
      const two = `${running}${running.replace("'loamstats-capture'", "'loam.team-a.db'")}`;
      const ids = new Map([
        ['loamstats-capture', web],
        ['loam.team-a.db', { namespace: 'team-a', name: 'db' }],
      ]);
      assert.deepEqual(instanceMetrics(parseDomstats(two), ids).loam_instance_cpu_seconds_total, [
        { labels: web, value: 1.643694 },
        { labels: { namespace: 'team-a', name: 'db' }, value: 1.643694 },
      ]);
    });
  });

  describe('LibvirtDriver.registerMetrics on test:///default', () => {
    let storageDir: string;
    let virsh: Virsh;
    let driver: LibvirtDriver;
    let registry: Registry;
    let calls: (readonly StatsGroup[] | undefined)[];

    beforeEach(async () => {
      storageDir = await mkdtemp(join(tmpdir(), 'loam-libvirt-stats-'));
      const file = join(storageDir, 'kernel');
      await writeFile(file, 'not really a kernel');
      virsh = testDriver();
      const domstats = virsh.domstats.bind(virsh);
      calls = [];
      virsh.domstats = (domains, groups) => {
        calls.push(groups);
        return domstats(domains, groups);
      };
      driver = new LibvirtDriver({
        hypervisor: virsh,
        storageDir,
        artifacts: { fetch: async () => file },
        domainType: 'qemu',
        logger: pino({ level: 'silent' }),
      });
      const inst = instance('web', {}, { namespace: 'default' });
      const { name, namespace, uid, generation } = inst.metadata;
      const job: AgentJob = {
        id: 'apply-web',
        type: 'instance.apply',
        key: 'Instance/default/web',
        object: { ...inst, metadata: { name, namespace, uid, generation }, status: { host: 'hv1' } } as never,
      };
      assert.equal((await driver.handle(job, new AbortController().signal)).code, status.OK);
      await driver.inventory(); // as on every connect: the driver learns its domains
      registry = new Registry();
      driver.registerMetrics(registry);
    });

    afterEach(async () => {
      await virsh.close();
      await rm(storageDir, { recursive: true, force: true });
    });

    it('exposes counters and a gauge, empty for the test driver (no cpu, balloon, interface or block stats)', async () => {
      const text = await registry.metrics();
      for (const metric of [
        'cpu_seconds',
        'network_receive_bytes',
        'network_transmit_bytes',
        'storage_read_bytes',
        'storage_write_bytes',
      ]) {
        assert.match(text, new RegExp(`^# TYPE loam_instance_${metric}_total counter$`, 'm'));
      }
      assert.match(text, /^# TYPE loam_instance_memory_resident_bytes gauge$/m);
      assert.doesNotMatch(text, /^loam_instance_/m);
      assert.deepEqual(calls, [statsGroups], 'one domstats call per scrape, for the groups it reads');
    });

    it("exports the Loam domain's stats, labelled with its Instance, and nothing of the test driver's own domain", async () => {
      virsh.domstats = withCounters(virsh.domstats);
      assert.equal((await virsh.domstats()).get('test')?.['state.state'], '1', 'test is running');

      const text = await registry.metrics();
      const labels = '{namespace="default",name="web"}';
      for (const line of [
        `loam_instance_cpu_seconds_total${labels} 1.643694`,
        `loam_instance_memory_resident_bytes${labels} ${43952 * 1024}`,
        `loam_instance_network_receive_bytes_total${labels} 90`,
        `loam_instance_network_transmit_bytes_total${labels} 0`,
        `loam_instance_storage_read_bytes_total${labels} 512`,
        `loam_instance_storage_write_bytes_total${labels} 0`,
      ]) {
        assert.ok(text.split('\n').includes(line), `${line} in:\n${text}`);
      }
      assert.equal(text.match(/^loam_instance_/gm)?.length, 6, 'one sample per metric: web only');
    });

    it('leaves the metrics empty when libvirt fails, and fills them again when it answers', async () => {
      const domstats = virsh.domstats;
      virsh.domstats = async () => {
        throw new LoamError('Unavailable', 'libvirt is gone');
      };
      assert.doesNotMatch(await registry.metrics(), /^loam_instance_/m);
      virsh.domstats = withCounters(domstats);
      assert.match(await registry.metrics(), /^loam_instance_cpu_seconds_total\{[^}]*name="web"\} /m);
    });
  });
});
