/** The session with the hub double over mTLS: Hello, heartbeats, jobs, reports, reconnects, metrics, shutdown. */
import assert from 'node:assert/strict';
import { status } from '@grpc/grpc-js';
import { gate, TestDriver } from '../../agents/runtime/testing/driver.js';
import { pollUntil } from '../harness/poll.js';
import {
  AgentHubDouble,
  removeDir,
  startAgent,
  type TestAgent,
  tempDataDir,
  testConfig,
} from './hub-double.js';

const instance = (name: string) => ({
  apiVersion: 'loam.dev/v1alpha1',
  kind: 'Instance',
  metadata: { name, namespace: 'default' },
});
const ref = (name: string) => ({ kind: 'Instance', namespace: 'default', name, uid: `uid-${name}` });

describe('agent session', () => {
  let hub: AgentHubDouble;
  let dataDir: string;
  let running: TestAgent;

  // Enrolled once: every hub double shares the fixture CA, so each test's agent reuses the identity
  // (enrollment has tests of its own) and skips making a key.
  before(async () => {
    dataDir = await tempDataDir();
    const enrolling = await AgentHubDouble.start();
    const first = startAgent(testConfig(enrolling, dataDir));
    await pollUntil(() => first.agent.isConnected, { timeoutMs: 10_000, what: 'enrollment' });
    await first.agent.stop();
    enrolling.stop();
  });

  after(() => removeDir(dataDir));

  beforeEach(async () => {
    hub = await AgentHubDouble.start();
    const driver = new TestDriver();
    driver.inventoryItems = [{ ref: ref('web'), observed: { phase: 'Running' } }];
    running = startAgent(testConfig(hub, dataDir), { driver });
    await pollUntil(() => running.agent.isConnected, { timeoutMs: 10_000, what: 'the agent to connect' });
  });

  afterEach(async () => {
    await running.agent.stop();
    hub.stop();
  });

  // Heartbeats are checked where a test waits seconds anyway (rotation.test.ts).
  it('says Hello with facts, capabilities and its full inventory', async () => {
    const session = hub.sessions[0];
    assert.ok(session);
    const { hello } = session;
    assert.equal(hello.version, '0.0.0-test');
    assert.deepEqual(hello.capabilities, ['test']);
    for (const fact of ['hostname', 'arch', 'kernel', 'agentVersion', 'cpus', 'memory']) {
      assert.ok(hello.facts[fact], `fact ${fact}`);
    }
    assert.equal(hello.facts.agentVersion, '0.0.0-test');
    assert.match(hello.facts.memory ?? '', /^\d+Ki$/);
    assert.equal(hello.facts.driver, 'test');
    assert.deepEqual(
      hello.inventory.map((r) => r.ref?.name),
      ['web'],
    );
    assert.deepEqual(JSON.parse(hello.inventory[0]?.observedJson.toString() ?? ''), { phase: 'Running' });
  });

  it('reports its checks of the machine in Hello, and again at a heartbeat once they change', async () => {
    assert.deepEqual(hub.sessions[0]?.hello.conditions, []);
    const down = {
      type: 'LibvirtReachable',
      status: 'False',
      reason: 'LibvirtUnreachable',
      message: 'cannot reach libvirt',
      required: true,
    };
    running.driver.checks = [down];
    const session = hub.current;
    await pollUntil(() => (session?.conditionReports.length ?? 0) > 0, {
      timeoutMs: 5_000,
      what: 'a report of the changed checks',
    });
    assert.deepEqual(session?.conditionReports, [[down]]);
    // Unchanged checks are not sent again.
    const beats = session?.heartbeats ?? 0;
    await pollUntil(() => (session?.heartbeats ?? 0) > beats + 1, {
      timeoutMs: 5_000,
      what: 'two heartbeats',
    });
    assert.equal(session?.conditionReports.length, 1);
  });

  it('runs a job and reports its result and observed state', async () => {
    hub.dispatch({ id: 'j1', object: instance('web') });
    const result = await hub.result('j1');
    assert.equal(result.code, status.OK);
    assert.deepEqual(JSON.parse(result.observedJson.toString()), { handled: 'web' });
    assert.equal(running.driver.jobs[0]?.key, 'Instance/default/web');
    assert.equal(running.driver.jobs[0]?.type, 'instance.apply');
  });

  it('runs jobs for one resource one at a time and for different resources in parallel', async () => {
    const gates = new Map(['a1', 'a2', 'b1'].map((id) => [id, gate()]));
    running.driver.respond = async (job) => {
      await gates.get(job.id)?.promise;
      return { code: status.OK };
    };
    hub.dispatch({ id: 'a1', object: instance('a') });
    hub.dispatch({ id: 'a2', object: instance('a') });
    hub.dispatch({ id: 'b1', object: instance('b') });
    const { driver } = running;
    await pollUntil(() => driver.running.has('a1') && driver.running.has('b1'), {
      timeoutMs: 5_000,
      what: 'a1 and b1 to run together',
    });
    assert.equal(driver.running.has('a2'), false, 'a2 waits for a1');
    gates.get('a1')?.open();
    await pollUntil(() => driver.running.has('a2'), { timeoutMs: 5_000, what: 'a2 to start after a1' });
    gates.get('a2')?.open();
    gates.get('b1')?.open();
    await Promise.all(['a1', 'a2', 'b1'].map((id) => hub.result(id)));
    assert.ok(driver.log.indexOf('end a1') < driver.log.indexOf('start a2'));
    assert.equal(driver.maxRunning, 2);
  });

  it('answers DEADLINE_EXCEEDED for a job past its deadline, whether it ran or not', async () => {
    hub.dispatch({ id: 'late', object: instance('a'), deadline: new Date(Date.now() - 1000) });
    assert.equal((await hub.result('late')).code, status.DEADLINE_EXCEEDED);
    assert.equal(running.driver.jobs.length, 0, 'a job already late is not run');

    let aborted = false;
    running.driver.respond = async (_job, signal) => {
      await new Promise((resolve) => signal.addEventListener('abort', resolve));
      aborted = true;
      return { code: status.OK };
    };
    hub.dispatch({ id: 'slow', object: instance('a'), deadline: new Date(Date.now() + 300) });
    const result = await hub.result('slow');
    assert.equal(result.code, status.DEADLINE_EXCEEDED);
    assert.equal(aborted, true);
  });

  it('turns a driver exception into an INTERNAL result and keeps the session', async () => {
    running.driver.respond = () => {
      throw new Error('disk full');
    };
    hub.dispatch({ id: 'boom', object: instance('a') });
    const result = await hub.result('boom');
    assert.equal(result.code, status.INTERNAL);
    assert.match(result.message, /disk full/);
    assert.equal(running.agent.isConnected, true);
    assert.equal(hub.sessions.length, 1);
  });

  it('answers INVALID_ARGUMENT for a job whose object it cannot read', async () => {
    hub.dispatch({ id: 'bad', object: { metadata: {} } });
    assert.equal((await hub.result('bad')).code, status.INVALID_ARGUMENT);
  });

  it("passes the driver's inventory changes and lifecycle events to the hub", async () => {
    const events = running.driver.events;
    assert.ok(events);
    events.inventoryChanged({
      upserted: [{ ref: ref('db'), observed: { phase: 'Stopped' } }],
      removed: [ref('web')],
    });
    events.lifecycle({ resource: ref('db'), type: 'Warning', reason: 'Crashed', message: 'qemu exited' });
    const session = hub.sessions[0];
    assert.ok(session);
    await pollUntil(() => session.inventoryChanges.length === 1 && session.lifecycleEvents.length === 1, {
      timeoutMs: 5_000,
      what: 'the reports',
    });
    assert.equal(session.inventoryChanges[0]?.upserted[0]?.ref?.name, 'db');
    assert.equal(session.inventoryChanges[0]?.removed[0]?.name, 'web');
    assert.equal(session.lifecycleEvents[0]?.reason, 'Crashed');
    assert.ok(session.lifecycleEvents[0]?.time instanceof Date);
  });

  it('reconnects after the hub restarts, with its full inventory, and drops results of the old session', async () => {
    const hold = gate();
    running.driver.respond = async () => {
      await hold.promise;
      return { code: status.OK };
    };
    hub.dispatch({ id: 'across', object: instance('a') });
    await pollUntil(() => running.driver.running.has('across'), {
      timeoutMs: 5_000,
      what: 'the job to start',
    });
    running.driver.inventoryItems = [{ ref: ref('web') }, { ref: ref('db') }];

    await hub.restart();
    await pollUntil(() => hub.sessions.length === 2, { timeoutMs: 10_000, what: 'a new session' });
    assert.deepEqual(
      hub.sessions[1]?.hello.inventory.map((r) => r.ref?.name),
      ['web', 'db'],
    );
    assert.equal(hub.enrollments.length, 0, 'no new enrollment');

    hold.open();
    await pollUntil(() => !running.driver.running.has('across'), {
      timeoutMs: 5_000,
      what: 'the job to end',
    });
    hub.dispatch({ id: 'after', object: instance('a') });
    await hub.result('after');
    assert.equal(hub.findResult('across'), undefined, 'the hub re-dispatches instead');
  });

  it('serves /metrics and /healthz, which follows the session', async () => {
    hub.dispatch({ id: 'm1', object: instance('a') });
    await hub.result('m1');
    const url = running.agent.metricsUrl;
    assert.ok(url);
    const health = await fetch(`${url}/healthz`);
    assert.equal(health.status, 200);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    assert.match(metrics, /^loam_agent_session_connected 1$/m);
    assert.match(metrics, /^loam_agent_jobs_total\{type="instance.apply",result="OK"\} 1$/m);
    assert.match(metrics, /^loam_agent_job_duration_seconds_count\{type="instance.apply"\} 1$/m);
    assert.match(metrics, /^loam_test_driver_jobs \d+$/m, "the driver's own metrics");
    const expiry = Number(/^loam_agent_certificate_expiry_timestamp_seconds (\S+)$/m.exec(metrics)?.[1]);
    assert.ok(expiry > Date.now() / 1000, 'the certificate expires in the future');

    hub.stop();
    await pollUntil(async () => (await fetch(`${url}/healthz`)).status === 503, {
      timeoutMs: 5_000,
      what: '/healthz to fail',
    });
    assert.match(await (await fetch(`${url}/metrics`)).text(), /^loam_agent_session_connected 0$/m);
  });

  it('opens a byte stream the hub asks for, tagged with its session id', async () => {
    const session = hub.current;
    assert.ok(session);
    session.call.write({
      message: {
        $case: 'streamRequest',
        value: { sessionId: 'console-1', kind: 'console', resource: ref('web') },
      },
    });
    await pollUntil(() => hub.streams.length === 1, { timeoutMs: 5_000, what: 'the OpenStream call' });
    const stream = hub.streams[0];
    assert.equal(stream?.sessionId, 'console-1');
    const local = running.driver.streams[0];
    assert.equal(local?.request.kind, 'console');
    // The test driver echoes: what the hub writes comes back.
    stream?.call.write({ data: Buffer.from('login: ') });
    await pollUntil(() => Buffer.concat(stream?.received ?? []).toString() === 'login: ', {
      timeoutMs: 5_000,
      what: 'the echo',
    });
    // The console closes on the agent's side: the hub sees the stream end.
    local?.local.end();
    await pollUntil(() => stream?.ended === true, { timeoutMs: 5_000, what: 'the stream to close' });
  });

  it('on stop lets the running job finish and report, then closes the session', async () => {
    const hold = gate();
    running.driver.respond = async () => {
      await hold.promise;
      return { code: status.OK };
    };
    hub.dispatch({ id: 'last', object: instance('a') });
    await pollUntil(() => running.driver.running.has('last'), { timeoutMs: 5_000, what: 'the job to start' });
    const stopped = running.agent.stop();
    hold.open();
    await stopped;
    await running.done;
    assert.equal(hub.findResult('last')?.code, status.OK);
    await pollUntil(() => hub.sessions[0]?.endedBy !== undefined, {
      timeoutMs: 5_000,
      what: 'the session to end',
    });
    assert.equal(hub.sessions[0]?.endedBy, 'agent');
  });
});
