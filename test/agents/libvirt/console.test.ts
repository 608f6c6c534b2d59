/**
 * The libvirt agent's consoles: which pty it opens, for whom it refuses, one session per domain.
 * Against a hypervisor double that answers with real domain XML and a device double (the real
 * pty of a booted guest is test/e2e/boot.test.ts's), and the driver against libvirt's test driver.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { pino } from 'pino';
import { Consoles } from '../../../agents/libvirt/console.js';
import { buildDomain } from '../../../agents/libvirt/domain-xml.js';
import { LibvirtDriver } from '../../../agents/libvirt/driver.js';
import type { DomainStatus, Hypervisor } from '../../../agents/libvirt/hypervisor.js';
import type { ResourceRef } from '../../../agents/runtime/driver.js';
import { type ErrorCode, isLoamError, LoamError } from '../../../crds/errors.js';
import { pollUntil } from '../../harness/poll.js';
import { inputsFor, instance, testDriver, uidFor } from './fixtures.js';

const logger = pino({ level: 'silent' });
const wait = { timeoutMs: 5_000 };

/** A domain as the double serves it: its live XML and state. */
interface FakeDomain {
  xml: string;
  state: DomainStatus['state'];
}

/** The live XML of Instance team-a/`name`'s domain, its serial port on `pty` (none: not running). */
function liveXml(name: string, pty?: string): string {
  const inst = instance(name);
  const { xml } = buildDomain(inst, inputsFor(inst));
  return pty === undefined
    ? xml
    : xml.replace('<serial type="pty">', `<serial type="pty"><source path="${pty}"/>`);
}

function ref(name: string, overrides: Partial<ResourceRef> = {}): ResourceRef {
  return { kind: 'Instance', namespace: 'team-a', name, uid: uidFor(name), ...overrides };
}

/** A pty device double: what the console writes is kept, what the test pushes is read. */
class Device extends Duplex {
  written = '';

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    this.written += chunk;
    callback();
  }

  override _read(): void {}
}

/** What came out of a stream, and how it ended. */
function watch(stream: Duplex) {
  const seen = { text: '', ended: false, error: undefined as Error | undefined };
  stream.on('data', (chunk: Buffer) => {
    seen.text += chunk;
  });
  stream.on('end', () => {
    seen.ended = true;
  });
  stream.on('error', (err: Error) => {
    seen.error = err;
  });
  return seen;
}

