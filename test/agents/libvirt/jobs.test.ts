import assert from 'node:assert/strict';
import { buildDomain, type DesiredDomain, parseDomainXml } from '../../../agents/libvirt/domain-xml.js';
import type { DomainState } from '../../../agents/libvirt/hypervisor.js';
import {
  DomainJobs,
  type ObservedDomain,
  type PowerAction,
  planApply,
  planDelete,
  planPower,
  type RunStrategy,
  restartRequired,
} from '../../../agents/libvirt/jobs.js';
import type { Virsh } from '../../../agents/libvirt/virsh.js';
import { isLoamError } from '../../../crds/errors.js';
import type { Instance } from '../../../crds/v1alpha1/instance.js';
import { inputsFor, instance, testDriver } from './fixtures.js';

const desired = (inst = instance('web')) => buildDomain(inst, inputsFor(inst));
const current = desired();

/** The domain as observed: `current` in `state`, its definitions as written for other specs when given. */
function observed(
  state: DomainState,
  reason = 'unknown',
  options: { defined?: DesiredDomain; live?: DesiredDomain } = {},
): ObservedDomain {
  const status = { name: current.name, state, reason };
  const defined = parseDomainXml((options.defined ?? current).xml);
  if (state === 'shutoff') return { status, defined };
  return { status, defined, live: parseDomainXml((options.live ?? options.defined ?? current).xml) };
}

const older = desired(instance('web', { cpus: 2 }));
const earlierGeneration = desired(instance('web', {}, { generation: 0 }));
const uidOf = (domain: DesiredDomain) => domain.identity.uid;
const types = (actions: { type: string }[]) => actions.map((action) => action.type);

