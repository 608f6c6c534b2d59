/**
 * Loam's PKI: a CA made on first start, serving certificates with the SANs clients dial, and
 * client certificates whose subject says who the holder is (CN = user or agent, O = groups or
 * role), as Kubernetes reads them. Keys come from Node's crypto (fast); node-forge builds and
 * signs the certificates. Whoever needs a certificate makes its own key and hands over only the
 * public half, so private keys never leave the machine that made them.
 */
import {
  createHash,
  sign as cryptoSign,
  generateKeyPairSync,
  randomBytes,
  X509Certificate,
} from 'node:crypto';
import forge from 'node-forge';

/**
 * What an agent is for, as its client certificate's O says: libvirt (runs Instances; its object
 * is a Host) or network (makes Networks real; its object is a Router).
 */
export const agentRoles = ['libvirt', 'network'] as const;
export type AgentRole = (typeof agentRoles)[number];

export interface KeyPair {
  publicKeyPem: string;
  privateKeyPem: string;
}

export interface CertificateAuthority {
  certPem: string;
  keyPem: string;
}

export interface CertificateRequest {
  commonName: string;
  /** Subject O entries: Kubernetes groups for users, the role for agents. */
  organizations?: string[];
  /** Subject OU entries: for agents, the uid of their Host or Router, which revocation checks. */
  organizationalUnits?: string[];
  dnsNames?: string[];
  ipAddresses?: string[];
  usage: 'server' | 'client';
  validityDays: number;
  /** Overrides validityDays: short-lived agent certificates (and tests of their rotation). */
  validitySeconds?: number;
  publicKeyPem: string;
}

export function generateKeyPair(): KeyPair {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  return { publicKeyPem: publicKey, privateKeyPem: privateKey };
}

function newCertificate(publicKeyPem: string, validitySeconds: number): forge.pki.Certificate {
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(publicKeyPem);
  // Positive 128-bit serial: the high bit cleared so DER does not read it as negative.
  const serial = randomBytes(16);
  serial[0] = (serial[0] as number) & 0x7f;
  cert.serialNumber = serial.toString('hex');
  // Backdated a little (5 minutes, or a tenth of a short lifetime) so a peer whose clock runs
  // slightly behind still accepts it.
  const now = Date.now();
  cert.validity.notBefore = new Date(now - Math.min(5 * 60_000, validitySeconds * 100));
  cert.validity.notAfter = new Date(now + validitySeconds * 1000);
  return cert;
}

/** node-forge's builder of the to-be-signed part, which its type declarations leave out. */
interface TbsBuilder {
  getTBSCertificate(cert: forge.pki.Certificate): forge.asn1.Asn1;
}

/**
 * Signs with Node's crypto rather than node-forge's JavaScript RSA (about 1 ms instead of 25-80 ms
 * that would block the event loop of the hub on every enrollment): node-forge lays out the
 * to-be-signed certificate, Node signs its DER.
 */
function sign(cert: forge.pki.Certificate, keyPem: string): string {
  const sha256WithRsa = forge.pki.oids.sha256WithRSAEncryption as string;
  cert.signatureOid = sha256WithRsa;
  cert.siginfo.algorithmOid = sha256WithRsa;
  const tbs = Buffer.from(
    forge.asn1.toDer((forge.pki as unknown as TbsBuilder).getTBSCertificate(cert)).getBytes(),
    'binary',
  );
  cert.signature = cryptoSign('sha256', tbs, keyPem).toString('binary');
  return forge.pki.certificateToPem(cert);
}

export function createCertificateAuthority(
  commonName = 'loam-ca',
  validityDays = 3650,
): CertificateAuthority {
  const keys = generateKeyPair();
  const cert = newCertificate(keys.publicKeyPem, validityDays * 86_400);
  const subject = [{ name: 'commonName', value: commonName }];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  return { certPem: sign(cert, keys.privateKeyPem), keyPem: keys.privateKeyPem };
}

export function issueCertificate(ca: CertificateAuthority, request: CertificateRequest): string {
  const caCert = forge.pki.certificateFromPem(ca.certPem);
  const cert = newCertificate(request.publicKeyPem, request.validitySeconds ?? request.validityDays * 86_400);
  cert.setSubject([
    { name: 'commonName', value: request.commonName },
    ...(request.organizations ?? []).map((value) => ({ name: 'organizationName', value })),
    ...(request.organizationalUnits ?? []).map((value) => ({ name: 'organizationalUnitName', value })),
  ]);
  cert.setIssuer(caCert.subject.attributes);
  const altNames = [
    ...(request.dnsNames ?? []).map((value) => ({ type: 2, value })),
    ...(request.ipAddresses ?? []).map((ip) => ({ type: 7, ip })),
  ];
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: request.usage === 'server', clientAuth: request.usage === 'client' },
    { name: 'authorityKeyIdentifier', keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
    ...(altNames.length > 0 ? [{ name: 'subjectAltName', altNames }] : []),
  ]);
  return sign(cert, ca.keyPem);
}

/**
 * A PKCS#10 request for `keys` (PEM): how an agent asks for a certificate without its private key
 * leaving the machine. The subject is informational; the hub decides what the certificate says.
 */
export function createCertificateSigningRequest(keys: KeyPair, commonName: string): string {
  const csr = forge.pki.createCertificationRequest();
  csr.publicKey = forge.pki.publicKeyFromPem(keys.publicKeyPem);
  csr.setSubject([{ name: 'commonName', value: commonName }]);
  csr.sign(forge.pki.privateKeyFromPem(keys.privateKeyPem), forge.md.sha256.create());
  return forge.pki.certificationRequestToPem(csr);
}

/**
 * The public key (PEM) of a certificate signing request whose signature proves its sender holds
 * the private key; undefined for anything else (malformed, not RSA, bad signature).
 */
export function verifiedRequestKey(csrPem: string): string | undefined {
  try {
    const csr = forge.pki.certificationRequestFromPem(csrPem);
    if (!csr.publicKey || !csr.verify()) return undefined;
    return forge.pki.publicKeyToPem(csr.publicKey as forge.pki.rsa.PublicKey);
  } catch {
    return undefined;
  }
}

/** The CA pin agents check before trusting a control plane: `sha256:` of the CA's SubjectPublicKeyInfo. */
export function caPin(caCertPem: string): string {
  const spki = new X509Certificate(caCertPem).publicKey.export({ type: 'spki', format: 'der' });
  return `sha256:${createHash('sha256').update(spki).digest('hex')}`;
}
