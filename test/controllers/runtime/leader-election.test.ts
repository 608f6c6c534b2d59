/**
 * Two candidates against Loam's API server: one leads; when it stops it releases the Lease and the
 * other takes over at once; when a leader vanishes without releasing, the other waits out the
 * lease duration first.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import * as k8s from '@kubernetes/client-node';
import { pino } from 'pino';
import { LeaderElector } from '../../../controllers/runtime/leader-election.js';
import type { ControlPlane } from '../../../controllers/up.js';
import { startPlane, tempDir } from '../../harness/plane.js';
import { pollUntil } from '../../harness/poll.js';

describe('controllers/runtime/leader-election', function () {
  this.timeout(30_000);
  let dir: string;
  let plane: ControlPlane;
  let api: k8s.CoordinationV1Api;
  const electors: LeaderElector[] = [];

  before(async () => {
    dir = tempDir('leader');
    plane = await startPlane(dir);
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(plane.kubeconfigPath);
    api = kc.makeApiClient(k8s.CoordinationV1Api);
  });
  after(async () => {
    for (const elector of electors) await elector.stop();
    await plane?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  function candidate(name: string, identity: string, log: string[]): LeaderElector {
    const elector = new LeaderElector({
      api,
      namespace: 'kube-system',
      name,
      identity,
      leaseDurationMs: 1500,
      renewDeadlineMs: 1000,
      retryPeriodMs: 100,
      logger: pino({ level: 'silent' }),
      onStartedLeading: () => log.push(`${identity} leads`),
      onStoppedLeading: () => log.push(`${identity} stops`),
    });
    electors.push(elector);
    return elector;
  }

  it('elects one leader and hands over at once when it stops', async () => {
    const log: string[] = [];
    const a = candidate('handover', 'a', log);
    a.start();
    await pollUntil(() => a.isLeader, { timeoutMs: 5000, what: 'a to lead' });
    const b = candidate('handover', 'b', log);
    b.start();
    // b keeps trying for a while and must not lead while a renews.
    const until = Date.now() + 600;
    await pollUntil(() => Date.now() > until || b.isLeader, { timeoutMs: 2000, what: 'time to pass' });
    assert.equal(b.isLeader, false);
    const stoppedAt = Date.now();
    await a.stop();
    await pollUntil(() => b.isLeader, { timeoutMs: 5000, what: 'b to take over' });
    assert.ok(Date.now() - stoppedAt < 1500, 'a released the lease: no need to wait it out');
    assert.deepEqual(log, ['a leads', 'a stops', 'b leads']);
    const lease = await api.readNamespacedLease({ name: 'handover', namespace: 'kube-system' });
    assert.equal(lease.spec?.holderIdentity, 'b');
    assert.equal(lease.spec?.leaseTransitions, 0, 'a released it: b took a free lease');
    await b.stop();
  });

  it('takes over from a leader that vanished only after the lease duration', async () => {
    // The Lease of a leader that crashed: held, freshly renewed, never renewed again.
    const now = new Date();
    await api.createNamespacedLease({
      namespace: 'kube-system',
      body: {
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: { name: 'vanish', namespace: 'kube-system' },
        spec: {
          holderIdentity: 'a',
          leaseDurationSeconds: 2,
          acquireTime: now,
          renewTime: now,
          leaseTransitions: 0,
        },
      },
    });
    const vanishedAt = Date.now();
    const b = candidate('vanish', 'b', []);
    b.start();
    await pollUntil(() => b.isLeader, { timeoutMs: 10_000, what: 'b to take over' });
    assert.ok(Date.now() - vanishedAt >= 1900, 'b waited out the lease duration');
    const lease = await api.readNamespacedLease({ name: 'vanish', namespace: 'kube-system' });
    assert.equal(lease.spec?.holderIdentity, 'b');
    assert.equal(lease.spec?.leaseTransitions, 1);
    await b.stop();
  });
});