describe('agents/libvirt/jobs', () => {
  describe('planApply', () => {
    const table: [string, ObservedDomain | undefined, RunStrategy, string[]][] = [
      ['new, Always: define and start', undefined, 'Always', ['define', 'start']],
      ['new, RerunOnFailure: define and start', undefined, 'RerunOnFailure', ['define', 'start']],
      ['new, Manual: define only', undefined, 'Manual', ['define']],
      ['new, Halted: define only', undefined, 'Halted', ['define']],
      ['running and current, Always: nothing', observed('running', 'booted'), 'Always', []],
      ['paused, Always: nothing (paused is up)', observed('paused', 'user'), 'Always', []],
      ['powered off by the guest, Always: start', observed('shutoff', 'shutdown'), 'Always', ['start']],
      [
        'powered off by the guest, RerunOnFailure: nothing',
        observed('shutoff', 'shutdown'),
        'RerunOnFailure',
        [],
      ],
      ['destroyed, RerunOnFailure: nothing', observed('shutoff', 'destroyed'), 'RerunOnFailure', []],
      ['crashed, RerunOnFailure: start', observed('shutoff', 'crashed'), 'RerunOnFailure', ['start']],
      [
        'crashed with its process kept, RerunOnFailure: destroy and start',
        observed('crashed', 'panicked'),
        'RerunOnFailure',
        ['destroy', 'start'],
      ],
      [
        'crashed with its process kept, Always: destroy and start',
        observed('crashed'),
        'Always',
        ['destroy', 'start'],
      ],
      ['running, Halted: shut down', observed('running', 'booted'), 'Halted', ['shutdown']],
      ['off, Halted: nothing', observed('shutoff', 'shutdown'), 'Halted', []],
      ['running, Manual: nothing', observed('running', 'booted'), 'Manual', []],
      ['off, Manual: nothing', observed('shutoff', 'destroyed'), 'Manual', []],
      [
        'running an older spec, Always: redefine only',
        observed('running', 'booted', { defined: older }),
        'Always',
        ['define'],
      ],
      [
        'off with an older spec, Always: redefine and start',
        observed('shutoff', 'unknown', { defined: older }),
        'Always',
        ['define', 'start'],
      ],
      [
        'written for an earlier generation, same spec: redefine (records the generation)',
        observed('shutoff', 'shutdown', { defined: earlierGeneration }),
        'Halted',
        ['define'],
      ],
    ];
    for (const [title, obs, strategy, expected] of table) {
      it(title, () => assert.deepEqual(types(planApply(obs, current, strategy)), expected));
    }

    it('defines with the desired XML', () =>
      assert.deepEqual(planApply(undefined, current, 'Manual'), [{ type: 'define', xml: current.xml }]));

    it('refuses a domain under the uid whose metadata names another Instance', () => {
      const running = observed('running', 'booted');
      const other = desired(instance('other')).identity;
      assert.throws(
        () => planApply({ ...running, defined: { ...running.defined, identity: other } }, current, 'Always'),
        (err) => isLoamError(err, 'Conflict') && /belongs to team-a\/other/.test(err.message),
      );
    });

    it('refuses a domain under the uid without Loam metadata', () => {
      const foreign = observed('running');
      assert.throws(
        () =>
          planApply({ ...foreign, defined: { ...foreign.defined, identity: undefined } }, current, 'Always'),
        (err) => isLoamError(err, 'Conflict') && /no Loam metadata/.test(err.message),
      );
    });
  });

  describe('restartRequired', () => {
    const table: [string, ObservedDomain | undefined, boolean][] = [
      ['no domain', undefined, false],
      ['running the current spec', observed('running', 'booted'), false],
      ['running an older spec, now redefined', observed('running', 'booted', { live: older }), true],
      ['off with an older live spec', observed('shutoff', 'shutdown', { defined: older }), false],
      ['only the generation moved', observed('running', 'booted', { live: earlierGeneration }), false],
    ];
    for (const [title, obs, expected] of table)
      it(title, () => assert.equal(restartRequired(obs, current), expected));
  });

  describe('planDelete', () => {
    const table: [string, ObservedDomain | undefined, string[]][] = [
      ['gone already: nothing', undefined, []],
      ['running: destroy and undefine', observed('running', 'booted'), ['destroy', 'undefine']],
      ['paused: destroy and undefine', observed('paused', 'user'), ['destroy', 'undefine']],
      ['off: undefine', observed('shutoff', 'shutdown'), ['undefine']],
    ];
    for (const [title, obs, expected] of table)
      it(title, () => assert.deepEqual(types(planDelete(obs)), expected));
  });

  describe('planPower', () => {
    const table: [PowerAction, ObservedDomain, string[]][] = [
      ['start', observed('running', 'booted'), []],
      ['start', observed('shutoff', 'shutdown'), ['start']],
      ['start', observed('crashed'), ['destroy', 'start']],
      ['stop', observed('running', 'booted'), ['shutdown']],
      ['stop', observed('shutoff', 'shutdown'), []],
      ['reboot', observed('running', 'booted'), ['reboot']],
      ['reset', observed('running', 'booted'), ['reset']],
    ];
    for (const [action, obs, expected] of table) {
      it(`${action} when ${obs.status.state}: ${expected.join(', ') || 'nothing'}`, () =>
        assert.deepEqual(types(planPower(obs, uidOf(current), action)), expected));
    }

    for (const action of ['reboot', 'reset'] as const) {
      it(`refuses to ${action} a domain that is not running, rather than start it`, () =>
        assert.throws(
          () => planPower(observed('shutoff', 'destroyed'), uidOf(current), action),
          (err) => isLoamError(err, 'Conflict') && /is not running \(it is shutoff\)/.test(err.message),
        ));
    }

    it('fails when there is no domain', () =>
      assert.throws(
        () => planPower(undefined, uidOf(current), 'start'),
        (err) => isLoamError(err, 'NotFound'),
      ));

    it('refuses a domain under the uid whose metadata names another Instance', () =>
      assert.throws(
        () =>
          planPower(
            observed('running', 'booted', { defined: desired(instance('db')) }),
            uidOf(current),
            'reset',
          ),
        (err) => isLoamError(err, 'Conflict') && /belongs to team-a\/db/.test(err.message),
      ));
  });

  describe('DomainJobs against the test driver', () => {
    let virsh: Virsh;
    let jobs: DomainJobs;
    const web = instance('web');
    const uid = web.metadata.uid ?? '';
    const apply = (inst: Instance) => jobs.apply(inst, inputsFor(inst));
    const state = async () => (await virsh.state(uid)).state;

    beforeEach(() => {
      virsh = testDriver();
      jobs = new DomainJobs(virsh, { shutdownTimeoutMs: 5_000 });
    });
    afterEach(() => virsh.close());

    it('apply twice changes nothing the second time', async () => {
      const first = await apply(web);
      assert.deepEqual(first.actions, ['define', 'start']);
      assert.equal(first.observed?.status.state, 'running');
      assert.equal(first.restartRequired, false);
      const second = await apply(web);
      assert.deepEqual(second.actions, []);
      assert.equal(second.observed?.status.state, 'running');
    });

    it('a changed spec is redefined and flagged until the domain restarts', async () => {
      await apply(web);
      const bigger = instance('web', { cpus: 2 }, { generation: 2 });
      const changed = await apply(bigger);
      assert.deepEqual(changed.actions, ['define']);
      assert.equal(changed.restartRequired, true);
      assert.equal(changed.observed?.defined.vcpus, 2);
      assert.equal(changed.observed?.live?.vcpus, 1);
      await jobs.power(uid, 'stop');
      await jobs.power(uid, 'start');
      const after = await apply(bigger);
      assert.deepEqual(after.actions, []);
      assert.equal(after.restartRequired, false);
      assert.equal(after.observed?.live?.vcpus, 2);
    });

    it('runStrategy Halted stops a running domain, and Always starts it again', async () => {
      await apply(web);
      assert.deepEqual((await apply(instance('web', { runStrategy: 'Halted' }))).actions, ['shutdown']);
      assert.equal(await state(), 'shutoff');
      assert.deepEqual((await apply(instance('web', { runStrategy: 'Halted' }))).actions, []);
      assert.deepEqual((await apply(web)).actions, ['start']);
      assert.equal(await state(), 'running');
    });

    it('stop, start, reboot and reset', async () => {
      await apply(instance('web', { runStrategy: 'Manual' }));
      assert.equal(await state(), 'shutoff');
      assert.deepEqual((await jobs.power(uid, 'start')).actions, ['start']);
      assert.deepEqual((await jobs.power(uid, 'start')).actions, []);
      assert.deepEqual((await jobs.power(uid, 'reboot')).actions, ['reboot']);
      assert.deepEqual((await jobs.power(uid, 'reset')).actions, ['reset']);
      assert.equal(await state(), 'running');
      const stopped = await jobs.power(uid, 'stop');
      assert.deepEqual(stopped.actions, ['shutdown']);
      assert.deepEqual(stopped.observed?.status, {
        name: 'loam.team-a.web',
        state: 'shutoff',
        reason: 'shutdown',
      });
      assert.deepEqual((await jobs.power(uid, 'stop')).actions, []);
    });

    it('delete destroys and undefines, and a second delete finds nothing to do', async () => {
      await apply(web);
      assert.deepEqual((await jobs.delete(uid)).actions, ['destroy', 'undefine']);
      assert.equal(await jobs.observe(uid), undefined);
      assert.deepEqual((await jobs.delete(uid)).actions, []);
    });

    it('delete of a domain that never existed is fine', async () =>
      assert.deepEqual((await jobs.delete(instance('never').metadata.uid ?? '')).actions, []));

    it('after an agent restart, its domains are recognised by their metadata', async () => {
      await apply(web);
      await apply(instance('db', { runStrategy: 'Halted' }));
      // A new agent process has nothing but libvirt (the test driver lives in the virsh session).
      const restarted = new DomainJobs(virsh);
      const inventory = await restarted.inventory();
      assert.deepEqual(
        inventory
          .map(({ facts, status }) => [facts.identity?.name, facts.identity?.uid, status.state])
          .sort(),
        [
          ['db', instance('db').metadata.uid, 'shutoff'],
          ['web', uid, 'running'],
        ],
        'Loam domains only: the test driver’s own "test" domain has no Loam metadata',
      );
      assert.deepEqual((await restarted.apply(web, inputsFor(web))).actions, []);
    });

    it('a leftover domain of an earlier Instance with the same name is reported, not replaced', async () => {
      const earlier = instance('web', {}, { uid: '6c0a0000-0000-4000-8000-0000000e0e0e' });
      await apply(earlier);
      await assert.rejects(
        apply(web),
        (err) => isLoamError(err, 'AlreadyExists') && /leftover of an earlier Instance/.test(err.message),
      );
      const inventory = await jobs.inventory();
      assert.deepEqual(
        inventory.map(({ facts }) => facts.identity?.uid),
        [earlier.metadata.uid],
      );
      assert.equal((await virsh.state(earlier.metadata.uid ?? '')).state, 'running', 'left alone');
    });
  });
});
