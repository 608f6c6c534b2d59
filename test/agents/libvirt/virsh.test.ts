import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildDomain } from '../../../agents/libvirt/domain-xml.js';
import {
  type DomainEvent,
  type DomainStatus,
  decodeState,
  diffStatuses,
  type PollBaseline,
  pollEvents,
  waitForShutoff,
} from '../../../agents/libvirt/hypervisor.js';
import {
  parseDomstats,
  parseVersion,
  quoteVirshArg,
  Virsh,
  virshError,
} from '../../../agents/libvirt/virsh.js';
import { type ErrorCode, isLoamError, LoamError } from '../../../crds/errors.js';
import { pollUntil } from '../../harness/poll.js';
import { inputsFor, instance, testDriver } from './fixtures.js';

const unreachable = 'qemu+unix:///system?socket=/nonexistent/libvirt-sock';

function domainXml(name: string): { xml: string; uuid: string } {
  const inst = instance(name);
  const desired = buildDomain(inst, inputsFor(inst));
  return { xml: desired.xml, uuid: desired.uuid };
}

const rejectsWith = (promise: Promise<unknown>, code: ErrorCode, message?: RegExp) =>
  assert.rejects(promise, (err) => {
    assert.ok(isLoamError(err), `not a LoamError: ${err}`);
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });

