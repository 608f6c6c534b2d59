/** Certificate rotation with seconds-long certificates: renewed before expiry, session kept. */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { certificateValidity, renewalTime } from '../../agents/runtime/identity.js';
import { pollUntil } from '../harness/poll.js';
import {
  AgentHubDouble,
  removeDir,
  startAgent,
  type TestAgent,
  tempDataDir,
  testConfig,
} from './hub-double.js';

describe('certificate rotation', () => {
  it('renews at the configured fraction of the lifetime', () => {
    const validity = {
      notBefore: new Date('2025-01-01T00:00:00Z'),
      notAfter: new Date('2025-01-08T00:00:00Z'),
    };
    const cases: [number, string][] = [
      [0.8, '2025-01-06T14:24:00.000Z'],
      [0.5, '2025-01-04T12:00:00.000Z'],
    ];
    for (const [fraction, at] of cases) assert.equal(renewalTime(validity, fraction).toISOString(), at);
  });

  describe('against the hub double', () => {
    let hub: AgentHubDouble;
    let dataDir: string;
    let running: TestAgent | undefined;

    beforeEach(async () => {
      hub = await AgentHubDouble.start({ certificateSeconds: 4 });
      dataDir = await tempDataDir();
    });

    afterEach(async () => {
      await running?.agent.stop();
      hub.stop();
      removeDir(dataDir);
    });

    it('renews before expiry without dropping the session, and uses the new certificate from then on', async () => {
      running = startAgent(testConfig(hub, dataDir));
      await pollUntil(() => hub.sessions.length === 1, { timeoutMs: 10_000, what: 'a session' });
      const session = hub.sessions[0];
      assert.ok(session);
      const firstExpiry = new Date(session.peer.valid_to).getTime();

      const savedSerial = () =>
        new X509Certificate(readFileSync(join(dataDir, 'identity', 'agent.pem'))).serialNumber;
      await pollUntil(() => hub.renewals.length >= 1 && savedSerial() === hub.renewals[0], {
        timeoutMs: 10_000,
        what: 'a renewed certificate, saved',
      });
      assert.ok(Date.now() < firstExpiry, 'renewed before the first certificate expired');

      // Past the first certificate's expiry the same stream still carries heartbeats and jobs.
      await pollUntil(() => Date.now() > firstExpiry + 500, {
        timeoutMs: 10_000,
        what: 'the first certificate to expire',
      });
      const beats = session.heartbeats;
      await pollUntil(() => session.heartbeats > beats, {
        timeoutMs: 5_000,
        what: 'a heartbeat after expiry',
      });
      hub.dispatch({
        id: 'after-expiry',
        object: { kind: 'Instance', metadata: { name: 'a', namespace: 'default' } },
      });
      assert.equal((await hub.result('after-expiry')).code, status.OK);
      assert.equal(hub.sessions.length, 1);
      assert.equal(session.endedBy, undefined);

      // A new session (the hub restarted) comes with a renewed certificate.
      await hub.restart();
      await pollUntil(() => hub.sessions.length === 2, { timeoutMs: 10_000, what: 'a new session' });
      assert.ok(hub.renewals.includes(hub.sessions[1]?.peer.serialNumber ?? ''));
      const metrics = await (await fetch(`${running.agent.metricsUrl}/metrics`)).text();
      const expiry = Number(/^loam_agent_certificate_expiry_timestamp_seconds (\S+)$/m.exec(metrics)?.[1]);
      const current = certificateValidity(readFileSync(join(dataDir, 'identity', 'agent.pem'), 'utf8'));
      assert.equal(expiry, current.notAfter.getTime() / 1000);
    });
  });
});
