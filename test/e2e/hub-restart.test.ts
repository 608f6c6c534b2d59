/**
 * The control plane dies mid-job: the real hub (in `up`) and the real agent runtime. The job fails
 * retryably for its dispatcher, the agent keeps running what it runs, reconnects by itself when
 * the control plane is back, reports its full inventory, and takes new jobs.
 */
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { gate, TestDriver } from '../../agents/runtime/testing/driver.js';
import { createBootstrapToken } from '../../controllers/pki/bootstrap-tokens.js';
import { caPin } from '../../controllers/pki/certificates.js';
import type { ControlPlane } from '../../controllers/up.js';
import { isLoamError } from '../../crds/errors.js';
import type { Resource } from '../../proto/gen/loam/agent/v1/agent.js';
import { startAgent, type TestAgent } from '../agents/hub-double.js';
import { startPlane, tempDir } from '../harness/plane.js';
import { freePort, pollUntil } from '../harness/poll.js';

const instance = {
  apiVersion: 'loam.dev/v1alpha1',
  kind: 'Instance',
  metadata: { name: 'web', namespace: 'default', uid: 'uid-web' },
  spec: {},
};

describe('a hub restart in the middle of a job', function () {
  this.timeout(60_000);
  let dir: string;
  let plane: ControlPlane | undefined;
  let running: TestAgent | undefined;

  after(async () => {
    await running?.agent.stop();
    await plane?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('fails the job retryably, and the agent comes back with its inventory and takes new jobs', async () => {
    dir = tempDir('hub-restart');
    const agentPort = await freePort();
    plane = await startPlane(join(dir, 'plane'), { agentPort });
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(plane.kubeconfigPath);
    const { token } = await createBootstrapToken(k8s.KubernetesObjectApi.makeApiClient(kc), {
      ttlSeconds: 600,
      usages: 1,
      role: 'libvirt',
    });
    const driver = new TestDriver();
    driver.inventoryItems = [
      {
        ref: { kind: 'Instance', namespace: 'default', name: 'web', uid: 'uid-web' },
        observed: { phase: 'Running' },
      },
    ];
    const held = gate();
    driver.respond = async (job) => {
      if (job.id === driver.jobs[0]?.id) await held.promise;
      return { code: 0, observed: { phase: 'Running' } };
    };
    running = startAgent(
      {
        role: 'libvirt',
        server: plane.agentAddress,
        token,
        caPin: caPin(readFileSync(join(dir, 'plane', 'pki', 'ca.crt'), 'utf8')),
        dataDir: join(dir, 'agent'),
        name: 'hv1',
        metricsAddress: '127.0.0.1:0',
        logLevel: 'silent',
        renewAt: 0.8,
        backoff: { initialMs: 50, maxMs: 300 },
      },
      { driver },
    );
    const agent = running.agent;
    await pollUntil(() => agent.isConnected, { timeoutMs: 15_000, what: 'the agent to connect' });

    const job = { type: 'instance.apply', object: instance, deadline: new Date(Date.now() + 30_000) };
    // Settled while the plane stops, so caught at once.
    const midJob = plane.hub.dispatch({ role: 'libvirt', name: 'hv1' }, job).then(
      () => undefined,
      (err: unknown) => err,
    );
    await pollUntil(() => driver.running.size === 1, { timeoutMs: 5000, what: 'the job to start' });
    await plane.stop();
    plane = undefined;
    assert.ok(isLoamError(await midJob, 'Unavailable'), 'a retryable failure for the controller');
    held.open();

    // Back on the same data dir and address: the agent finds it by itself.
    const back = await startPlane(join(dir, 'plane'), { agentPort });
    plane = back;
    const reports: Resource[][] = [];
    back.hub.on('connected', ({ inventory }: { inventory: Resource[] }) => reports.push(inventory));
    await pollUntil(() => reports.length > 0, { timeoutMs: 15_000, what: 'the agent to reconnect' });
    assert.deepEqual(
      reports[0]?.map((r) => r.ref?.name),
      ['web'],
      'its full inventory',
    );
    const result = await back.hub.dispatch(
      { role: 'libvirt', name: 'hv1' },
      { ...job, deadline: new Date(Date.now() + 10_000) },
    );
    assert.equal(result.code, 0);
    assert.equal(driver.jobs.length, 2);
  });
});
