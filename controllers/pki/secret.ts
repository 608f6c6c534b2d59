/**
 * The control plane's CA in cluster mode: a Secret (type kubernetes.io/tls) instead of the data
 * dir, made on first start by whichever replica gets there first — the others find the Secret
 * already created and use that CA, so every replica signs with the same one.
 */
import * as k8s from '@kubernetes/client-node';
import { type CertificateAuthority, createCertificateAuthority } from './certificates.js';

export interface SecretRef {
  namespace: string;
  name: string;
}

const b64 = (text: string) => Buffer.from(text).toString('base64');
const unb64 = (text: string | undefined) => Buffer.from(text ?? '', 'base64').toString();

async function read(api: k8s.KubernetesObjectApi, ref: SecretRef): Promise<CertificateAuthority | undefined> {
  try {
    const secret = (await api.read({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: ref,
    })) as k8s.V1Secret;
    const certPem = unb64(secret.data?.['tls.crt']);
    const keyPem = unb64(secret.data?.['tls.key']);
    if (!certPem || !keyPem)
      throw new Error(`Secret ${ref.namespace}/${ref.name} has no tls.crt and tls.key`);
    return { certPem, keyPem };
  } catch (err) {
    if (err instanceof k8s.ApiException && err.code === 404) return undefined;
    throw err;
  }
}

export async function loadOrCreateCertificateAuthoritySecret(
  api: k8s.KubernetesObjectApi,
  ref: SecretRef,
): Promise<CertificateAuthority> {
  const existing = await read(api, ref);
  if (existing) return existing;
  const ca = createCertificateAuthority();
  try {
    await api.create({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { ...ref, labels: { 'app.kubernetes.io/name': 'loam' } },
      type: 'kubernetes.io/tls',
      data: { 'tls.crt': b64(ca.certPem), 'tls.key': b64(ca.keyPem) },
    } as k8s.V1Secret);
    return ca;
  } catch (err) {
    // Another replica created it between our read and our create: theirs is the CA.
    if (!(err instanceof k8s.ApiException && err.code === 409)) throw err;
    const created = await read(api, ref);
    if (!created) throw err;
    return created;
  }
}
