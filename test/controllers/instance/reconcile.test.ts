import assert from 'node:assert/strict';
import {
  type DomainState,
  type InstanceJob,
  type InstanceReconcileInput,
  type ObservedInstance,
  type RunStrategy,
  reconcileInstance,
} from '../../../controllers/instance/reconcile.js';
import { instanceMac } from '../../../controllers/network/allocate.js';
import { getCondition } from '../../../crds/meta.js';
import { type Instance, instanceKind } from '../../../crds/v1alpha1/index.js';
import { validateObject } from '../../../crds/validate.js';
import { deleted, host, input, instance, network, now, stored, updated } from './fixtures.js';

const lab = [{ name: 'lab' }];
const web = (spec: Record<string, unknown> = {}) => instance('web', { networks: lab, ...spec });

/** What the agent reports once it has applied `subject`: its domain in `state`, with the placed MACs. */
function observedOf(subject: Instance, state: DomainState = 'running'): ObservedInstance {
  return {
    state,
    generation: subject.metadata.generation ?? 0,
    interfaces: (subject.status?.interfaces ?? []).map(({ mac }) => ({ mac })),
  };
}

/** `subject` as stored after it was created, provisioned and reported in `state`: converged. */
function converged(
  subject: Instance,
  state: DomainState = 'running',
  overrides: Partial<InstanceReconcileInput> = {},
): Instance {
  const scheduled = stored(subject, reconcileInstance(input(subject, overrides)));
  return stored(
    scheduled,
    reconcileInstance(input(scheduled, { observed: observedOf(scheduled, state), ...overrides })),
  );
}

function conditionOf(result: ReturnType<typeof reconcileInstance>, type: string) {
  return getCondition(result.status?.conditions, type);
}

