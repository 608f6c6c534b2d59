/**
 * The control plane's PKI on disk (standalone mode): the CA, the API server's serving
 * certificate and the key that signs bearer tokens, in `<dataDir>/pki`, made on first start and
 * reused after. Private keys are written
 * owner-only.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import {
  type CertificateAuthority,
  createCertificateAuthority,
  generateKeyPair,
  issueCertificate,
} from './certificates.js';

export interface ServingPki {
  ca: CertificateAuthority;
  certPem: string;
  keyPem: string;
  /** Signs bearer tokens (controllers/pki/tokens.ts); a key of its own, not the CA's. */
  tokenKeyPem: string;
}

const tokenKeyFile = 'token.key';

function readOrCreate(dir: string, name: string, create: () => { certPem: string; keyPem: string }) {
  const certPath = join(dir, `${name}.crt`);
  const keyPath = join(dir, `${name}.key`);
  if (existsSync(certPath) && existsSync(keyPath)) {
    return { certPem: readFileSync(certPath, 'utf8'), keyPem: readFileSync(keyPath, 'utf8') };
  }
  const made = create();
  writeFileSync(keyPath, made.keyPem, { mode: 0o600 });
  writeFileSync(certPath, made.certPem, { mode: 0o644 });
  return made;
}

/** Loads or makes the CA and a serving certificate valid for loopback, this host, and `extraSans`. */
export function loadServingPki(dataDir: string, extraSans: string[] = []): ServingPki {
  const dir = join(dataDir, 'pki');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ca = readOrCreate(dir, 'ca', createCertificateAuthority);
  const caAuthority: CertificateAuthority = { certPem: ca.certPem, keyPem: ca.keyPem };
  const serving = readOrCreate(dir, 'apiserver', () => {
    const keys = generateKeyPair();
    const sans = ['localhost', hostname(), '127.0.0.1', '::1', ...extraSans];
    const isIp = (s: string) => isIP(s) !== 0;
    const certPem = issueCertificate(caAuthority, {
      commonName: 'loam-apiserver',
      dnsNames: sans.filter((s) => !isIp(s)),
      ipAddresses: sans.filter(isIp),
      usage: 'server',
      validityDays: 365,
      publicKeyPem: keys.publicKeyPem,
    });
    return { certPem, keyPem: keys.privateKeyPem };
  });
  const tokenKeyPath = join(dir, tokenKeyFile);
  if (!existsSync(tokenKeyPath))
    writeFileSync(tokenKeyPath, generateKeyPair().privateKeyPem, { mode: 0o600 });
  return { ca: caAuthority, ...serving, tokenKeyPem: readFileSync(tokenKeyPath, 'utf8') };
}

/** The key bearer tokens are signed with, for issuing one; fails clearly when there is none. */
export function loadTokenSigningKey(dataDir: string): string {
  const path = join(dataDir, 'pki', tokenKeyFile);
  if (!existsSync(path)) throw new Error(`no token key at ${path}: run loam up first, or pass --data-dir`);
  return readFileSync(path, 'utf8');
}

/** The CA of an existing control plane, for issuing credentials; fails clearly when there is none. */
export function loadCertificateAuthority(dataDir: string): CertificateAuthority {
  const dir = join(dataDir, 'pki');
  const certPath = join(dir, 'ca.crt');
  if (!existsSync(certPath)) {
    throw new Error(`no CA in ${dir}: run loam up first, or pass --data-dir`);
  }
  return { certPem: readFileSync(certPath, 'utf8'), keyPem: readFileSync(join(dir, 'ca.key'), 'utf8') };
}
