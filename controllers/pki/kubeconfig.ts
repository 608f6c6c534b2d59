/** kubeconfig files for kubectl and client libraries, with the credentials embedded. */
import YAML from 'yaml';
import { type CertificateAuthority, generateKeyPair, issueCertificate } from './certificates.js';

export interface KubeconfigOptions {
  server: string;
  caPem: string;
  user: string;
  certPem: string;
  keyPem: string;
  namespace?: string;
  contextName?: string;
}

const b64 = (text: string) => Buffer.from(text).toString('base64');

export function kubeconfigYaml(options: KubeconfigOptions): string {
  const context = options.contextName ?? 'loam';
  return YAML.stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [
      { name: 'loam', cluster: { server: options.server, 'certificate-authority-data': b64(options.caPem) } },
    ],
    users: [
      {
        name: options.user,
        user: { 'client-certificate-data': b64(options.certPem), 'client-key-data': b64(options.keyPem) },
      },
    ],
    contexts: [
      {
        name: context,
        context: {
          cluster: 'loam',
          user: options.user,
          ...(options.namespace ? { namespace: options.namespace } : {}),
        },
      },
    ],
    'current-context': context,
  });
}

/** A kubeconfig with a fresh client certificate for `user` in `groups`. */
export function issueKubeconfig(
  ca: CertificateAuthority,
  server: string,
  user: string,
  groups: string[],
  options: { namespace?: string; validityDays?: number } = {},
): string {
  const keys = generateKeyPair();
  const certPem = issueCertificate(ca, {
    commonName: user,
    organizations: groups,
    usage: 'client',
    validityDays: options.validityDays ?? 365,
    publicKeyPem: keys.publicKeyPem,
  });
  return kubeconfigYaml({
    server,
    caPem: ca.certPem,
    user,
    certPem,
    keyPem: keys.privateKeyPem,
    ...(options.namespace ? { namespace: options.namespace } : {}),
  });
}
