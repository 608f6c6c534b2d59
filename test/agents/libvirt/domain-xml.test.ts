import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, chown, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  buildDomain,
  type DomainFacts,
  type DomainInputs,
  domainName,
  loamNamespaceUri,
  parseDomainXml,
} from '../../../agents/libvirt/domain-xml.js';
import type { Virsh } from '../../../agents/libvirt/virsh.js';
import { isLoamError } from '../../../crds/errors.js';
import type { Instance } from '../../../crds/v1alpha1/instance.js';
import { imageSpec, inputsFor, instance, testDriver, uidFor } from './fixtures.js';

const run = promisify(execFile);
const hostile = `<&'"]]>`;

interface Case {
  title: string;
  instance: Instance;
  inputs?: Partial<DomainInputs>;
  /** The parsed-back facts must contain these. */
  expect: Partial<DomainFacts>;
  /** Also checked in the XML text. */
  xmlIncludes?: string[];
}

const dir = (name: string) => `/var/lib/loam/instances/${uidFor(name)}`;

const cases: Case[] = [
  {
    title: 'unikernel: direct kernel boot with initrd, command line and one NIC',
    instance: instance('nginx-uk', {
      runStrategy: 'RerunOnFailure',
      memory: '64Mi',
      kernel: {
        url: 'https://example.org/nginx_qemu-x86_64',
        sha256: 'c'.repeat(64),
        initrd: { url: 'https://example.org/rootfs.cpio', sha256: 'd'.repeat(64) },
        cmdline: 'netdev.ip=10.20.0.11/24:10.20.0.1 -- -c /nginx/conf/nginx.conf',
      },
      networks: [{ name: 'lab', address: '10.20.0.11' }],
    }),
    expect: {
      name: 'loam.team-a.nginx-uk',
      uuid: uidFor('nginx-uk'),
      type: 'qemu',
      vcpus: 1,
      memoryBytes: 64 * 1024 * 1024,
      kernel: `${dir('nginx-uk')}/vmlinuz`,
      initrd: `${dir('nginx-uk')}/initrd`,
      cmdline: 'netdev.ip=10.20.0.11/24:10.20.0.1 -- -c /nginx/conf/nginx.conf',
      disks: [],
      interfaces: [{ mac: '52:54:00:00:00:00', bridge: 'loam-br0' }],
      consoleLog: `${dir('nginx-uk')}/console.log`,
    },
    xmlIncludes: [
      '<acpi/>',
      '<serial type="pty">',
      '<target type="serial" port="0"/>',
      '<model type="virtio"/>',
    ],
  },
  {
    title: 'VM: qcow2 root disk, two data disks, cloud-init seed, two NICs, q35',
    instance: instance('web-1', {
      ...imageSpec,
      cpus: 2,
      memory: '2Gi',
      machineType: 'q35',
      rootDisk: { size: '20Gi' },
      disks: [
        { name: 'data', size: '50Gi' },
        { name: 'logs', size: '5Gi' },
      ],
      cloudInit: { userData: '#cloud-config\n' },
      networks: [{ name: 'lab' }, { name: 'storage' }],
    }),
    expect: {
      vcpus: 2,
      memoryBytes: 2 * 1024 ** 3,
      machine: 'q35',
      disks: [
        { target: 'vda', device: 'disk', source: `${dir('web-1')}/root.qcow2` },
        { target: 'vdb', device: 'disk', source: `${dir('web-1')}/data.qcow2` },
        { target: 'vdc', device: 'disk', source: `${dir('web-1')}/logs.qcow2` },
        { target: 'vdd', device: 'disk', source: `${dir('web-1')}/seed.iso` },
      ],
      interfaces: [
        { mac: '52:54:00:00:00:00', bridge: 'loam-br0' },
        { mac: '52:54:00:00:00:01', bridge: 'loam-br1' },
      ],
      kernel: undefined,
    },
    xmlIncludes: [
      '<boot dev="hd"/>',
      '<driver name="qemu" type="qcow2"/>',
      '<target dev="vdd" bus="virtio"/>',
      '<readonly/>',
    ],
  },
  {
    title: 'KVM host: domain type kvm',
    instance: instance('fast', { memory: '1Gi' }),
    inputs: { domainType: 'kvm' },
    expect: { type: 'kvm', memoryBytes: 1024 ** 3 },
  },
  {
    title: 'memory in bytes rounds up to whole KiB',
    instance: instance('odd-memory', { memory: 16 * 1024 * 1024 + 1 }),
    expect: { memoryBytes: 16 * 1024 * 1024 + 1024 },
  },
  {
    title: 'thirty data disks are named as libvirt does past vdz',
    instance: instance('many-disks', {
      ...imageSpec,
      disks: Array.from({ length: 30 }, (_, i) => ({ name: `d${i}`, size: '1Gi' })),
    }),
    expect: {},
    xmlIncludes: [
      '<target dev="vdz" bus="virtio"/>',
      '<target dev="vdaa" bus="virtio"/>',
      '<target dev="vdae" bus="virtio"/>',
    ],
  },
  {
    title: 'hostile strings in the command line and file paths are escaped',
    instance: instance('hostile', {
      kernel: {
        url: 'https://example.org/k',
        sha256: 'e'.repeat(64),
        cmdline: `console=ttyS0 x="${hostile}" y='&amp;'`,
      },
    }),
    inputs: {
      kernel: { path: `/srv/${hostile}/vmlinuz` },
      consoleLog: `/srv/${hostile}/console.log`,
    },
    expect: {
      cmdline: `console=ttyS0 x="${hostile}" y='&amp;'`,
      kernel: `/srv/${hostile}/vmlinuz`,
      consoleLog: `/srv/${hostile}/console.log`,
    },
    xmlIncludes: ['&lt;&amp;&apos;&quot;]]&gt;', '&amp;amp;'],
  },
];

