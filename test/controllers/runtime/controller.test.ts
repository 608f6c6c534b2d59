/**
 * The controller loop against Loam's API server: informer events become reconciles of keys; a
 * failing reconcile is retried with backoff, a requeue polls, cached objects cannot be changed,
 * and the loop reports its metrics.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import * as k8s from '@kubernetes/client-node';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { Controller, startInformer } from '../../../controllers/runtime/controller.js';
import type { ControlPlane } from '../../../controllers/up.js';
import { networkKind } from '../../../crds/v1alpha1/index.js';
import { startPlane, tempDir } from '../../harness/plane.js';
import { pollUntil } from '../../harness/poll.js';

describe('controllers/runtime/controller', function () {
  this.timeout(30_000);
  let dir: string;
  let plane: ControlPlane;
  let kc: k8s.KubeConfig;
  const abort = new AbortController();

  before(async () => {
    dir = tempDir('controller');
    plane = await startPlane(dir);
    kc = new k8s.KubeConfig();
    kc.loadFromFile(plane.kubeconfigPath);
  });
  after(async () => {
    abort.abort();
    await plane?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reconciles changed objects, retries failures with backoff, and polls on requeue', async () => {
    const logger = pino({ level: 'silent' });
    const registry = new Registry();
    const informer = await startInformer(kc, networkKind, {
      namespace: 'default',
      logger,
      signal: abort.signal,
    });
    const calls: string[] = [];
    let mutation: unknown;
    const controller = new Controller({
      name: 'test',
      logger,
      registry,
      queue: { baseDelayMs: 50 },
      reconcile: async (key) => {
        calls.push(key);
        const obj = informer.get(key.split('/')[1] as string, 'default');
        try {
          (obj as { spec: { cidr: string } }).spec.cidr = 'changed';
        } catch (err) {
          mutation = err;
        }
        if (key === 'default/flaky' && calls.filter((k) => k === key).length === 1)
          throw new Error('transient');
        if (key === 'default/polled' && calls.filter((k) => k === key).length < 3)
          return { requeueAfterMs: 30 };
        return undefined;
      },
    });
    controller.watch(informer);
    controller.start();
    const api = k8s.KubernetesObjectApi.makeApiClient(kc);
    for (const name of ['steady', 'flaky', 'polled']) {
      await api.create({
        apiVersion: 'loam.dev/v1alpha1',
        kind: 'Network',
        metadata: { name, namespace: 'default' },
        spec: { cidr: '10.1.0.0/24' },
      } as k8s.KubernetesObject);
    }
    const count = (key: string) => calls.filter((k) => k === key).length;
    await pollUntil(
      () => count('default/flaky') >= 2 && count('default/polled') >= 3 && count('default/steady') >= 1,
      {
        timeoutMs: 10_000,
        what: 'the retries and the polls',
      },
    );
    assert.ok(mutation instanceof TypeError, 'cached objects are frozen');
    await controller.stop();
    const metrics = await registry.metrics();
    assert.match(metrics, /loam_reconcile_total\{controller="test",result="error"\} 1/);
    assert.match(metrics, /loam_reconcile_total\{controller="test",result="requeue"\} 2/);
    assert.match(metrics, /loam_workqueue_retries_total\{name="test"\} 1/);
    assert.match(metrics, /loam_reconcile_time_seconds_count\{controller="test"\} \d+/);
  });
});