describe('reconcileInstance', () => {
  describe('creation', () => {
    it('schedules, allocates and dispatches the whole Instance with its placement in one pass', () => {
      const subject = web({ cpus: 2, memory: '1Gi' });
      const result = reconcileInstance(input(subject, { hosts: [host('hv1')] }));
      const mac = instanceMac(subject, 'lab');
      const interfaces = [{ network: 'lab', mac, ipAddress: '10.20.0.2' }];

      assert.equal(result.finalizer, 'add');
      assert.equal(result.status?.phase, 'Provisioning');
      assert.equal(result.status?.host, 'hv1');
      assert.deepEqual(result.status?.interfaces, interfaces);
      assert.equal(result.status?.observedGeneration, 1);
      assert.deepEqual(
        result.status?.conditions?.map((c) => [c.type, c.status, c.reason, c.lastTransitionTime]),
        [
          ['Scheduled', 'True', 'Scheduled', '2025-05-01T12:00:00Z'],
          ['HostReachable', 'True', 'HostReady', '2025-05-01T12:00:00Z'],
          ['Provisioned', 'False', 'Provisioning', '2025-05-01T12:00:00Z'],
          ['Ready', 'False', 'Provisioning', '2025-05-01T12:00:00Z'],
        ],
      );
      assert.deepEqual(result.events, [
        { type: 'Normal', reason: 'Scheduled', message: 'scheduled to Host hv1' },
      ]);

      assert.equal(result.jobs.length, 1);
      const [job] = result.jobs as [InstanceJob];
      assert.deepEqual(job.agent, { role: 'libvirt', name: 'hv1' });
      assert.equal(job.job.type, 'instance.apply');
      assert.deepEqual(job.job.object, {
        apiVersion: 'loam.dev/v1alpha1',
        kind: 'Instance',
        metadata: { name: 'web', namespace: 'default', uid: subject.metadata.uid, generation: 1 },
        spec: subject.spec,
        status: { host: 'hv1', interfaces },
        networks: [{ name: 'lab', cidr: '10.20.0.0/24', gateway: '10.20.0.1', dns: ['10.20.0.1'] }],
      });
      // The job object is an Instance the agent can validate like any other.
      validateObject(instanceKind, job.job.object);
    });

    it('reports Running from the agent, then does nothing while nothing changes', () => {
      const scheduled = stored(web(), reconcileInstance(input(web())));
      const reported = reconcileInstance(input(scheduled, { observed: observedOf(scheduled) }));
      assert.equal(reported.status?.phase, 'Running');
      assert.equal(conditionOf(reported, 'Provisioned')?.status, 'True');
      assert.deepEqual(conditionOf(reported, 'Ready'), {
        type: 'Ready',
        status: 'True',
        reason: 'Running',
        message: 'running on Host hv1',
        observedGeneration: 1,
        lastTransitionTime: '2025-05-01T12:00:00Z',
      });
      assert.deepEqual(reported.events, [
        { type: 'Normal', reason: 'Running', message: 'running on Host hv1' },
      ]);
      assert.deepEqual(reported.jobs, []);
      assert.equal(reported.finalizer, undefined);

      const running = stored(scheduled, reported);
      const later = new Date(now.getTime() + 3_600_000);
      assert.deepEqual(reconcileInstance(input(running, { observed: observedOf(running), now: later })), {
        jobs: [],
        events: [],
      });
    });

    it('keeps an Instance without Networks free of interfaces', () => {
      const result = reconcileInstance(input(instance('bare')));
      assert.equal(result.status?.interfaces, undefined);
      assert.deepEqual(result.jobs[0]?.job.object.status.interfaces, []);
      assert.deepEqual(result.jobs[0]?.job.object.networks, []);
    });

    it("tells the agent each placed Network's prefix, gateway and DNS, for the guest's static config", () => {
      const subject = instance('web', { networks: [{ name: 'lab' }, { name: 'dmz' }] });
      const dmz = network('dmz', { cidr: '10.30.0.0/23', gateway: '10.30.1.254', dns: ['9.9.9.9'] });
      const elsewhere = network('lab', { cidr: '10.99.0.0/24' }, 'other');
      const result = reconcileInstance(input(subject, { networks: [elsewhere, dmz, network('lab')] }));
      assert.deepEqual(result.jobs[0]?.job.object.networks, [
        { name: 'lab', cidr: '10.20.0.0/24', gateway: '10.20.0.1', dns: ['10.20.0.1'] },
        { name: 'dmz', cidr: '10.30.0.0/23', gateway: '10.30.1.254', dns: ['9.9.9.9'] },
      ]);
    });
  });

  describe("waiting for the router's DHCP lease", () => {
    const mac = instanceMac(web(), 'lab');
    const served = (...leases: string[]) => new Map([['lab', new Set(leases)]]);

    it('defines the domain only once the router serves the lease, so the guest gets its own address', () => {
      const result = reconcileInstance(input(web(), { servedLeases: served('52:54:00:00:00:99=10.20.0.9') }));
      assert.deepEqual(result.jobs, []);
      assert.equal(result.status?.host, 'hv1', 'scheduled and allocated meanwhile');
      assert.deepEqual(conditionOf(result, 'Provisioned'), {
        type: 'Provisioned',
        status: 'False',
        reason: 'WaitingForNetwork',
        message: `waiting for the router to serve the DHCP lease of ${mac} 10.20.0.2 on Network lab`,
        observedGeneration: 1,
        lastTransitionTime: '2025-05-01T12:00:00Z',
      });

      const waiting = stored(web(), result);
      const ready = reconcileInstance(
        input(waiting, { observed: { state: 'absent' }, servedLeases: served(`${mac}=10.20.0.2`) }),
      );
      assert.equal(ready.jobs[0]?.job.type, 'instance.apply');
    });

    it('waits for no Network the map leaves out, and never holds back a domain that exists', () => {
      assert.equal(reconcileInstance(input(web(), { servedLeases: new Map() })).jobs.length, 1);
      const running = converged(web());
      const halted = { ...running, spec: { ...running.spec, runStrategy: 'Halted' as const } };
      const result = reconcileInstance(
        input(halted, { observed: observedOf(running), servedLeases: served() }),
      );
      assert.equal(result.jobs[0]?.job.type, 'instance.apply', 'a stop is not held back');
    });
  });

  describe('convergence', () => {
    it('does nothing for a converged Instance, in every steady state', () => {
      const cases: [RunStrategy, DomainState][] = [
        ['Always', 'running'],
        ['RerunOnFailure', 'running'],
        ['RerunOnFailure', 'stopped'],
        ['Manual', 'running'],
        ['Manual', 'stopped'],
        ['Halted', 'stopped'],
      ];
      for (const [runStrategy, state] of cases) {
        const subject = converged(web({ runStrategy }), state);
        const result = reconcileInstance(input(subject, { observed: observedOf(subject, state) }));
        assert.deepEqual(result, { jobs: [], events: [] }, `${runStrategy} ${state}`);
      }
    });

    it('is idempotent: the same input gives the same output, and the input is left as it was', () => {
      const running = converged(web());
      const inputs: [string, InstanceReconcileInput][] = [
        ['create', input(web())],
        ['spec change', input(updated(running, { cpus: 2 }), { observed: observedOf(running) })],
        ['unschedulable', input(web(), { hosts: [host('hv1', { cpus: 0 })] })],
        ['host gone', input(running, { hosts: [], observed: observedOf(running) })],
        ['deletion', input(deleted(running), { observed: observedOf(running) })],
      ];
      for (const [name, given] of inputs) {
        const before = JSON.stringify(given.instance);
        assert.deepEqual(reconcileInstance(given), reconcileInstance(given), name);
        assert.equal(JSON.stringify(given.instance), before, name);
      }
    });

    it('reaches a fixed point: reconciling what it wrote changes nothing more', () => {
      const worlds: [string, Partial<InstanceReconcileInput>][] = [
        ['unschedulable', { hosts: [host('hv1', { unschedulable: true })] }],
        ['network missing', { networks: [] }],
        ['agent disconnected', { connectedAgents: new Set() }],
        ['host not Ready', { hosts: [host('hv1', { ready: 'Unknown' })] }],
      ];
      for (const [name, world] of worlds) {
        const once = stored(web(), reconcileInstance(input(web(), world)));
        const twice = reconcileInstance(input(once, world));
        assert.equal(twice.status, undefined, name);
        assert.deepEqual(twice.events, [], name);
      }
    });
  });

  describe('updates', () => {
    it('sends the new generation when the spec changes, while the old one keeps running', () => {
      const running = converged(web());
      const subject = updated(running, { cpus: 4 });
      const result = reconcileInstance(input(subject, { observed: observedOf(running) }));

      assert.equal(result.jobs.length, 1);
      assert.equal(result.jobs[0]?.job.type, 'instance.apply');
      assert.equal(result.jobs[0]?.job.object.metadata.generation, 2);
      assert.equal(result.jobs[0]?.job.object.spec.cpus, 4);
      assert.deepEqual(result.jobs[0]?.job.object.status, {
        host: 'hv1',
        interfaces: running.status?.interfaces,
      });
      assert.equal(result.status?.phase, 'Running');
      assert.equal(result.status?.observedGeneration, 2);
      assert.equal(conditionOf(result, 'Provisioned')?.reason, 'Provisioning');
      assert.deepEqual(result.events, []);
    });

    it('does not send a job that is already in flight, but does send a newer one', () => {
      const scheduled = web();
      const first = reconcileInstance(input(scheduled));
      const provisioning = stored(scheduled, first);
      const again = reconcileInstance(
        input(provisioning, { observed: { state: 'absent' }, inFlight: first.jobs }),
      );
      assert.deepEqual(again, { jobs: [], events: [] });

      const newer = updated(provisioning, { cpus: 2 });
      const next = reconcileInstance(input(newer, { observed: { state: 'absent' }, inFlight: first.jobs }));
      assert.equal(next.jobs[0]?.job.object.metadata.generation, 2);
    });

    it('applies again when the domain carries other MACs than the placement', () => {
      const running = converged(web());
      const result = reconcileInstance(
        input(running, { observed: { ...observedOf(running), interfaces: [{ mac: '52:54:00:00:00:01' }] } }),
      );
      assert.equal(result.jobs[0]?.job.type, 'instance.apply');
      assert.equal(conditionOf(result, 'Provisioned')?.reason, 'Provisioning');
    });

    it('waits for a disconnected agent whose Host is still Ready (within the hub grace period)', () => {
      const result = reconcileInstance(input(web(), { connectedAgents: new Set() }));
      assert.deepEqual(result.jobs, []);
      assert.equal(result.status?.phase, 'Scheduled');
      assert.equal(conditionOf(result, 'Provisioned')?.reason, 'WaitingForAgent');
      assert.equal(conditionOf(result, 'HostReachable')?.status, 'True');
    });

    it('keeps the stored phase until the agent reports after a control-plane restart', () => {
      const running = converged(web());
      const result = reconcileInstance(input(running, { connectedAgents: new Set() }));
      assert.deepEqual(result, { jobs: [], events: [] });
    });

    it('stops retrying a generation the agent refused, until the spec changes', () => {
      const scheduled = stored(web(), reconcileInstance(input(web())));
      const refused = reconcileInstance(
        input(scheduled, {
          observed: { state: 'absent' },
          rejection: { generation: 1, message: 'image checksum mismatch' },
        }),
      );
      assert.deepEqual(refused.jobs, []);
      assert.equal(refused.status?.phase, 'Failed');
      assert.equal(conditionOf(refused, 'Provisioned')?.reason, 'ProvisioningFailed');
      assert.deepEqual(refused.events, [
        { type: 'Warning', reason: 'ProvisioningFailed', message: 'image checksum mismatch' },
      ]);

      // Remembered in status: the shell need not pass the rejection again.
      const failed = stored(scheduled, refused);
      assert.deepEqual(reconcileInstance(input(failed, { observed: { state: 'absent' } })), {
        jobs: [],
        events: [],
      });
      const fixed = updated(failed, { memory: '1Gi' });
      const retried = reconcileInstance(input(fixed, { observed: { state: 'absent' } }));
      assert.equal(retried.jobs[0]?.job.object.metadata.generation, 2);
      assert.equal(retried.status?.phase, 'Provisioning');
    });
  });

  describe('user data from a Secret', () => {
    const fromSecret = () =>
      web({
        image: { url: 'https://images.example.org/debian.qcow2', sha256: 'b'.repeat(64) },
        kernel: undefined,
        cloudInit: { userDataSecretRef: { name: 'web-userdata', key: 'userdata' } },
      });

    it("sends the Secret's value inline, in place of the reference the agent cannot follow", () => {
      const scheduled = stored(fromSecret(), reconcileInstance(input(fromSecret())));
      const result = reconcileInstance(
        input(scheduled, {
          observed: { state: 'absent' },
          userDataSecret: { userData: '#cloud-config\nhostname: web\n' },
        }),
      );
      assert.deepEqual(result.jobs[0]?.job.object.spec.cloudInit, {
        userData: '#cloud-config\nhostname: web\n',
      });
    });

    it('waits, saying why, while the Secret or its key is missing', () => {
      const scheduled = stored(fromSecret(), reconcileInstance(input(fromSecret())));
      const result = reconcileInstance(
        input(scheduled, {
          observed: { state: 'absent' },
          userDataSecret: {
            problem: 'spec.cloudInit.userDataSecretRef.name: Secret default/web-userdata does not exist',
          },
        }),
      );
      assert.deepEqual(result.jobs, []);
      assert.equal(result.status?.phase, 'Pending');
      assert.equal(conditionOf(result, 'Provisioned')?.reason, 'UserDataUnavailable');
      assert.match(conditionOf(result, 'Provisioned')?.message ?? '', /web-userdata does not exist/);
    });
  });

  describe('a failed apply, retried', () => {
    it('says why it has not been provisioned while the agent fails, and sends it again', () => {
      const scheduled = stored(web(), reconcileInstance(input(web())));
      const failing = reconcileInstance(
        input(scheduled, {
          observed: { state: 'absent' },
          failure: { generation: 1, message: 'no space left on device' },
        }),
      );
      assert.equal(failing.jobs.length, 1, 'retried: the shell paces it with backoff');
      assert.equal(conditionOf(failing, 'Provisioned')?.reason, 'ApplyFailed');
      assert.match(
        conditionOf(failing, 'Provisioned')?.message ?? '',
        /generation 1: no space left on device; retrying/,
      );
      assert.deepEqual(
        failing.events.map((e) => e.reason),
        ['FailedApply'],
      );
      // A failure of an older generation says nothing about this one.
      const next = updated(stored(scheduled, failing), { memory: '1Gi' });
      const fresh = reconcileInstance(
        input(next, { observed: { state: 'absent' }, failure: { generation: 1, message: 'old' } }),
      );
      assert.equal(conditionOf(fresh, 'Provisioned')?.reason, 'Provisioning');
    });

    it('names the failure when a defined domain will not start', () => {
      const scheduled = stored(web(), reconcileInstance(input(web())));
      const stopped = reconcileInstance(
        input(scheduled, {
          observed: {
            state: 'stopped',
            generation: 1,
            interfaces: (scheduled.status?.interfaces ?? []).map(({ mac }) => ({ mac })),
          },
          failure: { generation: 1, message: 'could not open kernel file: Permission denied' },
        }),
      );
      assert.equal(conditionOf(stopped, 'Provisioned')?.status, 'True', 'the domain is defined');
      assert.match(
        conditionOf(stopped, 'Ready')?.message ?? '',
        /starting it failed: could not open kernel file: Permission denied; retrying/,
      );
    });
  });

  describe('runStrategy', () => {
    const cases: {
      runStrategy: RunStrategy;
      state: DomainState;
      job: boolean;
      phase: string;
      ready: string;
    }[] = [
      { runStrategy: 'Always', state: 'running', job: false, phase: 'Running', ready: 'running on Host hv1' },
      {
        runStrategy: 'Always',
        state: 'stopped',
        job: true,
        phase: 'Stopped',
        ready: 'stopped on Host hv1; starting it (runStrategy Always)',
      },
      {
        runStrategy: 'Always',
        state: 'crashed',
        job: true,
        phase: 'Failed',
        ready: 'crashed on Host hv1; starting it (runStrategy Always)',
      },
      {
        runStrategy: 'RerunOnFailure',
        state: 'stopped',
        job: false,
        phase: 'Stopped',
        ready: 'stopped on Host hv1',
      },
      {
        runStrategy: 'RerunOnFailure',
        state: 'crashed',
        job: true,
        phase: 'Failed',
        ready: 'crashed on Host hv1; starting it (runStrategy RerunOnFailure)',
      },
      { runStrategy: 'Manual', state: 'running', job: false, phase: 'Running', ready: 'running on Host hv1' },
      { runStrategy: 'Manual', state: 'stopped', job: false, phase: 'Stopped', ready: 'stopped on Host hv1' },
      { runStrategy: 'Manual', state: 'crashed', job: false, phase: 'Failed', ready: 'crashed on Host hv1' },
      {
        runStrategy: 'Halted',
        state: 'running',
        job: true,
        phase: 'Running',
        ready: 'running on Host hv1; stopping it (runStrategy Halted)',
      },
      { runStrategy: 'Halted', state: 'stopped', job: false, phase: 'Stopped', ready: 'stopped on Host hv1' },
      { runStrategy: 'Halted', state: 'crashed', job: false, phase: 'Failed', ready: 'crashed on Host hv1' },
    ];
    for (const c of cases) {
      it(`${c.runStrategy}, domain ${c.state}: ${c.job ? 'apply' : 'leave it'}, phase ${c.phase}`, () => {
        const subject = converged(web({ runStrategy: c.runStrategy }));
        const result = reconcileInstance(input(subject, { observed: observedOf(subject, c.state) }));
        assert.deepEqual(
          result.jobs.map((j) => [j.job.type, j.job.object.spec.runStrategy]),
          c.job ? [['instance.apply', c.runStrategy]] : [],
        );
        const after = result.status ?? subject.status;
        assert.equal(after?.phase, c.phase);
        assert.equal(getCondition(after?.conditions, 'Ready')?.message, c.ready);
      });
    }

    it('every strategy defines a missing domain (the agent starts it or not)', () => {
      for (const runStrategy of ['Always', 'RerunOnFailure', 'Manual', 'Halted']) {
        const result = reconcileInstance(input(web({ runStrategy })));
        assert.equal(result.jobs[0]?.job.object.spec.runStrategy, runStrategy);
      }
    });

    it('records a crash once, as a Warning', () => {
      const subject = converged(web({ runStrategy: 'Manual' }));
      const crashed = reconcileInstance(input(subject, { observed: observedOf(subject, 'crashed') }));
      assert.deepEqual(crashed.events, [
        { type: 'Warning', reason: 'Crashed', message: 'crashed on Host hv1' },
      ]);
      const again = reconcileInstance(
        input(stored(subject, crashed), { observed: observedOf(subject, 'crashed') }),
      );
      assert.deepEqual(again, { jobs: [], events: [] });
    });
  });

  describe('scheduling', () => {
    const bound = (name: string, hostName: string, spec: Record<string, unknown>, options = {}) =>
      instance(name, spec, { ...options, status: { host: hostName } });
    const cases: {
      name: string;
      spec?: Record<string, unknown>;
      hosts: ReturnType<typeof host>[];
      others?: Instance[];
      want: string;
    }[] = [
      {
        name: 'the least loaded Host',
        spec: { cpus: 2, memory: '2Gi' },
        hosts: [host('hv1'), host('hv2')],
        others: [bound('a', 'hv1', { cpus: 2, memory: '2Gi' })],
        want: 'hv2',
      },
      {
        name: 'the first by name when loads tie',
        hosts: [host('hv2'), host('hv1'), host('hv3')],
        want: 'hv1',
      },
      {
        name: 'load relative to size: the bigger Host has more room left',
        spec: { cpus: 2, memory: '2Gi' },
        hosts: [host('hv1', { cpus: 4, memory: '8Gi' }), host('hv2', { cpus: 32, memory: '128Gi' })],
        others: [bound('a', 'hv2', { cpus: 4, memory: '8Gi' })],
        want: 'hv2',
      },
      {
        name: 'Instances being deleted still hold their Host',
        spec: { cpus: 6 },
        hosts: [host('hv1'), host('hv2')],
        others: [
          instance('a', { cpus: 4 }, { status: { host: 'hv2', phase: 'Terminating' } }),
          instance('b', { cpus: 1 }, { status: { host: 'hv1' } }),
        ],
        want: 'hv1',
      },
      {
        name: 'spec.host even when another Host is emptier',
        spec: { host: 'hv2' },
        hosts: [host('hv1'), host('hv2')],
        others: [bound('a', 'hv2', {})],
        want: 'hv2',
      },
      {
        name: 'a Host whose labels match spec.nodeSelector',
        spec: { nodeSelector: { 'loam.dev/rack': 'r2' } },
        hosts: [
          host('hv1', { labels: { 'loam.dev/rack': 'r1' } }),
          host('hv2', { labels: { 'loam.dev/rack': 'r2' } }),
        ],
        want: 'hv2',
      },
      {
        name: 'capacity when a Host reports no allocatable',
        spec: { cpus: 4 },
        hosts: [host('hv1', { cpus: 2 }), host('hv2', { cpus: 4, capacityOnly: true })],
        want: 'hv2',
      },
      {
        name: 'allocatable, not capacity: what a Host keeps for itself is not for Instances',
        spec: { cpus: 2, memory: '4Gi' },
        hosts: [
          host('hv1', { cpus: 64, memory: '256Gi', allocatable: { cpus: 62, memory: '3Gi' } }),
          host('hv2', { cpus: 4, memory: '8Gi' }),
        ],
        want: 'hv2',
      },
      {
        name: 'exactly full is a fit',
        spec: { cpus: 2, memory: '1Gi' },
        hosts: [host('hv1', { cpus: 4, memory: '2Gi' })],
        others: [bound('a', 'hv1', { cpus: 2, memory: '1Gi' })],
        want: 'hv1',
      },
    ];
    for (const c of cases) {
      it(c.name, () => {
        const subject = web(c.spec);
        const result = reconcileInstance(
          input(subject, { hosts: c.hosts, instances: [subject, ...(c.others ?? [])] }),
        );
        assert.equal(result.status?.host, c.want);
        assert.equal(result.jobs[0]?.agent.name, c.want);
      });
    }

    it('never moves a scheduled Instance, even to an emptier Host', () => {
      const running = converged(web());
      const result = reconcileInstance(
        input(running, {
          hosts: [host('hv1', { unschedulable: true }), host('hv2', { cpus: 64 })],
          observed: observedOf(running),
        }),
      );
      assert.deepEqual(result, { jobs: [], events: [] });
    });
  });

  describe('Unschedulable', () => {
    const cases: {
      name: string;
      spec?: Record<string, unknown>;
      hosts: ReturnType<typeof host>[];
      others?: Instance[];
      message: string;
    }[] = [
      {
        name: 'no Hosts at all',
        hosts: [],
        message: 'there are no Hosts: enroll a hypervisor with the libvirt agent',
      },
      {
        name: 'spec.host names no Host',
        spec: { host: 'hv9' },
        hosts: [host('hv1')],
        message: 'Host hv9 (spec.host) does not exist',
      },
      {
        name: 'every Host ruled out, counted per reason',
        spec: { cpus: 2, memory: '2Gi', nodeSelector: { gpu: 'yes' } },
        hosts: [
          host('hv1', { ready: 'Unknown' }),
          host('hv2', { ready: undefined }),
          host('hv3', { unschedulable: true }),
          host('hv4'),
          host('hv5', { labels: { gpu: 'yes' }, cpus: 1 }),
          host('hv6', { labels: { gpu: 'yes' }, memory: '1Gi' }),
        ],
        message:
          '0/6 Hosts fit 2 cpus and 2Gi of memory: 2 not Ready, 1 cordoned (spec.unschedulable), ' +
          '1 not matching spec.nodeSelector, 1 with fewer allocatable cpus than spec.cpus, ' +
          '1 with less allocatable memory than spec.memory',
      },
      {
        name: 'more than any Host has: the largest is named',
        spec: { cpus: 12, memory: '64Gi' },
        hosts: [
          host('hv1', { memory: '7948084Ki', cpus: 2 }),
          host('hv2', { memory: '16Gi', cpus: 8, ready: 'Unknown' }),
          host('hv3', { memory: '1Gi', cpus: 4 }),
        ],
        message:
          '0/3 Hosts fit 12 cpus and 64Gi of memory: 1 not Ready, 2 with fewer allocatable cpus than spec.cpus; ' +
          'spec.memory 64Gi is more than any Host has: the largest, hv2, has 16Gi allocatable; ' +
          'spec.cpus 12 is more than any Host has: the largest, hv2, has 8 allocatable',
      },
      {
        name: 'more memory than the only Host has',
        spec: { memory: '64Gi' },
        hosts: [host('hv1', { memory: '7948084Ki' })],
        message:
          '0/1 Hosts fit 1 cpu and 64Gi of memory: 1 with less allocatable memory than spec.memory; ' +
          'spec.memory 64Gi is more than any Host has: the largest, hv1, has 7.5Gi allocatable',
      },
      {
        name: 'more memory than a Host has allocatable, though less than its capacity',
        spec: { memory: '8Gi' },
        hosts: [host('hv1', { memory: '8Gi', allocatable: { cpus: 8, memory: '7680Mi' } })],
        message:
          '0/1 Hosts fit 1 cpu and 8Gi of memory: 1 with less allocatable memory than spec.memory; ' +
          'spec.memory 8Gi is more than any Host has: the largest, hv1, has 7.5Gi allocatable',
      },
      {
        name: 'less memory than one Host has in all, but more than it has free',
        spec: { memory: '6Gi' },
        hosts: [host('hv1', { memory: '7948084Ki' })],
        others: [instance('a', { memory: '2Gi' }, { status: { host: 'hv1' } })],
        message: '0/1 Hosts fit 1 cpu and 6Gi of memory: 1 with too little free memory',
      },
      {
        name: 'what other Instances use is not free',
        spec: { memory: '4Gi' },
        hosts: [host('hv1', { memory: '8Gi' })],
        others: [instance('a', { memory: '6Gi' }, { status: { host: 'hv1' } })],
        message: '0/1 Hosts fit 1 cpu and 4Gi of memory: 1 with too little free memory',
      },
      {
        name: 'the Host spec.host names is cordoned',
        spec: { host: 'hv1' },
        hosts: [host('hv1', { unschedulable: true }), host('hv2')],
        message: '0/1 Hosts fit 1 cpu and 512Mi of memory (spec.host hv1): 1 cordoned (spec.unschedulable)',
      },
    ];
    for (const c of cases) {
      it(c.name, () => {
        const subject = web(c.spec);
        const world = { hosts: c.hosts, instances: [subject, ...(c.others ?? [])] };
        const result = reconcileInstance(input(subject, world));
        assert.equal(result.status?.phase, 'Scheduling');
        assert.equal(result.status?.host, undefined);
        assert.deepEqual(result.jobs, []);
        const scheduled = conditionOf(result, 'Scheduled');
        assert.equal(scheduled?.status, 'False');
        assert.equal(scheduled?.reason, 'Unschedulable');
        assert.equal(scheduled?.message, c.message);
        assert.deepEqual(result.events, [
          { type: 'Warning', reason: 'FailedScheduling', message: c.message },
        ]);
        // The address is reserved all the same.
        assert.equal(result.status?.interfaces?.[0]?.ipAddress, '10.20.0.2');

        // No retry storm: nothing new to say until the Hosts change.
        const again = reconcileInstance(input(stored(subject, result), world));
        assert.deepEqual(again, { jobs: [], events: [] });
      });
    }

    it('schedules once a Host fits', () => {
      const world = { hosts: [host('hv1', { unschedulable: true })] };
      const waiting = stored(web(), reconcileInstance(input(web(), world)));
      const result = reconcileInstance(input(waiting, { hosts: [host('hv1')] }));
      assert.equal(result.status?.host, 'hv1');
      assert.equal(result.jobs.length, 1);
      assert.deepEqual(result.events, [
        { type: 'Normal', reason: 'Scheduled', message: 'scheduled to Host hv1' },
      ]);
    });
  });

  describe('addresses', () => {
    const holding = (name: string, address: string, created: number, spec: Record<string, unknown> = {}) =>
      instance(
        name,
        { networks: lab, ...spec },
        { created, status: { interfaces: [{ network: 'lab', ipAddress: address }] } },
      );
    const asking = (name: string, address: string, created: number) =>
      instance(name, { networks: [{ name: 'lab', address }] }, { created });

    const cases: {
      name: string;
      subject: Instance;
      others?: Instance[];
      networks?: ReturnType<typeof network>[];
      address?: string;
      problem?: { reason: string; message: string };
    }[] = [
      {
        name: 'the next free address, skipping the gateway, reservations and requests',
        subject: instance('web', { networks: lab }, { created: 9 }),
        others: [holding('a', '10.20.0.2', 1), asking('b', '10.20.0.3', 2)],
        address: '10.20.0.4',
      },
      {
        name: 'the address status records, stable across restarts',
        subject: holding('web', '10.20.0.77', 1),
        others: [instance('a', { networks: lab }, { created: 0 })],
        address: '10.20.0.77',
      },
      {
        name: 'a static address',
        subject: asking('web', '10.20.0.10', 1),
        address: '10.20.0.10',
      },
      {
        name: 'a static address another Instance holds: refused, the holder keeps it',
        subject: asking('web', '10.20.0.10', 1),
        others: [holding('a', '10.20.0.10', 5)],
        problem: {
          reason: 'AddressUnavailable',
          message: 'spec.networks[0].address: 10.20.0.10 is already used by Instance default/a',
        },
      },
      {
        name: 'a static address an older Instance asked for first',
        subject: asking('web', '10.20.0.10', 5),
        others: [asking('a', '10.20.0.10', 1)],
        problem: {
          reason: 'AddressUnavailable',
          message: 'spec.networks[0].address: 10.20.0.10 is already used by Instance default/a',
        },
      },
      {
        name: 'a static address a newer Instance asks for too: the older gets it',
        subject: asking('web', '10.20.0.10', 1),
        others: [asking('a', '10.20.0.10', 5)],
        address: '10.20.0.10',
      },
      {
        name: "a reservation beats an older Instance's request for the same address",
        subject: holding('web', '10.20.0.2', 5),
        others: [asking('a', '10.20.0.2', 1)],
        address: '10.20.0.2',
      },
      {
        name: 'two reservations of one address (a race): the older keeps it, the newer moves',
        subject: holding('web', '10.20.0.2', 5),
        others: [holding('a', '10.20.0.2', 1)],
        address: '10.20.0.3',
      },
      {
        name: 'other namespaces do not count',
        subject: asking('web', '10.20.0.10', 5),
        others: [
          instance(
            'a',
            { networks: lab },
            { namespace: 'other', status: { interfaces: [{ network: 'lab', ipAddress: '10.20.0.10' }] } },
          ),
        ],
        address: '10.20.0.10',
      },
      {
        name: 'a full Network',
        subject: instance('web', { networks: [{ name: 'tiny' }] }, { created: 5 }),
        networks: [network('tiny', { cidr: '10.20.0.0/29' })],
        others: [
          instance('a', { networks: [{ name: 'tiny', address: '10.20.0.2' }] }),
          instance('b', { networks: [{ name: 'tiny', address: '10.20.0.3' }] }),
        ],
        problem: {
          reason: 'NetworkFull',
          message:
            'spec.networks[0].address: no free address left in 10.20.0.0/29 outside the DHCP pool 10.20.0.4-10.20.0.6',
        },
      },
      {
        name: 'a missing Network',
        subject: instance('web', { networks: [{ name: 'lab' }, { name: 'nowhere' }] }),
        address: '10.20.0.2',
        problem: {
          reason: 'NetworkNotFound',
          message: 'spec.networks[1].name: Network default/nowhere does not exist',
        },
      },
      {
        name: 'a Network of another namespace is missing too',
        subject: web(),
        networks: [network('lab', {}, 'other')],
        problem: {
          reason: 'NetworkNotFound',
          message: 'spec.networks[0].name: Network default/lab does not exist',
        },
      },
      {
        name: 'a Network whose addresses cannot be laid out',
        subject: web(),
        networks: [network('lab', { dhcp: { rangeStart: '10.20.0.1', rangeEnd: '10.20.0.100' } })],
        problem: {
          reason: 'InvalidNetwork',
          message:
            'Network default/lab: spec.gateway: the default gateway 10.20.0.1 (the first host address) is inside the DHCP range 10.20.0.1-10.20.0.100; set spec.gateway',
        },
      },
    ];
    for (const c of cases) {
      it(c.name, () => {
        const result = reconcileInstance(
          input(c.subject, {
            instances: [c.subject, ...(c.others ?? [])],
            ...(c.networks ? { networks: c.networks } : {}),
          }),
        );
        assert.equal(result.status?.interfaces?.[0]?.ipAddress, c.address);
        if (c.problem === undefined) {
          assert.equal(result.jobs.length, 1);
          assert.equal(result.jobs[0]?.job.object.status.interfaces[0]?.ipAddress, c.address);
          return;
        }
        assert.deepEqual(result.jobs, []);
        assert.equal(result.status?.phase, 'Pending');
        const provisioned = conditionOf(result, 'Provisioned');
        assert.deepEqual(
          [provisioned?.status, provisioned?.reason, provisioned?.message],
          ['False', c.problem.reason, c.problem.message],
        );
        assert.deepEqual(result.events.at(-1), { type: 'Warning', ...c.problem });
      });
    }

    it('a MAC another Instance holds', () => {
      const mac = '52:54:00:aa:bb:cc';
      const subject = web({ networks: [{ name: 'lab', mac }] });
      const holder = instance('a', { networks: lab }, { status: { interfaces: [{ network: 'lab', mac }] } });
      const result = reconcileInstance(input(subject, { instances: [subject, holder] }));
      assert.equal(conditionOf(result, 'Provisioned')?.reason, 'MACUnavailable');
      assert.equal(
        conditionOf(result, 'Provisioned')?.message,
        'spec.networks[0].mac: 52:54:00:aa:bb:cc is already used on Network default/lab by Instance default/a',
      );
    });

    it('a spec problem on a running Instance holds the update back and keeps its reservation', () => {
      const running = converged(web());
      const subject = updated(running, { networks: [{ name: 'lab' }, { name: 'nowhere' }] });
      const result = reconcileInstance(input(subject, { observed: observedOf(running) }));
      assert.deepEqual(result.jobs, []);
      assert.equal(result.status?.phase, 'Running');
      assert.deepEqual(result.status?.interfaces, running.status?.interfaces);
      assert.equal(conditionOf(result, 'Provisioned')?.reason, 'NetworkNotFound');
      assert.equal(conditionOf(result, 'Ready')?.status, 'True');
    });

    it('releases the reservation of a Network the spec no longer attaches', () => {
      const running = converged(web());
      const result = reconcileInstance(
        input(updated(running, { networks: [] }), { observed: observedOf(running) }),
      );
      assert.equal(result.status?.interfaces, undefined);
      assert.deepEqual(result.jobs[0]?.job.object.status.interfaces, []);
    });
  });

  describe('unreachable hosts', () => {
    it('marks an Instance whose Host was deleted Unknown, and keeps it bound there', () => {
      const running = converged(web());
      const result = reconcileInstance(
        input(running, { hosts: [host('hv2')], observed: observedOf(running) }),
      );
      const message =
        'Host hv1 no longer exists; the Instance stays bound to it because its disks are local to it.';
      assert.equal(result.status?.phase, 'Unknown');
      assert.equal(result.status?.host, 'hv1');
      assert.deepEqual(result.jobs, []);
      assert.deepEqual(
        [conditionOf(result, 'HostReachable')?.status, conditionOf(result, 'HostReachable')?.reason],
        ['False', 'HostDeleted'],
      );
      assert.equal(conditionOf(result, 'HostReachable')?.message, message);
      assert.equal(conditionOf(result, 'Ready')?.status, 'Unknown');
      assert.deepEqual(result.events, [{ type: 'Warning', reason: 'HostDeleted', message }]);
    });

    it('marks an Instance whose Host stays unreachable Unknown, and never reschedules it', () => {
      const running = converged(web());
      const world = {
        hosts: [host('hv1', { ready: 'Unknown' as const }), host('hv2')],
        connectedAgents: new Set(['hv2']),
      };
      const result = reconcileInstance(input(running, { ...world, observed: observedOf(running) }));
      assert.equal(result.status?.phase, 'Unknown');
      assert.equal(result.status?.host, 'hv1');
      assert.deepEqual(result.jobs, []);
      assert.equal(
        conditionOf(result, 'HostReachable')?.message,
        'Host hv1 is not Ready (AgentDisconnected: agent disconnected and did not reconnect within 40s); ' +
          'the Instance stays bound to it because its disks are local to it.',
      );
      assert.equal(result.events[0]?.reason, 'HostNotReady');

      // Back: Running again, with nothing to apply.
      const unknown = stored(running, result);
      const back = reconcileInstance(input(unknown, { observed: observedOf(running) }));
      assert.equal(back.status?.phase, 'Running');
      assert.equal(conditionOf(back, 'HostReachable')?.status, 'True');
      assert.deepEqual(back.jobs, []);
    });
  });

  describe('deletion', () => {
    it('without our finalizer: nothing left to do', () => {
      const subject = deleted(stored(web(), { jobs: [], events: [] }));
      assert.deepEqual(reconcileInstance(input(subject)), { jobs: [], events: [] });
    });

    it('never scheduled: the finalizer goes at once', () => {
      const unscheduled = stored(web(), reconcileInstance(input(web(), { hosts: [] })));
      assert.deepEqual(reconcileInstance(input(deleted(unscheduled), { hosts: [] })), {
        finalizer: 'remove',
        jobs: [],
        events: [],
      });
    });

    it('sends instance.delete to the host, once, and keeps the reservation meanwhile', () => {
      const running = converged(web());
      const subject = deleted(running);
      const result = reconcileInstance(input(subject, { observed: observedOf(running) }));
      assert.equal(result.finalizer, undefined);
      assert.equal(result.status?.phase, 'Terminating');
      assert.deepEqual(result.status?.interfaces, running.status?.interfaces);
      assert.deepEqual(
        result.jobs.map((j) => [
          j.agent.name,
          j.job.type,
          j.job.object.metadata.uid,
          j.job.object.status.host,
        ]),
        [['hv1', 'instance.delete', running.metadata.uid, 'hv1']],
      );
      assert.deepEqual(result.events, [
        { type: 'Normal', reason: 'Deleting', message: 'deleting the domain and its disks on Host hv1' },
      ]);

      const terminating = stored(subject, result);
      const inFlight = reconcileInstance(
        input(terminating, { observed: observedOf(running), inFlight: result.jobs }),
      );
      assert.deepEqual(inFlight, { jobs: [], events: [] });
    });

    it('removes the finalizer once the agent answers that the domain and disks are gone', () => {
      const terminating = deleted(converged(web()));
      const gone = { state: 'absent' as const, deleted: true };
      assert.deepEqual(reconcileInstance(input(terminating, { observed: gone })), {
        finalizer: 'remove',
        jobs: [],
        events: [],
      });
      // Not while a job for it is still in flight: it may create the domain again.
      const apply = reconcileInstance(input(web())).jobs;
      assert.equal(reconcileInstance(input(terminating, { observed: gone, inFlight: apply })).jobs.length, 1);
    });

    it('sends instance.delete even when the inventory shows no domain: disks may remain', () => {
      const terminating = deleted(converged(web()));
      const result = reconcileInstance(input(terminating, { observed: { state: 'absent' } }));
      assert.equal(result.jobs[0]?.job.type, 'instance.delete');
      assert.equal(result.finalizer, undefined);
    });

    const force =
      ` The Instance is deleted once the agent of hv1 has removed its domain and disks; to delete it now and leave them behind, remove its finalizer: ` +
      `kubectl patch instance web -n default --type json -p '[{"op":"remove","path":"/metadata/finalizers"}]'`;
    const blocked: { name: string; world: Partial<InstanceReconcileInput>; reason: string; what: string }[] =
      [
        {
          name: 'a deleted Host',
          world: { hosts: [], connectedAgents: new Set() },
          reason: 'HostDeleted',
          what: 'Host hv1 no longer exists',
        },
        {
          name: 'an unreachable Host',
          world: { hosts: [host('hv1', { ready: 'Unknown' })], connectedAgents: new Set() },
          reason: 'HostNotReady',
          what: 'Host hv1 is not Ready (AgentDisconnected: agent disconnected and did not reconnect within 40s)',
        },
      ];
    for (const c of blocked) {
      it(`on ${c.name}: a condition and a Warning that name the way to force it, never silence`, () => {
        const running = converged(web());
        const result = reconcileInstance(
          input(deleted(running), { ...c.world, observed: observedOf(running) }),
        );
        const message = `${c.what}; the Instance stays bound to it because its disks are local to it.${force}`;
        assert.equal(result.finalizer, undefined);
        assert.deepEqual(result.jobs, []);
        assert.equal(result.status?.phase, 'Terminating');
        const reachable = conditionOf(result, 'HostReachable');
        assert.deepEqual(
          [reachable?.status, reachable?.reason, reachable?.message],
          ['False', c.reason, message],
        );
        assert.deepEqual(
          [conditionOf(result, 'Ready')?.status, conditionOf(result, 'Ready')?.reason],
          ['Unknown', 'Terminating'],
        );
        assert.deepEqual(result.events, [{ type: 'Warning', reason: c.reason, message }]);
      });
    }

    it('waits for an agent that is away but whose Host is still Ready', () => {
      const running = converged(web());
      const result = reconcileInstance(
        input(deleted(running), { connectedAgents: new Set(), observed: observedOf(running) }),
      );
      assert.deepEqual(result.jobs, []);
      assert.equal(
        conditionOf(result, 'Ready')?.message,
        'waiting for the agent of Host hv1 to reconnect to delete the domain and its disks',
      );
    });
  });
});
