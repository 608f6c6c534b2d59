/** The job executor on its own: ordering per resource, the concurrency bound, deadlines, failures. */
import assert from 'node:assert/strict';
import { status } from '@grpc/grpc-js';
import type { AgentJob, JobOutcome } from '../../agents/runtime/driver.js';
import { JobExecutor, type JobHandler, parseJob } from '../../agents/runtime/executor.js';
import { gate } from '../../agents/runtime/testing/driver.js';
import { LoamError } from '../../crds/errors.js';
import type { Job, JobResult } from '../../proto/gen/loam/agent/v1/agent.js';
import { pollUntil } from '../harness/poll.js';

function job(id: string, name: string, extra: Partial<Job> = {}): Job {
  const object = { kind: 'Instance', metadata: { name, namespace: 'default' } };
  return { id, type: 'instance.apply', objectJson: Buffer.from(JSON.stringify(object)), ...extra };
}

// Lets the promise callbacks queued by a settled job (its finally, the next start) run.
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** An executor whose jobs each wait until the test releases them. */
function heldExecutor(concurrency: number) {
  const started: string[] = [];
  const held = new Map<string, (outcome: JobOutcome) => void>();
  const results = new Map<string, JobResult>();
  const handler: JobHandler = (agentJob) => {
    started.push(agentJob.id);
    const { promise, open } = gate<JobOutcome>();
    held.set(agentJob.id, open);
    return promise;
  };
  const executor = new JobExecutor({ handler, concurrency });
  const session = new AbortController();
  return {
    executor,
    started,
    results,
    session,
    submit: (j: Job) => executor.submit(j, session.signal, (result) => results.set(result.jobId, result)),
    release: async (id: string) => {
      held.get(id)?.({ code: status.OK });
      await settle();
    },
  };
}