describe('agents/libvirt/domain-xml', () => {
  let virsh: Virsh;
  before(() => {
    virsh = testDriver();
  });
  after(() => virsh.close());

  describe('buildDomain + parseDomainXml', () => {
    for (const c of cases) {
      it(c.title, () => {
        const desired = buildDomain(c.instance, inputsFor(c.instance, c.inputs));
        for (const text of c.xmlIncludes ?? []) assert.ok(desired.xml.includes(text), `XML lacks ${text}`);
        const facts = parseDomainXml(desired.xml);
        const expected = {
          identity: {
            namespace: 'team-a',
            name: c.instance.metadata.name,
            uid: c.instance.metadata.uid,
            generation: 1,
            specHash: desired.identity.specHash,
          },
          ...c.expect,
        };
        for (const [key, value] of Object.entries(expected)) {
          assert.deepEqual(facts[key as keyof DomainFacts], value, key);
        }
        assert.equal(desired.name, facts.name);
        assert.equal(desired.uuid, facts.uuid);
      });
    }
  });

  it('orders disks and NICs as the spec does, whatever order the inputs came in', () => {
    const vm = cases[1]?.instance ?? instance('x');
    const inputs = inputsFor(vm);
    const shuffled = {
      ...inputs,
      interfaces: [...inputs.interfaces].reverse(),
      dataDisks: [...inputs.dataDisks].reverse(),
    };
    assert.equal(buildDomain(vm, shuffled).xml, buildDomain(vm, inputs).xml);
  });

  describe('is accepted by libvirt', () => {
    for (const c of cases) {
      it(`test driver (define --validate): ${c.title}`, async () => {
        const desired = buildDomain(c.instance, inputsFor(c.instance, c.inputs));
        await virsh.define(desired.xml);
        // What libvirt stored still says whose it is, and the escaped strings came back intact.
        const stored = parseDomainXml(await virsh.dumpxml(desired.uuid));
        assert.deepEqual(stored.identity, desired.identity);
        assert.equal(stored.cmdline, c.instance.spec.kernel?.cmdline);
        await virsh.undefine(desired.uuid);
      });
    }

    // The test driver checks the schema, not what QEMU can do. libvirt's QEMU driver can run
    // embedded in virsh (qemu:///embed) without libvirtd; unprivileged, it needs no system user,
    // and a define there is checked against the real QEMU's capabilities (machine types, buses).
    describe('QEMU driver, embedded and unprivileged', () => {
      let root: string;
      before(async () => {
        // Short: the driver's monitor sockets live under it, and socket paths max out at 108 bytes.
        root = await mkdtemp('/tmp/lq-');
        await chown(root, 65534, 65534);
      });
      after(() => rm(root, { recursive: true, force: true }));

      for (const c of cases.filter((c) => (c.inputs?.domainType ?? 'qemu') === 'qemu')) {
        it(c.title, async () => {
          const desired = buildDomain(c.instance, inputsFor(c.instance, c.inputs));
          const file = join(root, `${desired.uuid}.xml`);
          await writeFile(file, desired.xml);
          await chmod(file, 0o644);
          const { stdout } = await run(
            'setpriv',
            [
              '--reuid=65534',
              '--regid=65534',
              '--clear-groups',
              'virsh',
              '-q',
              '-c',
              `qemu:///embed?root=${root}`,
            ]
              // One argument, two commands: virsh runs them in one connection.
              .concat(`define --validate ${file}; dumpxml ${desired.uuid}`),
            { env: { PATH: process.env.PATH, HOME: root, LC_ALL: 'C' }, timeout: 60_000 },
          );
          const stored = parseDomainXml(stdout);
          assert.deepEqual(stored.identity, desired.identity);
          // QEMU's driver names the machine type it picked, e.g. pc-q35-7.2 for q35.
          assert.match(stored.machine ?? '', new RegExp(c.instance.spec.machineType ?? 'pc'));
        });
      }
    });
  });

  describe('specHash', () => {
    const hash = (inst: Instance) => buildDomain(inst, inputsFor(inst)).identity.specHash;

    it('is the same for the same Instance and inputs', () =>
      assert.equal(hash(instance('a')), hash(instance('a'))));

    it('ignores the generation, which is recorded beside it', () => {
      const later = instance('a', {}, { generation: 7 });
      assert.equal(hash(later), hash(instance('a')));
      assert.equal(buildDomain(later, inputsFor(later)).identity.generation, 7);
    });

    it('changes with the definition', () =>
      assert.notEqual(hash(instance('a', { cpus: 2 })), hash(instance('a'))));
  });

  describe('domainName', () => {
    it('is loam.<namespace>.<name>', () => assert.equal(domainName('team-a', 'web-1'), 'loam.team-a.web-1'));

    it('keeps namespace and name apart where dashes alone would not', () =>
      assert.notEqual(domainName('a-b', 'c'), domainName('a', 'b-c')));

    it('cuts long names to 200 characters and keeps them distinct', () => {
      const long = 'x'.repeat(250);
      const [one, two] = [domainName('team-a', `${long}1`), domainName('team-a', `${long}2`)];
      assert.equal(one.length, 200);
      assert.notEqual(one, two);
      assert.ok(one.startsWith('loam.team-a.xxx'));
    });
  });

  describe('rejects inputs that do not fit the Instance', () => {
    const web = instance('web-2', {
      ...imageSpec,
      cloudInit: { userData: '#cloud-config\n' },
      disks: [{ name: 'data', size: '1Gi' }],
      networks: [{ name: 'lab' }],
    });
    const table: [string, Instance, Partial<DomainInputs>, RegExp][] = [
      ['no root disk', web, { rootDisk: undefined }, /no root disk for the image/],
      ['no seed ISO', web, { seedIso: undefined }, /no cloud-init seed ISO/],
      ['a missing data disk', web, { dataDisks: [] }, /no file for disk data/],
      ['a missing bridge', web, { interfaces: [] }, /no bridge for network lab/],
      ['no kernel', instance('uk'), { kernel: undefined }, /no kernel file/],
      ['a uid that is not a UUID', instance('bad-uid', {}, { uid: 'not-a-uuid' }), {}, /is not a UUID/],
    ];
    for (const [title, inst, inputs, message] of table) {
      it(title, () =>
        assert.throws(
          () => buildDomain(inst, inputsFor(inst, inputs)),
          (err) => isLoamError(err, 'Invalid') && message.test(err.message),
        ),
      );
    }
  });

  describe('parseDomainXml', () => {
    it('escapes hostile identity strings and reads them back', () => {
      // Not reachable through validation (names are DNS labels), but escaping must not depend on it.
      const inst = instance('x');
      const bad = { ...inst, metadata: { ...inst.metadata, namespace: hostile, name: hostile } } as Instance;
      const desired = buildDomain(bad, inputsFor(inst));
      const facts = parseDomainXml(desired.xml);
      assert.equal(facts.identity?.namespace, hostile);
      assert.equal(facts.name, `loam.${hostile}.${hostile}`);
    });

    it('finds Loam metadata by namespace URI, whatever the prefix', () => {
      const facts = parseDomainXml(
        `<domain type='kvm'><name>n</name><uuid>${uidFor('n')}</uuid><metadata>` +
          `<other:thing xmlns:other="https://example.org/other"><other:uid>no</other:uid></other:thing>` +
          `<x:instance xmlns:x="${loamNamespaceUri}"><x:namespace>ns</x:namespace><x:name>n</x:name>` +
          `<x:uid>${uidFor('n')}</x:uid><x:generation>4</x:generation><x:specHash>h</x:specHash></x:instance>` +
          `</metadata><memory unit='KiB'>1024</memory><vcpu placement='static'>3</vcpu></domain>`,
      );
      assert.deepEqual(facts.identity, {
        namespace: 'ns',
        name: 'n',
        uid: uidFor('n'),
        generation: 4,
        specHash: 'h',
      });
      assert.equal(facts.vcpus, 3);
      assert.equal(facts.memoryBytes, 1024 * 1024);
    });

    it("reads the console's pty from a running domain's XML, as libvirt 9 prints it", () => {
      const serial = (type: string, source: string) =>
        `<domain type='qemu'><name>n</name><uuid>${uidFor('n')}</uuid><devices>` +
        `<serial type='${type}'>${source}<log file='/srv/n/console.log' append='on'/>` +
        `<target type='isa-serial' port='0'><model name='isa-serial'/></target><alias name='serial0'/></serial>` +
        `<console type='${type}' tty='/dev/pts/7'>${source}<target type='serial' port='0'/></console>` +
        '</devices></domain>';
      const live = parseDomainXml(serial('pty', "<source path='/dev/pts/7'/>"));
      assert.equal(live.consolePty, '/dev/pts/7');
      assert.equal(live.consoleLog, '/srv/n/console.log');
      assert.equal(parseDomainXml(serial('pty', '')).consolePty, undefined, 'defined, not running');
      assert.equal(
        parseDomainXml(serial('file', "<source path='/tmp/x'/>")).consolePty,
        undefined,
        'not a pty',
      );
    });

    it('reads a domain without Loam metadata as not Loam', async () => {
      const facts = parseDomainXml(await virsh.dumpxml('test'));
      assert.equal(facts.name, 'test');
      assert.equal(facts.identity, undefined);
      assert.deepEqual(facts.interfaces, [{ mac: 'aa:bb:cc:dd:ee:ff', bridge: undefined }]);
    });

    for (const [title, xml] of [
      ['not XML', 'this is not XML <'],
      ['another document', '<network><name>default</name></network>'],
    ]) {
      it(`rejects ${title}`, () =>
        assert.throws(
          () => parseDomainXml(xml ?? ''),
          (err) => isLoamError(err, 'Invalid'),
        ));
    }
  });
});