describe('agents/libvirt/virsh', () => {
  describe('parseDomstats', () => {
    it('reads every domain of the test driver', () =>
      assert.deepEqual(
        parseDomstats(
          "Domain: 'loam-x'\n  state.state=5\n  state.reason=0\n\nDomain: 'test'\n  state.state=1\n  state.reason=0\n",
        ),
        new Map([
          ['loam-x', { 'state.state': '5', 'state.reason': '0' }],
          ['test', { 'state.state': '1', 'state.reason': '0' }],
        ]),
      ));

    it('keeps counters, names with quotes and values with "="', () =>
      assert.deepEqual(
        parseDomstats(
          "Domain: 'it's'\n  cpu.time=1234567890\n  balloon.rss=65536\n  net.0.name=vnet0\n" +
            '  net.0.rx.bytes=42\n  block.0.path=/srv/a=b.qcow2\n',
        ),
        new Map([
          [
            "it's",
            {
              'cpu.time': '1234567890',
              'balloon.rss': '65536',
              'net.0.name': 'vnet0',
              'net.0.rx.bytes': '42',
              'block.0.path': '/srv/a=b.qcow2',
            },
          ],
        ]),
      ));

    it('reads nothing from nothing', () => assert.equal(parseDomstats('').size, 0));
  });

  describe('parseVersion', () => {
    it('reads the library and hypervisor', () =>
      assert.deepEqual(
        parseVersion(
          'Compiled against library: libvirt 9.0.0\nUsing library: libvirt 9.0.0\n' +
            'Using API: QEMU 9.0.0\nRunning hypervisor: QEMU 7.2.0\n',
        ),
        { library: 'libvirt 9.0.0', hypervisor: 'QEMU 7.2.0' },
      ));

    it('fails on anything else', () =>
      assert.throws(
        () => parseVersion('hello'),
        (err) => isLoamError(err, 'Internal'),
      ));
  });

  describe('virshError', () => {
    // What virsh 9.0 prints, captured from the test driver, libvirtd being down and QEMU's driver.
    const table: [string, string, ErrorCode][] = [
      ['dumpxml', "error: failed to get domain 'nope'\n", 'NotFound'],
      ['domstats', 'error: Domain not found: no domain with matching uuid', 'NotFound'],
      [
        'list',
        "error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory\n",
        'Unavailable',
      ],
      [
        'destroy',
        "error: Failed to destroy domain 'x'\nerror: Requested operation is not valid: domain is not running\n",
        'Conflict',
      ],
      ['start', 'error: Domain is already active\n', 'Conflict'],
      [
        'define',
        "error: Failed to define domain from /tmp/d.xml\nerror: operation failed: domain 'x' already exists with uuid 6695eb01-f6a4-8304-79aa-97f2502e1930\n",
        'AlreadyExists',
      ],
      [
        'define',
        'error: Failed to define domain from /tmp/d.xml\nerror: XML document failed to validate against schema: Unable to validate doc\n',
        'Invalid',
      ],
      [
        'define',
        "error: Failed to define domain from /tmp/d.xml\nerror: (domain_definition):1: Couldn't find end of Start Tag domain line 1\n",
        'Invalid',
      ],
      ['define', "error: unsupported configuration: unexpected feature 'bogus'\n", 'Invalid'],
      ['undefine', 'error: unsupported flags (0x4) in function testDomainUndefineFlags\n', 'Internal'],
      ['start', '', 'Internal'],
    ];
    for (const [command, output, code] of table) {
      it(`${command}: ${output.split('\n').at(-2) ?? '(nothing)'} -> ${code}`, () => {
        const err = virshError([command], output);
        assert.equal(err.code, code);
        assert.ok(err.message.startsWith(`virsh ${command}: `));
      });
    }
  });

  describe('quoteVirshArg', () => {
    const table: [string, string][] = [
      ['6c0a0000-0000-4000-8000-000000000001', '6c0a0000-0000-4000-8000-000000000001'],
      ['--inactive', '--inactive'],
      ['/tmp/loam-define-x/domain.xml', '/tmp/loam-define-x/domain.xml'],
      ['it\'s a "name"', 'it\\\'s\\ a\\ \\"name\\"'],
      ['a;b\\c', 'a\\;b\\\\c'],
      ['', "''"],
    ];
    for (const [arg, quoted] of table)
      it(JSON.stringify(arg), () => assert.equal(quoteVirshArg(arg), quoted));

    it('rejects control characters, which readline would act on', () =>
      assert.throws(
        () => quoteVirshArg('a\tb'),
        (err) => isLoamError(err, 'Invalid'),
      ));
  });

  describe('decodeState', () => {
    const table: [number, number, string, string][] = [
      [1, 1, 'running', 'booted'],
      [3, 1, 'paused', 'user'],
      [5, 1, 'shutoff', 'shutdown'],
      [5, 2, 'shutoff', 'destroyed'],
      [5, 3, 'shutoff', 'crashed'],
      [6, 1, 'crashed', 'panicked'],
      [5, 99, 'shutoff', 'unknown'],
      [42, 0, 'nostate', 'unknown'],
    ];
    for (const [state, reason, name, why] of table) {
      it(`${state}/${reason} is ${name} (${why})`, () =>
        assert.deepEqual(decodeState(state, reason), { state: name, reason: why }));
    }
  });

  describe('diffStatuses', () => {
    const s = (name: string, state: DomainStatus['state'], reason = 'unknown'): DomainStatus => ({
      name,
      state,
      reason,
    });
    const map = (...statuses: DomainStatus[]) => new Map(statuses.map((status) => [status.name, status]));
    const table: [string, Map<string, DomainStatus>, Map<string, DomainStatus>, DomainEvent[]][] = [
      ['nothing changed', map(s('a', 'running')), map(s('a', 'running')), []],
      ['appeared', map(), map(s('a', 'shutoff')), [{ name: 'a', status: s('a', 'shutoff') }]],
      [
        'started',
        map(s('a', 'shutoff')),
        map(s('a', 'running', 'booted')),
        [{ name: 'a', status: s('a', 'running', 'booted'), previous: s('a', 'shutoff') }],
      ],
      [
        'same state, new reason (crashed after a restart)',
        map(s('a', 'shutoff', 'shutdown')),
        map(s('a', 'shutoff', 'crashed')),
        [{ name: 'a', status: s('a', 'shutoff', 'crashed'), previous: s('a', 'shutoff', 'shutdown') }],
      ],
      ['went away', map(s('a', 'shutoff')), map(), [{ name: 'a', previous: s('a', 'shutoff') }]],
    ];
    for (const [title, before, after, events] of table) {
      it(title, () => assert.deepEqual(diffStatuses(before, after), events));
    }

    it('polls again from the last event taken: one its consumer failed on comes again', async () => {
      // What the host lists, poll after poll: the baseline, then a stop, then no more changes.
      const lists = [[s('a', 'running')], [s('a', 'shutoff')]];
      let polls = 0;
      const abort = new AbortController();
      const list = async () => {
        if (polls > 10) abort.abort(); // bounded, whatever happens
        return lists[Math.min(polls++, lists.length - 1)] ?? [];
      };
      const baseline: PollBaseline = {};
      const stop = { name: 'a', status: s('a', 'shutoff'), previous: s('a', 'running') };
      await assert.rejects(async () => {
        for await (const event of pollEvents(list, 1, abort.signal, baseline)) {
          assert.deepEqual(event, stop);
          throw new Error('reporting it failed');
        }
      }, /reporting it failed/);
      const again: DomainEvent[] = [];
      for await (const event of pollEvents(list, 1, abort.signal, baseline)) {
        again.push(event);
        abort.abort();
      }
      assert.deepEqual(again, [stop]);
      assert.deepEqual(baseline.statuses, map(s('a', 'shutoff')));
    });
  });

  describe('waitForShutoff', () => {
    const status = (state: DomainStatus['state']): DomainStatus => ({ name: 'a', state, reason: 'unknown' });

    it('is true once the domain is off', async () => {
      const states = ['running', 'shutdown', 'shutoff'] as const;
      let polls = 0;
      assert.equal(await waitForShutoff(async () => status(states[polls++] ?? 'shutoff'), 5_000, 1), true);
      assert.equal(polls, 3);
    });

    it('is false when the guest ignores the request until the timeout', async () =>
      assert.equal(await waitForShutoff(async () => status('running'), 30, 5), false));

    it('counts a vanished domain as off', async () =>
      assert.equal(
        await waitForShutoff(
          async () => {
            throw new LoamError('NotFound', 'gone');
          },
          1_000,
          1,
        ),
        true,
      ));
  });

  describe('session against the test driver', () => {
    let virsh: Virsh;
    const web = domainXml('web');
    beforeEach(() => {
      virsh = testDriver({ pollIntervalMs: 20 });
    });
    afterEach(() => virsh.close());

    it('reports the versions', async () =>
      assert.deepEqual(await virsh.version(), { library: 'libvirt 9.0.0', hypervisor: 'TEST 0.0.2' }));

    it('keeps state between calls: define, start, reboot, reset, shutdown, undefine', async () => {
      await virsh.define(web.xml);
      assert.deepEqual(await virsh.state(web.uuid), {
        name: 'loam.team-a.web',
        state: 'shutoff',
        reason: 'unknown',
      });
      await virsh.start(web.uuid);
      assert.deepEqual(await virsh.state(web.uuid), {
        name: 'loam.team-a.web',
        state: 'running',
        reason: 'booted',
      });
      await rejectsWith(virsh.start(web.uuid), 'Conflict', /already active/);
      await virsh.reboot(web.uuid);
      await virsh.reset(web.uuid);
      assert.equal((await virsh.state(web.uuid)).state, 'running');
      assert.equal(await virsh.shutdown(web.uuid, { timeoutMs: 5_000 }), 'shutdown');
      assert.deepEqual(await virsh.state(web.uuid), {
        name: 'loam.team-a.web',
        state: 'shutoff',
        reason: 'shutdown',
      });
      assert.equal(await virsh.shutdown(web.uuid, { timeoutMs: 5_000 }), 'shutdown', 'already off');
      await rejectsWith(virsh.destroy(web.uuid), 'Conflict', /not running/);
      await virsh.undefine(web.uuid);
      await rejectsWith(virsh.state(web.uuid), 'NotFound');
    });

    it('lists every domain with its state, and their stats', async () => {
      await virsh.define(web.xml);
      assert.deepEqual(
        (await virsh.list()).sort((a, b) => a.name.localeCompare(b.name)),
        [
          { name: 'loam.team-a.web', state: 'shutoff', reason: 'unknown' },
          { name: 'test', state: 'running', reason: 'unknown' },
        ],
      );
      assert.deepEqual((await virsh.domstats(['test'])).get('test'), {
        'state.state': '1',
        'state.reason': '0',
      });
      // Groups the test driver lacks are skipped, not refused.
      assert.deepEqual(
        (await virsh.domstats(['test'], ['state', 'cpu-total', 'balloon', 'interface', 'block'])).get('test'),
        { 'state.state': '1', 'state.reason': '0' },
      );
      // Only the groups asked for: the test driver's iothread group has no fields.
      assert.deepEqual((await virsh.domstats(['test'], ['iothread'])).get('test'), {});
    });

    it('dumps the live and the persistent definition', async () => {
      await virsh.define(web.xml);
      await virsh.start(web.uuid);
      assert.match(await virsh.dumpxml(web.uuid), /<domain type='qemu' id='\d+'>/);
      assert.match(await virsh.dumpxml(web.uuid, { inactive: true }), /<domain type='qemu'>/);
    });

    it('maps failures to error codes', async () => {
      await rejectsWith(virsh.dumpxml('no-such-domain'), 'NotFound', /failed to get domain/);
      await rejectsWith(virsh.state('6c0a0000-0000-4000-8000-00000000dead'), 'NotFound');
      await rejectsWith(virsh.define('<domain'), 'Invalid');
      await rejectsWith(virsh.define(web.xml.replace('<acpi/>', '<acpi/><bogus/>')), 'Invalid', /validate/);
      await virsh.define(web.xml);
      const sameNameOtherUuid = web.xml.replaceAll(web.uuid, '6c0a0000-0000-4000-8000-00000000beef');
      await rejectsWith(virsh.define(sameNameOtherUuid), 'AlreadyExists', /already exists with uuid/);
    });

    it('passes hostile domain names through its command parser intact', async () => {
      const name = `it's <&> "x" \\ y;z`;
      await virsh.define(
        web.xml.replace(
          '<name>loam.team-a.web</name>',
          `<name>${name.replace(/[<&>"']/g, (c) => `&#${c.charCodeAt(0)};`)}</name>`,
        ),
      );
      assert.equal((await virsh.state(name)).name, name);
      assert.ok((await virsh.list()).some((status) => status.name === name));
    });

    it('reports lifecycle changes as events', async () => {
      await virsh.define(web.xml);
      const abort = new AbortController();
      const seen: DomainEvent[] = [];
      const consumer = (async () => {
        for await (const event of virsh.events(abort.signal)) seen.push(event);
      })();
      // The first poll is the baseline; give it time before changing anything.
      await new Promise((resolve) => setTimeout(resolve, 100));
      await virsh.start(web.uuid);
      await pollUntil(() => seen.length > 0, { timeoutMs: 5_000, what: 'the start event' });
      await virsh.destroy(web.uuid);
      await virsh.undefine(web.uuid);
      await pollUntil(() => seen.some((event) => event.status === undefined), {
        timeoutMs: 5_000,
        what: 'the undefine event',
      });
      abort.abort();
      await consumer;
      assert.deepEqual(seen[0], {
        name: 'loam.team-a.web',
        status: { name: 'loam.team-a.web', state: 'running', reason: 'booted' },
        previous: { name: 'loam.team-a.web', state: 'shutoff', reason: 'unknown' },
      });
      assert.equal(seen.at(-1)?.previous?.name, 'loam.team-a.web');
    });
  });

  describe('bounds and failures', () => {
    let dir: string;
    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'loam-virsh-test-'));
    });
    after(() => rm(dir, { recursive: true, force: true }));

    // A virsh that hangs: the first call (or every call) sleeps before running virsh.
    const hanging = (marker?: string) => [
      'sh',
      '-c',
      marker === undefined
        ? 'sleep 5; exec virsh "$@"'
        : `[ -e ${marker} ] || { touch ${marker}; sleep 5; }; exec virsh "$@"`,
      'sh',
    ];

    for (const session of [false, true]) {
      const mode = session ? 'session' : 'exec';

      it(`${mode}: works against the test driver`, async () => {
        const virsh = new Virsh({ uri: 'test:///default', session });
        assert.ok((await virsh.list()).some((status) => status.name === 'test'));
        await virsh.close();
      });

      it(`${mode}: libvirt unreachable is Unavailable`, async () => {
        const virsh = new Virsh({ uri: unreachable, session });
        await rejectsWith(virsh.list(), 'Unavailable', /failed to connect to the hypervisor/);
        await virsh.close();
      });

      it(`${mode}: a call that does not answer in time is Unavailable`, async () => {
        const virsh = new Virsh({ uri: 'test:///default', session, timeoutMs: 300, command: hanging() });
        const started = Date.now();
        await rejectsWith(virsh.list(), 'Unavailable', /did not answer within 300 ms/);
        assert.ok(Date.now() - started < 3_000);
        await virsh.close();
      });

      it(`${mode}: virsh missing is Unavailable`, async () => {
        const virsh = new Virsh({ uri: 'test:///default', session, command: [join(dir, 'no-virsh')] });
        await rejectsWith(virsh.list(), 'Unavailable');
        await virsh.close();
      });
    }

    it('session: after a timeout the next call starts a new virsh', async () => {
      const virsh = new Virsh({
        uri: 'test:///default',
        session: true,
        timeoutMs: 2_000,
        command: hanging(join(dir, 'slept')),
      });
      await rejectsWith(virsh.version(), 'Unavailable');
      assert.equal((await virsh.version()).library, 'libvirt 9.0.0');
      await virsh.close();
    });
  });
});
