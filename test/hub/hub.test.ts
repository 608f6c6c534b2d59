/**
 * The agent hub end to end, as agents use it: real gRPC over TLS on loopback against `up()`,
 * enrollment with a bootstrap token, mTLS sessions, Host and Router status, Leases, jobs.
 */
import assert from 'node:assert/strict';
import { createPublicKey, X509Certificate } from 'node:crypto';
import { hostname } from 'node:os';
import { makeClientConstructor, status as Status } from '@grpc/grpc-js';
import type { V1Lease } from '@kubernetes/client-node';
import { service as healthService } from 'grpc-health-check';
import { pino } from 'pino';
import type { HubEvents } from '../../controllers/hub/hub.js';
import type { AgentObject } from '../../controllers/hub/objects.js';
import { createCertificateSigningRequest, generateKeyPair } from '../../controllers/pki/certificates.js';
import { AgentState } from '../../controllers/runtime/agent-state.js';
import { advertisedAgentAddress } from '../../controllers/up.js';
import { isLoamError } from '../../crds/errors.js';
import { getCondition } from '../../crds/meta.js';
import { apiClient } from '../harness/https.js';
import { pollUntil } from '../harness/poll.js';
import {
  type AgentCredentials,
  agentServiceClient,
  answerOk,
  defaultHello,
  enroll,
  sharedKeys,
  TestSession,
  tlsCredentials,
} from './agent-client.js';
import { type HubPlane, startHubPlane } from './fixture.js';

const graceSeconds = 1;
const maxInflight = 4;

function ready(object: AgentObject | undefined) {
  return getCondition(object?.status?.conditions, 'Ready');
}

const soon = (ms = 5_000) => new Date(Date.now() + ms);

describe('advertisedAgentAddress', () => {
  const rows: [string, string[], string][] = [
    ['127.0.0.1:7443', [], '127.0.0.1:7443'],
    ['[::1]:7443', [], '[::1]:7443'],
    ['0.0.0.0:7443', ['hub.example.org'], 'hub.example.org:7443'],
    ['[::]:7443', ['2001:db8::1'], '[2001:db8::1]:7443'],
    ['0.0.0.0:7443', [], `${hostname()}:7443`],
  ];
  for (const [listening, tlsSans, advertised] of rows) {
    it(`advertises ${listening} with SANs [${tlsSans}] as ${advertised}`, () => {
      assert.equal(advertisedAgentAddress(listening, { tlsSans }), advertised);
    });
  }
});