describe('agents/libvirt/console', () => {
  /** Domains by name or UUID. */
  let domains: Map<string, FakeDomain>;
  /** The devices opened, by path, and the reads of the live XML so far. */
  let opened: { path: string; device: Device }[];
  let dumps: number;
  /** Runs after each live XML read: lets a test change the domain between the two reads. */
  let afterDump: () => void;
  let consoles: Consoles;

  const hypervisor = {
    uri: 'qemu:///system',
    async state(domain: string): Promise<DomainStatus> {
      const found = domains.get(domain);
      if (found === undefined) throw new LoamError('NotFound', `domain ${domain} not found`);
      return { name: domain, state: found.state, reason: 'unknown' };
    },
    async dumpxml(domain: string): Promise<string> {
      const found = domains.get(domain);
      if (found === undefined) throw new LoamError('NotFound', `domain ${domain} not found`);
      dumps++;
      const { xml } = found;
      afterDump();
      return xml;
    },
  } as unknown as Hypervisor;

  function serve(name: string, pty?: string, state: DomainStatus['state'] = 'running'): FakeDomain {
    const domain = { xml: liveXml(name, pty), state };
    domains.set(uidFor(name), domain);
    return domain;
  }

  async function refused(resource: ResourceRef | undefined, code: ErrorCode, message: RegExp): Promise<void> {
    const seen = watch(consoles.open(resource));
    await pollUntil(() => seen.error !== undefined, { ...wait, what: 'the console to be refused' });
    assert.ok(isLoamError(seen.error, code), `${code} expected: ${seen.error}`);
    assert.match(seen.error.message, message);
  }

  beforeEach(() => {
    domains = new Map();
    opened = [];
    dumps = 0;
    afterDump = () => {};
    consoles = new Consoles({
      hypervisor,
      logger,
      openDevice: async (path) => {
        const device = new Device();
        opened.push({ path, device });
        return device;
      },
    });
  });

  it("opens the pty the running domain's live XML names, and passes bytes both ways", async () => {
    serve('web', '/dev/pts/4');
    const stream = consoles.open(ref('web'));
    const seen = watch(stream);
    // Typed before the device is open: it waits, and arrives.
    stream.write('early ');
    await pollUntil(() => opened.length === 1, { ...wait, what: 'the device to open' });
    const { path, device } = opened[0] as { path: string; device: Device };
    assert.equal(path, '/dev/pts/4');
    assert.equal(dumps, 2, 'the XML is read again once the device is open');
    stream.write('late');
    await pollUntil(() => device.written === 'early late', { ...wait, what: 'the input' });
    device.push('login: ');
    await pollUntil(() => seen.text === 'login: ', { ...wait, what: 'the output' });
    // The domain stopped: the pty's reads end, and so does the console.
    device.push(null);
    await pollUntil(() => seen.ended, { ...wait, what: 'the console to end' });
    stream.destroy();
    assert.ok(device.destroyed, 'closing the console closes the device');
  });

  it('finds the domain by name when the request has no uid', async () => {
    const domain = serve('web', '/dev/pts/4');
    domains.set('loam.team-a.web', domain);
    consoles.open(ref('web', { uid: '' }));
    await pollUntil(() => opened.length === 1, { ...wait, what: 'the device to open' });
  });

  it("refuses what is not one of this agent's running Instances, opening nothing", async () => {
    await refused(ref('nope'), 'NotFound', /^Instance team-a\/nope does not run on this host$/);
    serve('web', '/dev/pts/4');
    // The domain under that UUID carries another Instance's identity.
    await refused(ref('web', { name: 'other' }), 'NotFound', /does not run on this host/);
    await refused(ref('web', { namespace: 'team-b' }), 'NotFound', /does not run on this host/);
    domains.set('loam.team-a.web', domains.get(uidFor('web')) as FakeDomain);
    await refused(ref('web', { uid: uidFor('else') }), 'NotFound', /does not run on this host/);
    await refused(ref('web', { kind: 'Network' }), 'BadRequest', /an Instance's, not a Network's/);
    await refused(undefined, 'BadRequest', /not a nothing's/);
    serve('off', undefined, 'shutoff');
    await refused(
      ref('off'),
      'Conflict',
      /^Instance team-a\/off is not running on this host \(its domain is shutoff\)$/,
    );
    serve('nopty');
    await refused(ref('nopty'), 'Internal', /has no serial console pty \(libvirt names none\)/);
    serve('odd', '/etc/shadow');
    await refused(ref('odd'), 'Internal', /libvirt names \/etc\/shadow/);
    assert.deepEqual(opened, []);
  });

  it('closes what it opened when the domain restarted meanwhile (a new pty)', async () => {
    const domain = serve('web', '/dev/pts/4');
    afterDump = () => {
      if (dumps === 1) domain.xml = liveXml('web', '/dev/pts/5');
    };
    await refused(ref('web'), 'Conflict', /restarted while its console opened/);
    assert.equal(opened.length, 1);
    assert.ok(opened[0]?.device.destroyed, 'the device of the old pty is closed');
  });

  it('keeps one session per domain: a new one closes the one before', async () => {
    serve('web', '/dev/pts/4');
    const first = consoles.open(ref('web'));
    await pollUntil(() => opened.length === 1, { ...wait, what: 'the first device' });
    const second = consoles.open(ref('web'));
    await pollUntil(() => first.destroyed, { ...wait, what: 'the first session to close' });
    assert.ok(opened[0]?.device.destroyed);
    assert.ok(!second.destroyed);
    // A refused request closes nothing.
    const refusedOne = watch(consoles.open(ref('web', { name: 'other' })));
    await pollUntil(() => refusedOne.error !== undefined, { ...wait, what: 'the refusal' });
    assert.ok(!second.destroyed);
  });

  describe('LibvirtDriver.openStream, on the test driver', () => {
    let storageDir: string;
    let virsh: ReturnType<typeof testDriver>;
    let driver: LibvirtDriver;

    beforeEach(async () => {
      storageDir = await mkdtemp(join(tmpdir(), 'loam-libvirt-console-'));
      virsh = testDriver();
      driver = new LibvirtDriver({
        hypervisor: virsh,
        storageDir,
        artifacts: { fetch: async () => join(storageDir, 'artifact') },
        domainType: 'qemu',
        logger,
      });
    });

    afterEach(async () => {
      await virsh.close();
      await rm(storageDir, { recursive: true, force: true });
    });

    it('serves consoles only', () => {
      assert.equal(driver.openStream({ sessionId: 's', kind: 'logs', resource: ref('web') }), undefined);
    });

    it("refuses an Instance it does not run, and a domain without a pty (the test driver's)", async () => {
      const streamOf = async (resource: ResourceRef) => {
        const seen = watch(driver.openStream({ sessionId: 's', kind: 'console', resource }) as Duplex);
        await pollUntil(() => seen.error !== undefined, { ...wait, what: 'the refusal' });
        return seen.error;
      };
      assert.ok(isLoamError(await streamOf(ref('web')), 'NotFound'));
      const inst = instance('web');
      await virsh.define(buildDomain(inst, inputsFor(inst)).xml);
      await virsh.start(uidFor('web'));
      const err = await streamOf(ref('web'));
      assert.ok(isLoamError(err, 'Internal'), String(err));
      assert.match(err.message, /has no serial console pty/);
    });
  });
});
