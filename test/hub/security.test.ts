/**
 * What the hub refuses, each with its gRPC code, over real TLS on loopback: bad tokens, bad
 * certificates, revoked agents, results for jobs never sent, oversized and malformed messages.
 * Every refusal is logged, and no log line carries a token's secret.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { status as Status, type StatusObject } from '@grpc/grpc-js';
import { agentSubject, revokedAnnotation } from '../../controllers/hub/identity.js';
import {
  createCertificateAuthority,
  createCertificateSigningRequest,
  issueCertificate,
} from '../../controllers/pki/certificates.js';
import { loadCertificateAuthority } from '../../controllers/pki/files.js';
import { Role } from '../../proto/gen/loam/agent/v1/agent.js';
import { pollUntil } from '../harness/poll.js';
import {
  type AgentCredentials,
  agentServiceClient,
  defaultHello,
  enroll,
  enrollCall,
  rawConnect,
  refusal,
  sharedKeys,
  TestSession,
} from './agent-client.js';
import { type HubPlane, startHubPlane } from './fixture.js';

const hour = 3600;

describe('agent hub security', function () {
  this.timeout(60_000);
  let hub: HubPlane;
  const logs: string[] = [];
  const tokens: string[] = [];

  before(async () => {
    hub = await startHubPlane('hub-security', { maxMessageBytes: 64 * 1024 }, logs);
  });
  after(async () => {
    await hub?.stop();
  });

  const token = async (...args: Parameters<HubPlane['token']>) => {
    const created = await hub.token(...args);
    tokens.push(created);
    return created;
  };
  const enrolled = async (name: string) =>
    enroll(hub.address, hub.caPem, { token: await token({ role: 'libvirt' }), name, keys: sharedKeys });

  /** The agent's credentials with another certificate for the same key. */
  const withCert = (agent: AgentCredentials, certPem: string) => ({ ...agent, certPem });

  /** Issues a certificate for `agent`'s key with the subject of the enrolled `name`, as the hub would. */
  const forgeCert = (
    agent: AgentCredentials,
    name: string,
    uid: string,
    ca = loadCertificateAuthority(hub.dir),
  ) =>
    issueCertificate(ca, {
      ...agentSubject({ role: 'libvirt', name, uid }),
      usage: 'client',
      validityDays: 0,
      validitySeconds: 1,
      publicKeyPem: agent.keys.publicKeyPem,
    });

  const renewCall = (agent: { caPem: string; keys: { privateKeyPem: string }; certPem?: string }) => {
    const client = agentServiceClient(
      hub.address,
      agent.caPem,
      agent.certPem ? { keyPem: agent.keys.privateKeyPem, certPem: agent.certPem } : undefined,
    );
    return new Promise((resolve, reject) =>
      client.renewCertificate({ csrPem: createCertificateSigningRequest(sharedKeys, 'x') }, (err, res) => {
        client.close();
        if (err) reject(err);
        else resolve(res);
      }),
    );
  };

  describe('Enroll', () => {
    const csrPem = createCertificateSigningRequest(sharedKeys, 'x');
    const rows: {
      name: string;
      request: () => Promise<{ token: string; name?: string; role?: Role; csrPem?: string }>;
      code: Status;
      details: RegExp;
    }[] = [
      {
        name: 'an unknown token',
        request: async () => ({ token: 'abcdef.0123456789abcdef' }),
        code: Status.UNAUTHENTICATED,
        details: /unknown bootstrap token abcdef/,
      },
      {
        name: 'a malformed token',
        request: async () => ({ token: 'not-a-token' }),
        code: Status.UNAUTHENTICATED,
        details: /malformed bootstrap token/,
      },
      {
        name: 'an expired token',
        request: async () => ({
          token: await token({ ttlSeconds: hour }, new Date(Date.now() - 2 * hour * 1000)),
        }),
        code: Status.UNAUTHENTICATED,
        details: /expired/,
      },
      {
        name: 'a token over its usage count',
        request: async () => {
          const used = await token({ usages: 1 });
          await enroll(hub.address, hub.caPem, { token: used, name: 'first-use', keys: sharedKeys });
          return { token: used };
        },
        code: Status.UNAUTHENTICATED,
        details: /used 1 of 1 times/,
      },
      {
        name: 'a token for another role',
        request: async () => ({ token: await token({ role: 'network' }) }),
        code: Status.UNAUTHENTICATED,
        details: /for network agents, not libvirt/,
      },
      {
        name: 'a name that is not a DNS label',
        request: async () => ({ token: await token(), name: 'Not_A_Label' }),
        code: Status.INVALID_ARGUMENT,
        details: /not a DNS label/,
      },
      {
        name: 'no role',
        request: async () => ({ token: await token(), role: Role.ROLE_UNSPECIFIED }),
        code: Status.INVALID_ARGUMENT,
        details: /role/,
      },
      {
        name: 'a CSR that is not one',
        request: async () => ({ token: await token(), csrPem: 'garbage' }),
        code: Status.INVALID_ARGUMENT,
        details: /csr_pem/,
      },
    ];
    for (const row of rows) {
      it(`refuses ${row.name}`, async () => {
        const request = { name: 'refused', role: Role.ROLE_LIBVIRT, csrPem, ...(await row.request()) };
        const { code, details } = await refusal(enrollCall(hub.address, hub.caPem, request));
        assert.equal(Status[code], Status[row.code], details);
        assert.match(details, row.details);
      });
    }
  });

  describe('Connect', () => {
    let agent: AgentCredentials;
    let uid: string;
    before(async () => {
      agent = await enrolled('sec-agent');
      uid = (await hub.object('sec-agent'))?.metadata?.uid as string;
    });

    const rows: {
      name: string;
      open: () => Promise<StatusObject>;
      code: Status;
      details: RegExp;
    }[] = [
      {
        name: 'no client certificate',
        open: () => TestSession.open(hub.address, { caPem: hub.caPem }).ended,
        code: Status.UNAUTHENTICATED,
        details: /no client certificate/,
      },
      {
        name: 'a client certificate from another CA',
        open: async () =>
          TestSession.open(
            hub.address,
            withCert(agent, forgeCert(agent, 'sec-agent', uid, createCertificateAuthority())),
          ).ended,
        code: Status.UNAUTHENTICATED,
        details: /no client certificate verified/,
      },
      {
        name: 'an expired client certificate',
        open: async () => {
          const certPem = forgeCert(agent, 'sec-agent', uid);
          const expiry = new Date(new X509Certificate(certPem).validTo).getTime();
          await pollUntil(() => Date.now() > expiry + 1000, {
            timeoutMs: 5_000,
            what: 'the certificate to expire',
          });
          return TestSession.open(hub.address, withCert(agent, certPem)).ended;
        },
        code: Status.UNAUTHENTICATED,
        details: /no client certificate verified/,
      },
      {
        name: 'a certificate of this CA that names no agent (the admin’s)',
        open: async () => {
          const ca = loadCertificateAuthority(hub.dir);
          const certPem = issueCertificate(ca, {
            commonName: 'admin',
            organizations: ['system:masters'],
            usage: 'client',
            validityDays: 1,
            publicKeyPem: agent.keys.publicKeyPem,
          });
          return TestSession.open(hub.address, withCert(agent, certPem)).ended;
        },
        code: Status.UNAUTHENTICATED,
        details: /does not name an agent/,
      },
      {
        name: 'a first message that is not Hello',
        open: async () =>
          TestSession.open(hub.address, agent, { first: { message: { $case: 'heartbeat', value: {} } } })
            .ended,
        code: Status.INVALID_ARGUMENT,
        details: /first message must be Hello/,
      },
      {
        name: 'a malformed message',
        open: () => rawConnect(hub.address, agent, Buffer.from([0x0a, 0xff, 0xff, 0xff])),
        code: Status.INVALID_ARGUMENT,
        details: /malformed message/,
      },
      {
        name: 'an oversized message',
        open: async () =>
          TestSession.open(hub.address, agent, {
            first: {
              message: {
                $case: 'hello',
                value: { ...defaultHello, facts: { padding: 'x'.repeat(128 * 1024) } },
              },
            },
          }).ended,
        code: Status.RESOURCE_EXHAUSTED,
        details: /larger than max/,
      },
      {
        name: 'a second Hello',
        open: async () => {
          const session = TestSession.open(hub.address, agent);
          await session.welcomed();
          session.send({ message: { $case: 'hello', value: defaultHello } });
          return session.ended;
        },
        code: Status.INVALID_ARGUMENT,
        details: /Hello again/,
      },
      {
        name: 'a result for a job never sent to the agent',
        open: async () => {
          const session = TestSession.open(hub.address, agent);
          await session.welcomed();
          session.send({
            message: {
              $case: 'jobResult',
              value: { jobId: 'someone-elses-job', code: 0, message: '', observedJson: Buffer.alloc(0) },
            },
          });
          return session.ended;
        },
        code: Status.PERMISSION_DENIED,
        details: /never sent to this agent/,
      },
    ];
    for (const row of rows) {
      it(`refuses ${row.name}`, async () => {
        const { code, details } = await row.open();
        assert.equal(Status[code], Status[row.code], details);
        assert.match(details, row.details);
      });
    }

    it('refuses RenewCertificate without a client certificate', async () => {
      const { code } = await refusal(renewCall({ caPem: hub.caPem, keys: sharedKeys }));
      assert.equal(Status[code], 'UNAUTHENTICATED');
    });
  });

  describe('revocation', () => {
    const ref = (name: string) => ({ apiVersion: 'loam.dev/v1alpha1', kind: 'Host', metadata: { name } });

    it(`closes the session of an agent annotated ${revokedAnnotation}, and refuses it after`, async () => {
      const agent = await enrolled('revoked');
      const session = TestSession.open(hub.address, agent);
      await session.welcomed();
      await hub.mergePatch({
        ...ref('revoked'),
        metadata: { name: 'revoked', annotations: { [revokedAnnotation]: 'true' } },
      });
      const closed = await session.ended;
      assert.equal(Status[closed.code], 'PERMISSION_DENIED');
      assert.match(closed.details, /revoked/);
      assert.equal(Status[(await TestSession.open(hub.address, agent).ended).code], 'PERMISSION_DENIED');
      assert.equal(Status[(await refusal(renewCall(agent))).code], 'PERMISSION_DENIED');
    });

    it('closes the session of an agent whose Host is deleted, and refuses its certificate even once the name is enrolled again', async () => {
      const agent = await enrolled('deleted');
      const session = TestSession.open(hub.address, agent);
      await session.welcomed();
      await hub.api.delete(ref('deleted'));
      const closed = await session.ended;
      assert.equal(Status[closed.code], 'PERMISSION_DENIED');
      assert.match(closed.details, /deleted/);
      assert.equal(Status[(await TestSession.open(hub.address, agent).ended).code], 'PERMISSION_DENIED');

      // A new enrollment makes a new Host (a new uid): the old certificate stays refused.
      const successor = await enrolled('deleted');
      const old = await TestSession.open(hub.address, agent).ended;
      assert.equal(Status[old.code], 'PERMISSION_DENIED');
      assert.match(old.details, /re-created/);
      const fresh = TestSession.open(hub.address, successor);
      await fresh.welcomed();
      await fresh.end();
    });
  });

  // A describe of its own, so it runs after the others (mocha runs a suite's own tests first).
  describe('logs', () => {
    it('logs refusals with their reasons and never a token secret', () => {
      const entries = logs.map((line) => JSON.parse(line) as { msg: string; reason?: string });
      assert.ok(entries.some((e) => e.msg === 'Enroll refused' && /expired/.test(e.reason ?? '')));
      assert.ok(
        entries.some((e) => e.msg === 'Connect refused' && /no client certificate/.test(e.reason ?? '')),
      );
      assert.ok(entries.some((e) => e.msg === 'agent session closed' && /revoked/.test(e.reason ?? '')));
      assert.ok(tokens.length > 5);
      for (const secret of tokens.map((t) => t.split('.')[1] as string)) {
        assert.ok(!logs.some((line) => line.includes(secret)), 'a token secret in the logs');
      }
      assert.ok(!logs.some((line) => line.includes('PRIVATE KEY')), 'a private key in the logs');
    });
  });
});