describe('job executor', () => {
  const orderingCases: {
    name: string;
    concurrency: number;
    /** The resource of jobs 1, 2, 3 … */
    resources: string[];
    firstWave: string[];
    /** Start order when each running job is released oldest first. */
    order: string[];
  }[] = [
    {
      name: 'one resource runs one job at a time',
      concurrency: 4,
      resources: ['a', 'a', 'a'],
      firstWave: ['1'],
      order: ['1', '2', '3'],
    },
    {
      name: 'different resources run together',
      concurrency: 4,
      resources: ['a', 'b', 'c'],
      firstWave: ['1', '2', '3'],
      order: ['1', '2', '3'],
    },
    {
      name: 'the bound holds across resources',
      concurrency: 2,
      resources: ['a', 'b', 'c'],
      firstWave: ['1', '2'],
      order: ['1', '2', '3'],
    },
    {
      name: 'a busy resource does not hold up others',
      concurrency: 2,
      resources: ['a', 'a', 'b'],
      firstWave: ['1', '3'],
      order: ['1', '3', '2'],
    },
    {
      name: 'a freed slot goes to the oldest runnable job',
      concurrency: 1,
      resources: ['a', 'b', 'a', 'c'],
      firstWave: ['1'],
      order: ['1', '2', '3', '4'],
    },
  ];
  for (const c of orderingCases) {
    it(`orders jobs: ${c.name}`, async () => {
      const run = heldExecutor(c.concurrency);
      for (const [i, resource] of c.resources.entries()) run.submit(job(String(i + 1), resource));
      assert.deepEqual(run.started, c.firstWave);
      for (let i = 0; i < c.order.length; i++) await run.release(run.started[i] as string);
      assert.deepEqual(run.started, c.order);
      assert.equal(run.results.size, c.resources.length);
      assert.equal(run.executor.size, 0);
    });
  }

  it('keys jobs by kind, namespace and name', () => {
    const parsed = parseJob(job('1', 'web')) as AgentJob;
    assert.equal(parsed.key, 'Instance/default/web');
    const cluster = parseJob({
      ...job('2', 'x'),
      objectJson: Buffer.from('{"kind":"Host","metadata":{"name":"hv1"}}'),
    });
    assert.equal((cluster as AgentJob).key, 'Host//hv1');
  });

  const badObjects: [string, string][] = [
    ['not JSON', '{'],
    ['no kind', '{"metadata":{"name":"a"}}'],
    ['no name', '{"kind":"Instance","metadata":{}}'],
  ];
  for (const [name, json] of badObjects) {
    it(`answers INVALID_ARGUMENT without running a job whose object has ${name}`, () => {
      const run = heldExecutor(1);
      run.submit({ ...job('1', 'a'), objectJson: Buffer.from(json) });
      assert.equal(run.results.get('1')?.code, status.INVALID_ARGUMENT);
      assert.deepEqual(run.started, []);
    });
  }

  it('answers DEADLINE_EXCEEDED without running a job whose deadline passed while it queued', async () => {
    const run = heldExecutor(1);
    run.submit(job('1', 'a'));
    run.submit(job('2', 'b', { deadline: new Date(Date.now() - 1) }));
    await run.release('1');
    assert.deepEqual(run.started, ['1']);
    assert.equal(run.results.get('2')?.code, status.DEADLINE_EXCEEDED);
    assert.match(run.results.get('2')?.message ?? '', /before the job could start/);
  });

  it('answers DEADLINE_EXCEEDED at the deadline, aborts the driver, and keeps the resource busy until it returns', async () => {
    const results = new Map<string, JobResult>();
    const finish = gate();
    let aborted = false;
    const started: string[] = [];
    const executor = new JobExecutor({
      concurrency: 4,
      handler: async (agentJob, signal) => {
        started.push(agentJob.id);
        if (agentJob.id === '1') {
          await new Promise((resolve) => signal.addEventListener('abort', resolve));
          aborted = true;
          await finish.promise;
        }
        return { code: status.OK };
      },
    });
    const session = new AbortController().signal;
    const deliver = (result: JobResult) => results.set(result.jobId, result);
    executor.submit(job('1', 'a', { deadline: new Date(Date.now() + 100) }), session, deliver);
    executor.submit(job('2', 'a'), session, deliver);
    await pollUntil(() => results.has('1'), {
      timeoutMs: 5_000,
      intervalMs: 10,
      what: 'the result of job 1',
    });
    assert.equal(results.get('1')?.code, status.DEADLINE_EXCEEDED);
    assert.match(results.get('1')?.message ?? '', /passed while the job ran/);
    assert.equal(aborted, true);
    assert.deepEqual(started, ['1'], 'the next job for the resource waits for the driver');
    finish.open();
    await settle();
    assert.deepEqual(started, ['1', '2']);
    assert.equal(results.get('1')?.code, status.DEADLINE_EXCEEDED, 'one result per job');
  });

  const failures: { name: string; handler: JobHandler; code: status; message: RegExp }[] = [
    {
      name: 'an exception becomes INTERNAL',
      handler: async () => {
        throw new Error('virsh exploded');
      },
      code: status.INTERNAL,
      message: /driver failed: virsh exploded/,
    },
    {
      name: 'a LoamError keeps its code',
      handler: async () => {
        throw new LoamError('NotFound', 'no such base image');
      },
      code: status.NOT_FOUND,
      message: /no such base image/,
    },
    {
      name: 'an outcome without a code becomes INTERNAL',
      handler: async () => ({}) as JobOutcome,
      code: status.INTERNAL,
      message: /no outcome with a gRPC code/,
    },
    {
      name: 'an observed state JSON cannot express becomes INTERNAL',
      handler: async () => ({ code: status.OK, observed: { big: 1n } }),
      code: status.INTERNAL,
      message: /observed state is not JSON/,
    },
  ];
  for (const f of failures) {
    it(`reports driver failures: ${f.name}`, async () => {
      let result: JobResult | undefined;
      const executor = new JobExecutor({ handler: f.handler, concurrency: 1 });
      executor.submit(job('1', 'a'), new AbortController().signal, (r) => {
        result = r;
      });
      await settle();
      assert.equal(result?.code, f.code);
      assert.match(result?.message ?? '', f.message);
    });
  }

  it('serialises the observed state as JSON', async () => {
    let result: JobResult | undefined;
    const executor = new JobExecutor({
      handler: async () => ({ code: status.OK, observed: { phase: 'Running' } }),
      concurrency: 1,
    });
    executor.submit(job('1', 'a'), new AbortController().signal, (r) => {
      result = r;
    });
    await settle();
    assert.deepEqual(JSON.parse(result?.observedJson.toString() ?? ''), { phase: 'Running' });
  });

  it('drops the queued jobs of a session that ended, unrun', async () => {
    const run = heldExecutor(1);
    run.submit(job('1', 'a'));
    run.submit(job('2', 'a'));
    run.session.abort();
    await run.release('1');
    assert.deepEqual(run.started, ['1']);
    assert.equal(run.results.has('2'), false);
    assert.equal(run.executor.size, 0);
  });

  it('on close answers queued and new jobs UNAVAILABLE and waits for the running ones', async () => {
    const run = heldExecutor(1);
    run.submit(job('1', 'a'));
    run.submit(job('2', 'b'));
    const closed = run.executor.close(5_000);
    assert.equal(run.results.get('2')?.code, status.UNAVAILABLE);
    run.submit(job('3', 'c'));
    assert.equal(run.results.get('3')?.code, status.UNAVAILABLE);
    await run.release('1');
    assert.equal(await closed, true);
    assert.equal(run.results.get('1')?.code, status.OK);
  });

  it('gives up waiting for running jobs after the close timeout', async () => {
    const run = heldExecutor(1);
    run.submit(job('1', 'a'));
    assert.equal(await run.executor.close(20), false);
  });
});
