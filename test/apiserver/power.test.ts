/**
 * What an Instance's start/stop/reboot/reset subresources do: the pure plan per run strategy and
 * phase, and the shell over the embedded store with a hub double (test/e2e/power.test.ts runs
 * the whole path to libvirt's test driver).
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { status as grpcStatus } from '@grpc/grpc-js';
import { type JobHub, performAction, planAction } from '../../controllers/apiserver/power.js';
import { defaultWrite, Resources } from '../../controllers/apiserver/resources.js';
import type { ResourceRequest } from '../../controllers/apiserver/routing.js';
import { openStore } from '../../controllers/storage/index.js';
import type { Store } from '../../controllers/storage/store.js';
import { namespaceKind } from '../../crds/builtin.js';
import { type ErrorCode, isLoamError } from '../../crds/errors.js';
import type { ActionSubresource } from '../../crds/kind.js';
import { type Instance, instanceKind } from '../../crds/v1alpha1/index.js';
import { tempDir } from '../harness/plane.js';
import { pollUntil } from '../harness/poll.js';

type Strategy = Instance['spec']['runStrategy'];

function instanceOf(runStrategy: Strategy, phase?: string, host?: string): Instance {
  return {
    apiVersion: 'loam.dev/v1alpha1',
    kind: 'Instance',
    metadata: { name: 'web', namespace: 'default' },
    spec: { runStrategy } as Instance['spec'],
    ...(phase ? { status: { phase, ...(host ? { host } : {}) } as Instance['status'] } : {}),
  };
}

describe('apiserver/power', () => {
  describe('planAction', () => {
    const table: [ActionSubresource, Strategy, string | undefined, string | undefined, unknown][] = [
      ['start', 'Halted', 'Stopped', 'hv1', { runStrategy: 'Always' }],
      ['start', 'Manual', 'Stopped', 'hv1', { job: 'start', host: 'hv1' }],
      ['start', 'RerunOnFailure', 'Stopped', 'hv1', { job: 'start', host: 'hv1' }],
      ['start', 'Always', 'Running', 'hv1', /runStrategy Always keeps the Instance running already/],
      ['start', 'Manual', 'Running', 'hv1', /the Instance is running already/],
      ['start', 'Manual', undefined, undefined, /not scheduled to a Host \(phase Pending\)/],
      ['stop', 'Always', 'Running', 'hv1', { runStrategy: 'Halted' }],
      ['stop', 'RerunOnFailure', 'Running', 'hv1', { runStrategy: 'Halted' }],
      ['stop', 'Manual', 'Running', 'hv1', { job: 'stop', host: 'hv1' }],
      ['stop', 'Manual', 'Stopped', 'hv1', /not running on Host hv1 \(phase Stopped\)/],
      ['stop', 'Halted', 'Stopped', 'hv1', /runStrategy Halted keeps the Instance stopped already/],
      ['reboot', 'Always', 'Running', 'hv1', { job: 'reboot', host: 'hv1' }],
      ['reboot', 'Always', 'Unknown', 'hv1', { job: 'reboot', host: 'hv1' }],
      ['reboot', 'Halted', 'Stopped', 'hv1', /not running on Host hv1/],
      ['reset', 'Manual', 'Running', 'hv2', { job: 'reset', host: 'hv2' }],
      ['reset', 'Always', 'Scheduling', undefined, /not scheduled to a Host \(phase Scheduling\)/],
    ];
    for (const [action, strategy, phase, host, expected] of table) {
      const title = `${action}, ${strategy}, ${phase ?? 'no phase'}: ${
        expected instanceof RegExp ? 'Conflict' : JSON.stringify(expected)
      }`;
      it(title, () => {
        const run = () => planAction(instanceKind, instanceOf(strategy, phase, host), action);
        if (expected instanceof RegExp) {
          assert.throws(run, (err) => {
            assert.ok(isLoamError(err, 'Conflict'));
            assert.match(err.message, /^Operation cannot be fulfilled on instances\.loam\.dev "web": /);
            assert.match(err.message, expected);
            return true;
          });
        } else {
          const { message: _, ...plan } = run() as { message?: string };
          assert.deepEqual(plan, expected);
        }
      });
    }

    it('refuses anything while the Instance is being deleted', () => {
      const going = instanceOf('Always', 'Running', 'hv1');
      going.metadata.deletionTimestamp = '2026-12-04T00:00:00Z';
      assert.throws(
        () => planAction(instanceKind, going, 'reboot'),
        (err) => isLoamError(err, 'Conflict') && /being deleted/.test(err.message),
      );
    });
  });

  describe('performAction', () => {
    let dir: string;
    let store: Store;
    let resources: Resources;
    const sent: Parameters<JobHub['dispatch']>[] = [];
    let answer: { code: number; message: string } = { code: grpcStatus.OK, message: '' };
    const hub: JobHub = {
      dispatch: async (...args) => {
        sent.push(args);
        return { jobId: 'j', ...answer, observedJson: Buffer.alloc(0) };
      },
    };
    const route = (name: string, subresource: ActionSubresource) =>
      ({
        type: 'resource',
        kind: instanceKind,
        verb: 'update',
        namespace: 'default',
        name,
        subresource,
      }) as ResourceRequest & { subresource: ActionSubresource };
    const perform = (name: string, action: ActionSubresource, hubHere: JobHub | null = hub) =>
      performAction(route(name, action), resources, hubHere ?? undefined, defaultWrite());
    const get = async (name: string) =>
      (await resources.get({
        type: 'resource',
        kind: instanceKind,
        verb: 'get',
        namespace: 'default',
        name,
      })) as unknown as Instance;

    /** An Instance `name` under `runStrategy` with `status`; resolves to its uid. */
    async function instance(name: string, runStrategy: Strategy, status?: Record<string, unknown>) {
      const created = await resources.create(
        { type: 'resource', kind: instanceKind, verb: 'create', namespace: 'default' },
        {
          apiVersion: 'loam.dev/v1alpha1',
          kind: 'Instance',
          metadata: { name },
          spec: { runStrategy, kernel: { url: 'http://127.0.0.1:1/k', sha256: 'a'.repeat(64) } },
        },
      );
      if (status !== undefined) {
        await resources.update(
          {
            type: 'resource',
            kind: instanceKind,
            verb: 'update',
            namespace: 'default',
            name,
            subresource: 'status',
          },
          { ...created, status },
        );
      }
      return created.metadata.uid as string;
    }

    const refuses = (promise: Promise<unknown>, code: ErrorCode, message: RegExp) =>
      assert.rejects(promise, (err) => {
        assert.ok(isLoamError(err, code), `${code} expected: ${err}`);
        assert.match(err.message, message);
        return true;
      });

    before(async () => {
      dir = tempDir('apiserver-power');
      store = openStore({ backend: 'sqlite', path: join(dir, 'loam.db') });
      resources = new Resources(store);
      await resources.create(
        { type: 'resource', kind: namespaceKind, verb: 'create' },
        { metadata: { name: 'default' } },
      );
    });

    beforeEach(() => {
      sent.length = 0;
      answer = { code: grpcStatus.OK, message: '' };
    });

    after(async () => {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    });

    it("sends a reboot to the Host's libvirt agent and answers Success", async () => {
      const uid = await instance('web', 'Always', { phase: 'Running', host: 'hv1' });
      const status = (await perform('web', 'reboot')) as { status: string; message: string };
      assert.equal(status.status, 'Success');
      assert.equal(status.message, 'default/web: reboot done on Host hv1');
      assert.equal(sent.length, 1);
      const [agent, job] = sent[0] ?? [];
      assert.deepEqual(agent, { role: 'libvirt', name: 'hv1' });
      assert.equal(job?.type, 'instance.power');
      assert.deepEqual(job?.object, {
        apiVersion: 'loam.dev/v1alpha1',
        kind: 'Instance',
        metadata: { namespace: 'default', name: 'web', uid },
        action: 'reboot',
      });
    });

    it('stop and start under Always change spec.runStrategy, and send nothing', async () => {
      await instance('db', 'Always', { phase: 'Running', host: 'hv1' });
      const before = await get('db');
      const stopped = (await perform('db', 'stop')) as { message: string };
      assert.equal(stopped.message, 'default/db: spec.runStrategy changed from Always to Halted');
      const after = await get('db');
      assert.equal(after.spec.runStrategy, 'Halted');
      assert.equal(after.metadata.generation, (before.metadata.generation ?? 0) + 1);
      await refuses(
        perform('db', 'stop'),
        'Conflict',
        /runStrategy Halted keeps the Instance stopped already/,
      );
      await perform('db', 'start');
      assert.equal((await get('db')).spec.runStrategy, 'Always');
      assert.equal(sent.length, 0);
    });

    it('start and stop under Manual go to the agent', async () => {
      await instance('manual', 'Manual', { phase: 'Stopped', host: 'hv2' });
      await perform('manual', 'start');
      await refuses(perform('manual', 'stop'), 'Conflict', /not running on Host hv2 \(phase Stopped\)/);
      assert.deepEqual(
        sent.map(([agent, job]) => [agent.name, (job.object as { action: string }).action]),
        [['hv2', 'start']],
      );
      assert.equal((await get('manual')).spec.runStrategy, 'Manual');
    });

    it("passes the agent's refusals on: a missing domain is a Conflict, others keep their code", async () => {
      await instance('gone', 'Always', { phase: 'Running', host: 'hv1' });
      answer = { code: grpcStatus.NOT_FOUND, message: 'no domain to reset: apply the Instance first' };
      await refuses(
        perform('gone', 'reset'),
        'Conflict',
        /"gone": Host hv1 has no domain for it: no domain to reset: apply the Instance first$/,
      );
      answer = { code: grpcStatus.UNAVAILABLE, message: 'libvirt does not answer' };
      await refuses(
        perform('gone', 'reset'),
        'Unavailable',
        /^Host hv1 could not reset it: libvirt does not answer$/,
      );
      answer = {
        code: grpcStatus.ABORTED,
        message: 'domain loam.default.gone is not running (it is shutoff)',
      };
      await refuses(
        perform('gone', 'reset'),
        'Conflict',
        /"gone": Host hv1 could not reset it: domain .* is not running/,
      );
      // What failed inside the agent stays in its log.
      answer = { code: grpcStatus.INTERNAL, message: 'driver failed: /var/lib/loam-libvirt/… exploded' };
      await refuses(
        perform('gone', 'reset'),
        'Internal',
        /^Host hv1 could not reset it: the agent failed \(its log says why\)$/,
      );
      answer = { code: grpcStatus.UNIMPLEMENTED, message: 'the driver does not run instance.power' };
      await refuses(perform('gone', 'reset'), 'Unavailable', /agent of Host hv1 does not run power actions/);
    });

    it('runs one action at a time per Instance: another meanwhile is a Conflict', async () => {
      await instance('busy', 'Manual', { phase: 'Running', host: 'hv1' });
      let release = () => {};
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      const held: JobHub = {
        dispatch: async (...args) => {
          sent.push(args);
          await gate; // the agent answers once the test lets it
          return { jobId: 'j', code: grpcStatus.OK, message: '', observedJson: Buffer.alloc(0) };
        },
      };
      const first = perform('busy', 'stop', held);
      await pollUntil(() => sent.length === 1, { timeoutMs: 5_000, what: 'the stop at the agent' });
      await refuses(perform('busy', 'reset', held), 'Conflict', /another power action on it is in progress/);
      release();
      await first;
      await perform('busy', 'reset', held).then(() => undefined, assert.fail);
      assert.equal(sent.length, 2);
    });

    it('with dryRun, checks and answers but neither sends nor stores anything', async () => {
      await instance('dry', 'Always', { phase: 'Running', host: 'hv1' });
      const dry = (action: ActionSubresource) =>
        performAction(route('dry', action), resources, undefined, {
          ...defaultWrite(),
          dryRun: true,
        }) as Promise<{
          message: string;
        }>;
      assert.equal((await dry('reset')).message, 'default/dry: reset on Host hv1 (dry run: not done)');
      assert.equal(
        (await dry('stop')).message,
        'default/dry: spec.runStrategy changed from Always to Halted (dry run: not stored)',
      );
      assert.equal((await get('dry')).spec.runStrategy, 'Always');
      assert.equal(sent.length, 0);
    });

    it('refuses: no Instance (404), not running (409), no hub here (503)', async () => {
      await refuses(perform('nope', 'reboot'), 'NotFound', /^instances\.loam\.dev "nope" not found$/);
      await instance('new', 'Always');
      await refuses(perform('new', 'reboot'), 'Conflict', /not scheduled to a Host \(phase Pending\)$/);
      await refuses(perform('web', 'reset', null), 'Unavailable', /does not run the agent hub now/);
      assert.equal(sent.length, 0);
    });
  });
});
