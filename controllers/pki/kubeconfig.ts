/** kubeconfig files for kubectl and client libraries, with the credentials embedded. */
import YAML from 'yaml';
import { type CertificateAuthority, generateKeyPair, issueCertificate } from './certificates.js';

/** A client certificate and its key, or a bearer token. */
export type KubeconfigCredential = { certPem: string; keyPem: string } | { token: string };

export interface KubeconfigOptions {
  server: string;
  caPem: string;
  user: string;
  credential: KubeconfigCredential;
  namespace?: string;
  contextName?: string;
}

const b64 = (text: string) => Buffer.from(text).toString('base64');

export function kubeconfigYaml(options: KubeconfigOptions): string {
  const context = options.contextName ?? 'loam';
  const { credential } = options;
  return YAML.stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [
      { name: 'loam', cluster: { server: options.server, 'certificate-authority-data': b64(options.caPem) } },
    ],
    users: [
      {
        name: options.user,
        user:
          'token' in credential
            ? { token: credential.token }
            : {
                'client-certificate-data': b64(credential.certPem),
                'client-key-data': b64(credential.keyPem),
              },
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

/**
 * A kubeconfig for `user` in `groups`: with the bearer `token` given, or else a fresh client
 * certificate valid for `validityDays` (default 365).
 */
export function issueKubeconfig(
  ca: CertificateAuthority,
  server: string,
  user: string,
  groups: string[],
  options: { namespace?: string; validityDays?: number; token?: string } = {},
): string {
  const namespace = options.namespace ? { namespace: options.namespace } : {};
  if (options.token !== undefined) {
    return kubeconfigYaml({
      server,
      caPem: ca.certPem,
      user,
      credential: { token: options.token },
      ...namespace,
    });
  }
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
    credential: { certPem, keyPem: keys.privateKeyPem },
    ...namespace,
  });
}
