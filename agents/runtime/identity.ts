/**
 * The agent's identity in its data dir, under identity/: who it is (agent.json: name and role),
 * the CA bundle it trusts (ca.crt), and its certificate followed by the private key made on this
 * machine (agent.pem, owner-only). Certificate and key share one file so that a rotation replaces
 * both with one rename: a crash leaves the old pair or the new pair, never a key without its
 * certificate. agent.pem is written last and is what marks an enrolled data dir.
 */
import { createPrivateKey, createPublicKey, randomBytes, X509Certificate } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { type AgentRole, agentRoles, caPin } from '../../controllers/pki/certificates.js';
import { LoamError } from '../../crds/errors.js';

export interface Identity {
  name: string;
  role: AgentRole;
  keyPem: string;
  certPem: string;
  /** One or more CA certificates (PEM), trusted for the hub's serving certificate. */
  caPem: string;
}

const metaSchema = z.object({ name: z.string(), role: z.enum(agentRoles) });

export function identityDir(dataDir: string): string {
  return join(dataDir, 'identity');
}

const certificatePattern = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n?/g;
const keyPattern = /-----BEGIN (?:RSA |EC )?PRIVATE KEY-----[^-]+-----END (?:RSA |EC )?PRIVATE KEY-----\n?/;

/** The certificates of a PEM bundle, in order. */
export function pemCertificates(bundle: string): string[] {
  return bundle.match(certificatePattern) ?? [];
}

function damaged(dir: string, why: string): LoamError {
  return new LoamError(
    'Internal',
    `the identity in ${dir} is damaged (${why}): remove ${dir} and enroll again with a new --token`,
  );
}

/** The identity in `dataDir`, or undefined when the agent has not enrolled yet. */
export function loadIdentity(dataDir: string): Identity | undefined {
  const dir = identityDir(dataDir);
  const pemPath = join(dir, 'agent.pem');
  if (!existsSync(pemPath)) return undefined;
  try {
    const meta = metaSchema.parse(JSON.parse(readFileSync(join(dir, 'agent.json'), 'utf8')));
    const pem = readFileSync(pemPath, 'utf8');
    const certPem = pemCertificates(pem)[0];
    const keyPem = keyPattern.exec(pem)?.[0];
    if (!certPem || !keyPem) throw new Error('agent.pem must hold a certificate and its key');
    if (!new X509Certificate(certPem).checkPrivateKey(createPrivateKey(keyPem))) {
      throw new Error('the key in agent.pem does not match its certificate');
    }
    const caPem = readFileSync(join(dir, 'ca.crt'), 'utf8');
    if (pemCertificates(caPem).length === 0) throw new Error('ca.crt holds no certificate');
    return { ...meta, keyPem, certPem, caPem };
  } catch (err) {
    throw damaged(dir, (err as Error).message);
  }
}

// Write a temporary file, flush it, and rename it over the old one, so a reader (or a restart
// after a crash) sees the whole old file or the whole new one.
function writeAtomically(path: string, data: string, mode: number): void {
  const temporary = `${path}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(temporary, data, { mode, flush: true });
  renameSync(temporary, path);
}

export function saveIdentity(dataDir: string, identity: Identity): void {
  const dir = identityDir(dataDir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeAtomically(
    join(dir, 'agent.json'),
    `${JSON.stringify({ name: identity.name, role: identity.role })}\n`,
    0o644,
  );
  writeAtomically(join(dir, 'ca.crt'), identity.caPem, 0o644);
  writeAtomically(join(dir, 'agent.pem'), `${identity.certPem.trim()}\n${identity.keyPem.trim()}\n`, 0o600);
  // The renames are durable only once the directory itself is flushed.
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Whether any CA of `bundle` has the public key that `pin` names. */
export function bundleMatchesPin(bundle: string, pin: string): boolean {
  return pemCertificates(bundle).some((pem) => caPin(pem) === pin);
}

/** Refuses an identity made for another agent, or enrolled with a control plane `caPin` does not name. */
export function checkIdentity(
  identity: Identity,
  config: { name: string; role: AgentRole; caPin?: string | undefined; dataDir: string },
): void {
  if (identity.name !== config.name || identity.role !== config.role) {
    throw new LoamError(
      'Invalid',
      `the data dir ${config.dataDir} holds the identity of ${identity.role} agent "${identity.name}", not of ${config.role} agent "${config.name}": pass --name ${identity.name} or use another --data-dir`,
    );
  }
  if (config.caPin !== undefined && !bundleMatchesPin(identity.caPem, config.caPin)) {
    throw new LoamError(
      'Forbidden',
      `the CA in ${identityDir(config.dataDir)} does not match --ca-pin: this data dir was enrolled with another control plane`,
    );
  }
}

/** Whether `certPem` certifies the public key `publicKeyPem`: a hub's answer is for the key we sent. */
export function certifiesKey(certPem: string, publicKeyPem: string): boolean {
  try {
    return new X509Certificate(certPem).publicKey.equals(createPublicKey(publicKeyPem));
  } catch {
    return false;
  }
}

export interface Validity {
  notBefore: Date;
  notAfter: Date;
}

export function certificateValidity(certPem: string): Validity {
  const cert = new X509Certificate(certPem);
  return { notBefore: new Date(cert.validFrom), notAfter: new Date(cert.validTo) };
}

/** When to renew: at `fraction` of the way from notBefore to notAfter. */
export function renewalTime(validity: Validity, fraction: number): Date {
  const from = validity.notBefore.getTime();
  return new Date(from + fraction * (validity.notAfter.getTime() - from));
}
