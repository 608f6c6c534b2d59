/** Enrollment against the hub double over real TLS: the pin, the token, the saved identity. */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createServer } from 'node:tls';
import { fetchPinnedCa } from '../../agents/runtime/enroll.js';
import type { TestDriver } from '../../agents/runtime/testing/driver.js';
import {
  caPin,
  createCertificateAuthority,
  generateKeyPair,
  issueCertificate,
} from '../../controllers/pki/certificates.js';
import { Role } from '../../proto/gen/loam/agent/v1/agent.js';
import { pollUntil } from '../harness/poll.js';
import {
  AgentHubDouble,
  removeDir,
  startAgent,
  type TestAgent,
  tempDataDir,
  testConfig,
} from './hub-double.js';

describe('agent enrollment', () => {
  let hub: AgentHubDouble;
  let dataDir: string;
  const agents: TestAgent[] = [];

  beforeEach(async () => {
    hub = await AgentHubDouble.start();
    dataDir = await tempDataDir();
  });

  afterEach(async () => {
    await Promise.all(agents.splice(0).map(({ agent }) => agent.stop()));
    hub.stop();
    removeDir(dataDir);
  });

  function start(...args: Parameters<typeof startAgent<TestDriver>>): TestAgent {
    const running = startAgent(...args);
    agents.push(running);
    return running;
  }

  it('enrolls with the pinned CA, saves its identity and connects with it', async () => {
    start(testConfig(hub, dataDir));
    await pollUntil(() => hub.sessions.length === 1, { timeoutMs: 10_000, what: 'a session' });

    assert.equal(hub.enrollments.length, 1);
    const [request] = hub.enrollments;
    assert.equal(request?.token, hub.token);
    assert.equal(request?.name, 'hv1');
    assert.equal(request?.role, Role.ROLE_LIBVIRT);
    assert.match(request?.csrPem ?? '', /BEGIN CERTIFICATE REQUEST/);
    assert.doesNotMatch(JSON.stringify(request), /PRIVATE KEY/);

    const dir = join(dataDir, 'identity');
    assert.equal(statSync(join(dir, 'agent.pem')).mode & 0o777, 0o600);
    assert.deepEqual(JSON.parse(readFileSync(join(dir, 'agent.json'), 'utf8')), {
      name: 'hv1',
      role: 'libvirt',
    });
    assert.equal(caPin(readFileSync(join(dir, 'ca.crt'), 'utf8')), hub.pin);
    const cert = new X509Certificate(readFileSync(join(dir, 'agent.pem'), 'utf8'));
    assert.match(cert.subject, /CN=hv1/);
    assert.match(cert.subject, /O=libvirt/);
    assert.equal(hub.sessions[0]?.peer.serialNumber, cert.serialNumber);
  });

  it('refuses a hub whose CA does not match the pin, and sends it nothing', async () => {
    const otherPin = caPin(createCertificateAuthority('elsewhere').certPem);
    const { done } = start(testConfig(hub, dataDir, { caPin: otherPin }));
    await assert.rejects(done, (err: Error) => {
      assert.match(err.message, /its CA does not match --ca-pin/);
      assert.match(err.message, new RegExp(hub.pin));
      assert.match(err.message, /Nothing was sent/);
      return true;
    });
    assert.equal(hub.enrollments.length, 0);
    assert.equal(existsSync(join(dataDir, 'identity', 'agent.pem')), false);
  });

  it('refuses a server that presents no CA, since the pin cannot be checked', async () => {
    const keys = generateKeyPair();
    const cert = issueCertificate(hub.ca, {
      commonName: 'leaf-only',
      ipAddresses: ['127.0.0.1'],
      usage: 'server',
      validityDays: 1,
      publicKeyPem: keys.publicKeyPem,
    });
    const server = createServer({ cert, key: keys.privateKeyPem }, (socket) => socket.destroy());
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const { port } = server.address() as AddressInfo;
      await assert.rejects(
        fetchPinnedCa(`127.0.0.1:${port}`, hub.pin),
        /it presented no CA certificate in its chain/,
      );
    } finally {
      server.close();
    }
  });

  it('fails at once when the hub refuses the token', async () => {
    const { done } = start(testConfig(hub, dataDir, { token: 'zzzzzz.zzzzzzzzzzzzzzzz' }));
    await assert.rejects(done, /refused enrollment: UNAUTHENTICATED: unknown bootstrap token/);
    assert.equal(hub.enrollments.length, 1);
  });

  it('needs a token and a pin only for the first start', async () => {
    const { done } = start(testConfig(hub, dataDir, { token: undefined }));
    await assert.rejects(done, /--token is required to enroll/);
  });

  it('reuses its identity on restart: no second Enroll', async () => {
    const first = start(testConfig(hub, dataDir));
    await pollUntil(() => hub.sessions.length === 1, { timeoutMs: 10_000, what: 'the first session' });
    await first.agent.stop();

    start(testConfig(hub, dataDir, { token: undefined }));
    await pollUntil(() => hub.sessions.length === 2, { timeoutMs: 10_000, what: 'the second session' });
    assert.equal(hub.enrollments.length, 1);
    assert.equal(hub.sessions[1]?.peer.serialNumber, hub.sessions[0]?.peer.serialNumber);
  });

  it('refuses a data dir enrolled as another agent, with another control plane, or damaged', async () => {
    const first = start(testConfig(hub, dataDir));
    await pollUntil(() => hub.sessions.length === 1, { timeoutMs: 10_000, what: 'a session' });
    await first.agent.stop();

    const renamed = start(testConfig(hub, dataDir, { name: 'hv2' }));
    await assert.rejects(
      renamed.done,
      /holds the identity of libvirt agent "hv1", not of libvirt agent "hv2"/,
    );
    const otherRole = start(testConfig(hub, dataDir, { role: 'network' }));
    await assert.rejects(otherRole.done, /not of network agent "hv1"/);
    const otherPin = caPin(createCertificateAuthority('elsewhere').certPem);
    const otherPlane = start(testConfig(hub, dataDir, { caPin: otherPin }));
    await assert.rejects(otherPlane.done, /was enrolled with another control plane/);
    assert.equal(hub.enrollments.length, 1);

    const pemPath = join(dataDir, 'identity', 'agent.pem');
    writeFileSync(pemPath, readFileSync(pemPath, 'utf8').replace(/-----BEGIN PRIVATE KEY-----[^-]+/, ''));
    const damaged = start(testConfig(hub, dataDir));
    await assert.rejects(
      damaged.done,
      /the identity in .*identity is damaged \(agent.pem must hold a certificate and its key\)/,
    );
  });

  it('keeps trying to enroll until the hub comes up', async () => {
    const later = await AgentHubDouble.start();
    later.stop();
    const { agent } = start(testConfig(later, dataDir));
    await pollUntil(() => agent.metricsUrl !== undefined, { timeoutMs: 5_000, what: 'the metrics endpoint' });
    await later.listen();
    try {
      await pollUntil(() => later.sessions.length === 1, {
        timeoutMs: 10_000,
        what: 'a session once the hub is up',
      });
      assert.equal(later.enrollments.length, 1);
    } finally {
      later.stop();
    }
  });
});
