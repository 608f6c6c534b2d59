/** Which client certificates name an agent, and when the agent's object revokes it: tables. */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import {
  type AgentIdentity,
  agentSubject,
  revocationProblem,
  revokedAnnotation,
  verifyAgentCertificate,
} from '../../controllers/hub/identity.js';
import {
  type CertificateRequest,
  createCertificateAuthority,
  issueCertificate,
} from '../../controllers/pki/certificates.js';
import { sharedKeys } from './agent-client.js';

describe('agent identity', () => {
  const ca = createCertificateAuthority();
  const caCert = new X509Certificate(ca.certPem);
  const identity: AgentIdentity = {
    role: 'libvirt',
    name: 'hv1',
    uid: '2b1f0c0e-0d6a-4d5e-9a55-3c1f00000001',
  };
  const der = (request: Partial<CertificateRequest>, authority = ca) =>
    new X509Certificate(
      issueCertificate(authority, {
        ...agentSubject(identity),
        usage: 'client',
        validityDays: 1,
        publicKeyPem: sharedKeys.publicKeyPem,
        ...request,
      }),
    ).raw;

  describe('verifyAgentCertificate', () => {
    const rows: { name: string; der: () => Buffer; laterMs?: number; problem?: RegExp }[] = [
      { name: 'an agent certificate of the CA', der: () => der({}) },
      { name: 'a network agent', der: () => der({ organizations: ['network'] }) },
      {
        name: 'another CA’s certificate',
        der: () => der({}, createCertificateAuthority()),
        problem: /not signed by the control-plane CA/,
      },
      {
        name: 'an expired certificate',
        der: () => der({ validitySeconds: 60 }),
        laterMs: 120_000,
        problem: /valid only from/,
      },
      { name: 'a server certificate', der: () => der({ usage: 'server' }), problem: /client authentication/ },
      {
        name: 'a user certificate (no role)',
        der: () => der({ organizations: ['system:masters'], organizationalUnits: [] }),
        problem: /does not name an agent/,
      },
      {
        name: 'two roles',
        der: () => der({ organizations: ['libvirt', 'network'] }),
        problem: /does not name an agent/,
      },
      { name: 'no uid', der: () => der({ organizationalUnits: [] }), problem: /does not name an agent/ },
      {
        name: 'a name that is not a DNS label',
        der: () => der({ commonName: 'HV_1' }),
        problem: /does not name/,
      },
      { name: 'bytes that are no certificate', der: () => Buffer.from('nope'), problem: /unreadable/ },
    ];
    for (const row of rows) {
      it(row.problem ? `refuses ${row.name}` : `accepts ${row.name}`, () => {
        const result = verifyAgentCertificate(row.der(), caCert, new Date(Date.now() + (row.laterMs ?? 0)));
        if (row.problem) assert.match('problem' in result ? result.problem : '', row.problem);
        else
          assert.ok(
            'identity' in result && result.identity.name === 'hv1' && result.identity.uid === identity.uid,
          );
      });
    }
  });

  describe('revocationProblem', () => {
    const host = (metadata: Record<string, unknown>) => ({
      metadata: { name: 'hv1', uid: identity.uid, ...metadata },
    });
    const rows: { name: string; object: ReturnType<typeof host> | undefined; problem?: RegExp }[] = [
      { name: 'its Host as enrolled', object: host({}) },
      {
        name: 'a revoked annotation of another value',
        object: host({ annotations: { [revokedAnnotation]: 'no' } }),
      },
      { name: 'a deleted Host', object: undefined, problem: /Host hv1 was deleted/ },
      { name: 'a re-created Host', object: host({ uid: 'other' }), problem: /re-created/ },
      {
        name: 'a Host annotated revoked',
        object: host({ annotations: { [revokedAnnotation]: 'true' } }),
        problem: /revoked/,
      },
    ];
    for (const row of rows) {
      it(row.problem ? `revokes for ${row.name}` : `allows ${row.name}`, () => {
        const problem = revocationProblem(identity, row.object);
        if (row.problem) assert.match(problem ?? '', row.problem);
        else assert.equal(problem, undefined);
      });
    }
  });
});
