/**
 * Who an agent is: its role and name, and the uid of the Host or Router it enrolled as. Its
 * client certificate says so (CN = name, O = role, OU = uid), and the object in the API decides
 * whether that still holds: deleted, re-created (a new uid) or annotated revoked, it does not.
 * Pure functions; the hub does the I/O.
 */
import { X509Certificate } from 'node:crypto';
import type { KubernetesObject } from '@kubernetes/client-node';
import { dnsLabel } from '../../crds/formats.js';
import { Role } from '../../proto/gen/loam/agent/v1/agent.js';
import type { CertificateRequest } from '../pki/certificates.js';
import { type AgentRole, agentRoles } from '../pki/certificates.js';

export interface AgentRef {
  role: AgentRole;
  name: string;
}

export interface AgentIdentity extends AgentRef {
  /** The uid of the agent's Host or Router when its certificate was issued. */
  uid: string;
}

export const revokedAnnotation = 'loam.dev/revoked';
const clientAuthUsage = '1.3.6.1.5.5.7.3.2';

export function agentKey(agent: AgentRef): string {
  return `${agent.role}/${agent.name}`;
}

export function agentKind(role: AgentRole): 'Host' | 'Router' {
  return role === 'libvirt' ? 'Host' : 'Router';
}

/** The Lease the agent's heartbeats renew, in kube-system. */
export function agentLeaseName(agent: AgentRef): string {
  return `loam-agent-${agent.role}-${agent.name}`;
}

export function roleFromProto(role: Role): AgentRole | undefined {
  return role === Role.ROLE_LIBVIRT ? 'libvirt' : role === Role.ROLE_NETWORK ? 'network' : undefined;
}

export function isAgentName(name: string): boolean {
  return dnsLabel().safeParse(name).success;
}

/** The subject of an agent's client certificate. */
export function agentSubject(
  identity: AgentIdentity,
): Pick<CertificateRequest, 'commonName' | 'organizations' | 'organizationalUnits'> {
  return {
    commonName: identity.name,
    organizations: [identity.role],
    organizationalUnits: [identity.uid],
  };
}

function subjectValues(cert: X509Certificate, key: string): string[] {
  return cert.subject
    .split('\n')
    .filter((line) => line.startsWith(`${key}=`))
    .map((line) => line.slice(key.length + 1));
}

/**
 * The identity a client certificate (DER) proves, or why it proves none: it must be signed by
 * `ca`, valid at `now`, for client authentication, and name exactly one agent (one CN that is a
 * DNS label, one O that is a role, one OU). TLS checked the chain at the handshake already; this
 * checks again on every call, because a connection outlives the certificate it was opened with.
 */
export function verifyAgentCertificate(
  der: Buffer,
  ca: X509Certificate,
  now: Date,
): { identity: AgentIdentity } | { problem: string } {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(der);
  } catch {
    return { problem: 'unreadable client certificate' };
  }
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) {
    return { problem: 'client certificate not signed by the control-plane CA' };
  }
  if (now < new Date(cert.validFrom) || now > new Date(cert.validTo)) {
    return { problem: `client certificate valid only from ${cert.validFrom} to ${cert.validTo}` };
  }
  if (!cert.keyUsage?.includes(clientAuthUsage)) {
    return { problem: 'certificate not issued for client authentication' };
  }
  const [names, roles, uids] = ['CN', 'O', 'OU'].map((key) => subjectValues(cert, key));
  const [name] = names ?? [];
  const [role] = roles ?? [];
  const [uid] = uids ?? [];
  if (
    names?.length !== 1 ||
    roles?.length !== 1 ||
    uids?.length !== 1 ||
    !name ||
    !uid ||
    !isAgentName(name) ||
    !(agentRoles as readonly string[]).includes(role ?? '')
  ) {
    return { problem: `certificate subject ${JSON.stringify(cert.subject)} does not name an agent` };
  }
  return { identity: { role: role as AgentRole, name, uid } };
}

/**
 * Why the agent holding `identity` may no longer act, given its object as the API has it now
 * (undefined: deleted); undefined while it may.
 */
export function revocationProblem(
  identity: AgentIdentity,
  object: KubernetesObject | undefined,
): string | undefined {
  const what = `${agentKind(identity.role)} ${identity.name}`;
  if (object === undefined) return `${what} was deleted`;
  if (object.metadata?.uid !== identity.uid) return `${what} was re-created since the certificate was issued`;
  if (object.metadata?.annotations?.[revokedAnnotation] === 'true') {
    return `${what} is revoked (annotation ${revokedAnnotation})`;
  }
  return undefined;
}