describe('agent hub', function () {
  this.timeout(60_000);
  let hub: HubPlane;

  before(async () => {
    hub = await startHubPlane('hub', {
      disconnectGraceSeconds: graceSeconds,
      heartbeatIntervalSeconds: 1,
      maxInflightJobsPerAgent: maxInflight,
    });
  });
  after(async () => {
    await hub?.stop();
  });

  const enrolled = async (name: string, role: 'libvirt' | 'network' = 'libvirt') =>
    enroll(hub.address, hub.caPem, { token: await hub.token({ role }), name, role, keys: sharedKeys });

  const waitReady = (name: string, status: string, role: 'libvirt' | 'network' = 'libvirt') =>
    pollUntil(async () => ready(await hub.object(name, role))?.status === status, {
      timeoutMs: 10_000,
      what: `${name} Ready=${status}`,
    });

  it('enrolls: token, certificate, mTLS session, Host Ready with facts, Lease; Unknown after the grace period; Ready again on reconnect', async () => {
    const token = await hub.token({ role: 'libvirt' });
    const agent = await enroll(hub.address, hub.caPem, { token, name: 'hv1' });
    const session = TestSession.open(hub.address, agent);
    await session.welcomed();
    await waitReady('hv1', 'True');

    const host = await hub.object('hv1');
    const uid = host?.metadata?.uid;
    assert.equal(new X509Certificate(agent.certPem).subject, `CN=hv1\nO=libvirt\nOU=${uid}`);
    assert.deepEqual(host?.status?.facts, {
      hostname: 'test-host',
      arch: 'x86_64',
      domainType: 'qemu',
      agentVersion: '0.1.0-test',
    });
    assert.deepEqual(host?.status?.capacity, { cpus: 4, memory: '8Gi' });
    assert.equal(ready(host)?.reason, 'AgentConnected');
    assert.ok(host?.status?.heartbeatTime);

    const leaseRef = {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: 'loam-agent-libvirt-hv1', namespace: 'kube-system' },
    };
    const lease = await hub.api.read<V1Lease>(leaseRef);
    assert.equal(lease.spec?.holderIdentity, 'hv1');
    assert.equal(lease.spec?.leaseDurationSeconds, graceSeconds);
    const firstRenewal = String(lease.spec?.renewTime);
    session.send({ message: { $case: 'heartbeat', value: { time: new Date() } } });
    await pollUntil(
      async () => String((await hub.api.read<V1Lease>(leaseRef)).spec?.renewTime) !== firstRenewal,
      { timeoutMs: 10_000, what: 'the heartbeat to renew the Lease' },
    );

    const droppedAt = Date.now();
    session.cancel();
    await waitReady('hv1', 'Unknown');
    assert.ok(Date.now() - droppedAt >= graceSeconds * 1000 - 100, 'Unknown only after the grace period');
    assert.equal(ready(await hub.object('hv1'))?.reason, 'AgentDisconnected');

    const again = TestSession.open(hub.address, agent);
    await again.welcomed();
    await waitReady('hv1', 'True');
    assert.equal((await hub.object('hv1'))?.metadata?.uid, uid, 'the same Host');
    const hosts = await hub.api.list<AgentObject>('loam.dev/v1alpha1', 'Host');
    assert.equal(hosts.items.filter((h) => h.metadata?.name === 'hv1').length, 1);
    assert.equal((await again.end()).code, Status.OK);
  });

  it('enrolls a network agent as a Router (driver linux) with a token for any role', async () => {
    const token = await hub.token();
    const agent = await enroll(hub.address, hub.caPem, {
      token,
      name: 'rt1',
      role: 'network',
      keys: sharedKeys,
    });
    const session = TestSession.open(hub.address, agent);
    await session.welcomed();
    await waitReady('rt1', 'True', 'network');
    const router = await hub.object('rt1', 'network');
    assert.equal(router?.spec?.driver, 'linux');
    assert.deepEqual(router?.status?.facts, { hostname: 'test-host', agentVersion: '0.1.0-test' });
    await session.end();
  });

  it('renews a certificate for a new key with the same subject', async () => {
    const agent = await enrolled('renewer');
    const keys = generateKeyPair();
    const client = agentServiceClient(hub.address, hub.caPem, {
      keyPem: agent.keys.privateKeyPem,
      certPem: agent.certPem,
    });
    const renewed = await new Promise<string>((resolve, reject) =>
      client.renewCertificate({ csrPem: createCertificateSigningRequest(keys, 'renewer') }, (err, res) =>
        err ? reject(err) : resolve(res.certificatePem),
      ),
    );
    client.close();
    const [before, after] = [agent.certPem, renewed].map((pem) => new X509Certificate(pem));
    assert.equal(after?.subject, before?.subject);
    assert.ok(after?.publicKey.equals(createPublicKey(keys.publicKeyPem)), 'for the new key');
    assert.notEqual(after?.serialNumber, before?.serialNumber);
    // The new certificate opens a session.
    const session = TestSession.open(hub.address, { ...agent, keys, certPem: renewed });
    await session.welcomed();
    await session.end();
  });

  it('replaces an agent’s session with its newer one', async () => {
    const agent = await enrolled('twice');
    const first = TestSession.open(hub.address, agent, { answer: answerOk });
    await first.welcomed();
    const second = TestSession.open(hub.address, agent, { answer: answerOk });
    await second.welcomed();
    assert.equal((await first.ended).code, Status.CANCELLED);
    const result = await hub.plane.hub.dispatch(
      { role: 'libvirt', name: 'twice' },
      { type: 'test.echo', object: {}, deadline: soon() },
    );
    assert.equal(result.code, Status.OK);
    assert.equal(first.jobs.length, 0);
    assert.equal(second.jobs.length, 1);
    await second.end();
  });

  it('dispatches a job and returns the agent’s result; events come tagged with the agent', async () => {
    const agent = await enrolled('worker');
    const events: string[] = [];
    const record =
      (name: keyof HubEvents) =>
      ({ agent: who }: { agent: { role: string; name: string } }) => {
        if (who.name === 'worker') events.push(`${name} ${who.role}/${who.name}`);
      };
    for (const name of ['connected', 'inventory', 'lifecycle', 'disconnected'] as const) {
      hub.plane.hub.on(name, record(name));
    }
    const resource = {
      ref: { kind: 'Instance', namespace: 'default', name: 'vm1', uid: 'u1' },
      observedJson: Buffer.from('{}'),
    };
    const session = TestSession.open(hub.address, agent, {
      first: { message: { $case: 'hello', value: { ...defaultHello, inventory: [resource] } } },
      answer: (job) =>
        job.type === 'test.fail'
          ? {
              message: {
                $case: 'jobResult',
                value: {
                  jobId: job.id,
                  code: Status.INVALID_ARGUMENT,
                  message: 'bad spec',
                  observedJson: Buffer.alloc(0),
                },
              },
            }
          : answerOk(job),
    });
    await session.welcomed();

    const object = { apiVersion: 'loam.dev/v1alpha1', kind: 'Instance', metadata: { name: 'vm1' } };
    const ok = await hub.plane.hub.dispatch(
      { role: 'libvirt', name: 'worker' },
      { type: 'test.echo', object, deadline: soon() },
    );
    assert.equal(ok.code, Status.OK);
    assert.deepEqual(JSON.parse(ok.observedJson.toString()), object);
    const job = session.jobs[0];
    assert.equal(job?.type, 'test.echo');
    assert.ok(job?.deadline && job.deadline.getTime() > Date.now());
    const failed = await hub.plane.hub.dispatch(
      { role: 'libvirt', name: 'worker' },
      { type: 'test.fail', object, deadline: soon() },
    );
    assert.deepEqual([failed.code, failed.message], [Status.INVALID_ARGUMENT, 'bad spec']);

    session.send({ message: { $case: 'inventoryChange', value: { upserted: [resource], removed: [] } } });
    session.send({
      message: {
        $case: 'lifecycleEvent',
        value: { resource: resource.ref, type: 'Normal', reason: 'Started', message: '', time: new Date() },
      },
    });
    await session.end();
    await pollUntil(() => events.length === 4, { timeoutMs: 10_000, what: 'the four events' });
    assert.deepEqual(events, [
      'connected libvirt/worker',
      'inventory libvirt/worker',
      'lifecycle libvirt/worker',
      'disconnected libvirt/worker',
    ]);
  });

  it('records what a job observed in order with the inventory change the agent sent after it, whoever sent the job', async () => {
    const agent = await enrolled('ordered');
    const agents = new AgentState(hub.plane.hub, pino({ level: 'silent' }));
    const ref = { kind: 'Instance', namespace: 'default', name: 'vm2' };
    const object = { kind: 'Instance', metadata: { ...ref, uid: 'u2' } };
    const observed = (state: string) => Buffer.from(JSON.stringify({ state }));
    const session: TestSession = TestSession.open(hub.address, agent, {
      answer: (job) => {
        // As the libvirt agent's poller can: the domain changed right after the job observed it,
        // and both messages go out together.
        if (job.type === 'test.then-stopped') {
          queueMicrotask(() =>
            session.send({
              message: {
                $case: 'inventoryChange',
                value: {
                  upserted: [{ ref: { ...ref, uid: 'u2' }, observedJson: observed('stopped') }],
                  removed: [],
                },
              },
            }),
          );
        }
        return {
          message: {
            $case: 'jobResult',
            value: { jobId: job.id, code: Status.OK, message: '', observedJson: observed('running') },
          },
        };
      },
    });
    await session.welcomed();
    const worker = { role: 'libvirt' as const, name: 'ordered' };
    const state = () => (agents.observation(ref, worker)?.observed as { state?: string } | undefined)?.state;

    agents.dispatch({ agent: worker, type: 'test.then-stopped', object }, 5_000);
    await pollUntil(() => agents.jobsInFlight(ref).length === 0 && state() === 'stopped', {
      timeoutMs: 10_000,
      what: () => `the later "stopped" to stand (it is ${state()})`,
    });
    // A job sent past the controllers (the API server's power actions) is recorded as well.
    const direct = await hub.plane.hub.dispatch(worker, { type: 'instance.power', object, deadline: soon() });
    assert.equal(direct.code, Status.OK);
    assert.equal(state(), 'running');
    await session.end();
  });

  it('fails jobs fast and retryably when the agent is offline, at their deadline, when over the in-flight bound, or when the session ends; too large ones at once', async () => {
    const started = Date.now();
    const offline = await hub.plane.hub
      .dispatch({ role: 'libvirt', name: 'nobody' }, { type: 'test.echo', object: {}, deadline: soon() })
      .catch((err: unknown) => err);
    assert.ok(isLoamError(offline, 'Unavailable'), String(offline));
    assert.ok(Date.now() - started < 500, 'at once');

    const agent = await enrolled('silent');
    const session = TestSession.open(hub.address, agent); // never answers
    await session.welcomed();
    const target = { role: 'libvirt' as const, name: 'silent' };
    const huge = await hub.plane.hub
      .dispatch(target, { type: 'test.echo', object: { pad: 'x'.repeat(5 * 1024 * 1024) }, deadline: soon() })
      .catch((err: unknown) => err);
    assert.ok(isLoamError(huge, 'RequestEntityTooLarge'), String(huge));
    const late = await hub.plane.hub
      .dispatch(target, { type: 'test.echo', object: {}, deadline: soon(200) })
      .catch((err: unknown) => err);
    assert.ok(isLoamError(late, 'DeadlineExceeded'), String(late));

    const pending = Array.from({ length: maxInflight }, () =>
      hub.plane.hub
        .dispatch(target, { type: 'test.echo', object: {}, deadline: soon(30_000) })
        .catch((err: unknown) => err),
    );
    const over = await hub.plane.hub
      .dispatch(target, { type: 'test.echo', object: {}, deadline: soon() })
      .catch((err: unknown) => err);
    assert.ok(isLoamError(over, 'Unavailable'), String(over));
    session.cancel();
    for (const outcome of await Promise.all(pending))
      assert.ok(isLoamError(outcome, 'Unavailable'), String(outcome));
  });

  it('serves the gRPC health service and the agent metrics', async () => {
    const HealthClient = makeClientConstructor(healthService, 'grpc.health.v1.Health');
    const client = new HealthClient(hub.address, tlsCredentials(hub.caPem)) as unknown as {
      check(req: { service: string }, done: (err: Error | null, res: { status: string }) => void): void;
      close(): void;
    };
    const health = await new Promise<{ status: string }>((resolve, reject) =>
      client.check({ service: '' }, (err, res) => (err ? reject(err) : resolve(res))),
    );
    client.close();
    assert.equal(health.status, 'SERVING');

    const agent = await enrolled('measured');
    const session = TestSession.open(hub.address, agent, { answer: answerOk });
    await session.welcomed();
    await hub.plane.hub.dispatch(
      { role: 'libvirt', name: 'measured' },
      { type: 'test.echo', object: {}, deadline: soon() },
    );
    const metrics = (await apiClient(hub.plane.kubeconfigPath)('GET', '/metrics')).text;
    const connected = Number(/^loam_agent_connected\{role="libvirt"\} (\d+)$/m.exec(metrics)?.[1]);
    assert.ok(connected >= 1, metrics);
    assert.match(metrics, /^loam_agent_connected\{role="network"\} \d+$/m);
    assert.match(metrics, /^loam_agent_job_duration_seconds_count\{kind="test.echo",result="OK"\} [1-9]/m);
    assert.match(metrics, /^loam_agent_jobs_inflight \d+$/m);
    await session.end();
  });

  it('gives agents of a previous hub the grace period to come back to a restarted one', async () => {
    const stays = await enrolled('stays');
    const leaves = await enrolled('leaves');
    for (const agent of [stays, leaves]) await TestSession.open(hub.address, agent).welcomed();
    await Promise.all([waitReady('stays', 'True'), waitReady('leaves', 'True')]);
    await hub.restart();
    const back = TestSession.open(hub.address, stays);
    await back.welcomed();
    await waitReady('leaves', 'Unknown');
    assert.equal(ready(await hub.object('stays'))?.status, 'True');
    await back.end();
  });

  it("shows an agent's failing checks: Host not Ready with their reason, Ready again once they pass", async () => {
    const agent = await enrolled('checked');
    const libvirt = {
      type: 'LibvirtReachable',
      status: 'False',
      reason: 'LibvirtUnreachable',
      message: 'cannot reach libvirt',
      required: true,
    };
    const session = TestSession.open(hub.address, agent, {
      first: { message: { $case: 'hello', value: { ...defaultHello, conditions: [libvirt] } } },
    });
    await session.welcomed();
    await waitReady('checked', 'False');
    const down = await hub.object('checked');
    assert.equal(ready(down)?.reason, 'LibvirtUnreachable');
    assert.equal(getCondition(down?.status?.conditions, 'LibvirtReachable')?.status, 'False');

    const answers = { ...libvirt, status: 'True', reason: 'Connected', message: 'libvirt 9.0.0' };
    session.send({ message: { $case: 'conditions', value: { conditions: [answers] } } });
    await waitReady('checked', 'True');
    assert.equal(
      getCondition((await hub.object('checked'))?.status?.conditions, 'LibvirtReachable')?.status,
      'True',
    );

    // Not Ready when the hub restarts, and gone: Unknown after the grace period all the same.
    session.send({ message: { $case: 'conditions', value: { conditions: [libvirt] } } });
    await waitReady('checked', 'False');
    session.cancel();
    await hub.restart();
    await waitReady('checked', 'Unknown');
  });

  it('keeps 50 agents connected to one hub, and each receives a job', async () => {
    const count = 50;
    // Five tokens of ten uses, each raced for by ten enrollments at once.
    const tokens = await Promise.all(Array.from({ length: count / 10 }, () => hub.token({ usages: 10 })));
    const agents: AgentCredentials[] = await Promise.all(
      Array.from({ length: count }, (_, i) =>
        enroll(hub.address, hub.caPem, {
          token: tokens[i % tokens.length] as string,
          name: `fleet-${i}`,
          keys: sharedKeys,
        }),
      ),
    );
    const sessions = agents.map((agent) => TestSession.open(hub.address, agent, { answer: answerOk }));
    await Promise.all(sessions.map((session) => session.welcomed(20_000)));
    const results = await Promise.all(
      agents.map((_, i) =>
        hub.plane.hub.dispatch(
          { role: 'libvirt', name: `fleet-${i}` },
          { type: 'test.echo', object: { i }, deadline: soon(20_000) },
        ),
      ),
    );
    assert.ok(results.every((result) => result.code === Status.OK));
    assert.ok(
      sessions.every((session, i) => JSON.parse(session.jobs[0]?.objectJson.toString() ?? '{}').i === i),
    );
    assert.ok(
      sessions.every((session) => session.status === undefined),
      'all still connected',
    );
    await Promise.all(sessions.map((session) => session.end()));
  });
});
