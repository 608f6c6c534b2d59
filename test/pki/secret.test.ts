/** The cluster-mode CA in a Secret: made once, whichever replica asks first; the same for all. */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import * as k8s from '@kubernetes/client-node';
import { loadOrCreateCertificateAuthoritySecret } from '../../controllers/pki/secret.js';
import type { ControlPlane } from '../../controllers/up.js';
import { startPlane, tempDir } from '../harness/plane.js';

describe('pki/secret', function () {
  this.timeout(30_000);
  let dir: string;
  let plane: ControlPlane;
  before(async () => {
    dir = tempDir('ca-secret');
    plane = await startPlane(dir);
  });
  after(async () => {
    await plane?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('creates the CA Secret once when replicas race, and every replica gets the same CA', async () => {
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(plane.kubeconfigPath);
    const api = k8s.KubernetesObjectApi.makeApiClient(kc);
    const ref = { namespace: 'kube-system', name: 'loam-ca' };
    const cas = await Promise.all(
      Array.from({ length: 4 }, () => loadOrCreateCertificateAuthoritySecret(api, ref)),
    );
    assert.equal(new Set(cas.map((ca) => ca.certPem)).size, 1);
    const later = await loadOrCreateCertificateAuthoritySecret(api, ref);
    assert.equal(later.certPem, cas[0]?.certPem);
    assert.equal(later.keyPem, cas[0]?.keyPem);
    const secret = (await api.read({ apiVersion: 'v1', kind: 'Secret', metadata: ref })) as k8s.V1Secret;
    assert.equal(secret.type, 'kubernetes.io/tls');
  });
});
