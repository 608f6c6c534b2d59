/**
 * `loam wg-config` as a user runs it: the real CLI in a child process against `loam up` (no
 * controllers: the test writes the peers, their status and the config Secret as the WireGuardPeer
 * controller would).
 */
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { tenantGroupPrefix } from '../../controllers/apiserver/auth.js';
import { loadCertificateAuthority } from '../../controllers/pki/files.js';
import { issueKubeconfig } from '../../controllers/pki/kubeconfig.js';
import type { ControlPlane } from '../../controllers/up.js';
import { generateKeyPair, renderClientConfig } from '../../controllers/wireguardpeer/client-config.js';
import { assertFails, runLoam as loam } from '../harness/cli.js';
import { startPlane, tempDir } from '../harness/plane.js';

const group = { group: 'loam.dev', version: 'v1alpha1', plural: 'wireguardpeers' };
const namespace = 'default';

function peer(name: string, spec: Record<string, unknown> = {}) {
  return {
    apiVersion: 'loam.dev/v1alpha1',
    kind: 'WireGuardPeer',
    metadata: { name, namespace },
    spec: { network: 'lab', ...spec },
  };
}

describe('loam wg-config', function () {
  this.timeout(60_000);
  let dir: string;
  let plane: ControlPlane;
  let kubeconfig: string;
  const config = renderClientConfig({
    privateKey: generateKeyPair().privateKey,
    address: '10.99.0.2',
    dns: ['10.50.0.1'],
    serverPublicKey: generateKeyPair().publicKey,
    endpoint: '203.0.113.7:51820',
    allowedIPs: ['10.50.0.0/24', '10.99.0.0/24'],
    persistentKeepalive: 25,
  });

  before(async () => {
    dir = tempDir('wg-config');
    plane = await startPlane(dir);
    kubeconfig = plane.kubeconfigPath;
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(kubeconfig);
    const custom = kc.makeApiClient(k8s.CustomObjectsApi);
    const core = kc.makeApiClient(k8s.CoreV1Api);
    for (const body of [peer('laptop'), peer('phone', { publicKey: generateKeyPair().publicKey })]) {
      await custom.createNamespacedCustomObject({ ...group, namespace, body });
    }
    // Where the controller waits for the router: a key pair in the Secret, no wg0.conf yet.
    const pending = await custom.createNamespacedCustomObject({ ...group, namespace, body: peer('tablet') });
    await custom.replaceNamespacedCustomObjectStatus({
      ...group,
      namespace,
      name: 'tablet',
      body: {
        ...pending,
        status: {
          phase: 'Pending',
          conditions: [
            {
              type: 'Ready',
              status: 'False',
              reason: 'WaitingForServer',
              message: 'waiting for Network default/lab to report its WireGuard server',
              lastTransitionTime: new Date().toISOString(),
            },
          ],
        },
      },
    });
    const secret = (name: string, data: Record<string, string>): k8s.V1Secret => ({
      metadata: { name, namespace },
      type: 'Opaque',
      data: Object.fromEntries(
        Object.entries(data).map(([key, value]) => [key, Buffer.from(value).toString('base64')]),
      ),
    });
    const { privateKey } = generateKeyPair();
    await core.createNamespacedSecret({
      namespace,
      body: secret('laptop-wireguard', { privatekey: privateKey, 'wg0.conf': config }),
    });
    await core.createNamespacedSecret({
      namespace,
      body: secret('tablet-wireguard', { privatekey: privateKey }),
    });
  });

  after(async () => {
    await plane?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("prints the peer's client config from its Secret", async () => {
    const run = await loam(['wg-config', 'default/laptop', '--kubeconfig', kubeconfig]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, config);
  });

  it('prints the config and then a QR code with --qr', async () => {
    const run = await loam(['wg-config', 'default/laptop', '--qr', '--kubeconfig', kubeconfig]);
    assert.equal(run.code, 0, run.stderr);
    assert.ok(run.stdout.startsWith(`${config}\n`));
    const qr = run.stdout.slice(config.length);
    assert.match(qr, /[█▀▄]/);
    assert.ok(qr.split('\n').length > 20, 'a QR code of several rows');
  });

  it('reads $KUBECONFIG, else the admin kubeconfig in --data-dir, when given no --kubeconfig', async () => {
    const fromData = await loam(['wg-config', 'default/laptop', '--data-dir', dir]);
    assert.equal(fromData.code, 0, fromData.stderr);
    assert.equal(fromData.stdout, config);
    const empty = tempDir('wg-config-empty');
    try {
      const fromEnv = await loam(['wg-config', 'default/laptop', '--data-dir', empty], kubeconfig);
      assert.equal(fromEnv.code, 0, fromEnv.stderr);
      assert.equal(fromEnv.stdout, config);
      const neither = await loam(['wg-config', 'default/laptop', '--data-dir', empty]);
      assertFails(neither, /no .*admin\.kubeconfig: run loam up first, or pass --kubeconfig/);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it('says a missing peer is not found', async () => {
    const run = await loam(['wg-config', 'default/desktop', '--kubeconfig', kubeconfig]);
    assertFails(run, /^loam: wireguardpeer default\/desktop not found$/m);
  });

  it('refuses a peer that brings its own public key', async () => {
    const run = await loam(['wg-config', 'default/phone', '--kubeconfig', kubeconfig]);
    assertFails(run, /default\/phone has its own public key \(spec\.publicKey\).*write the config yourself/);
  });

  it('says what a peer without a config yet waits for', async () => {
    const run = await loam(['wg-config', 'default/tablet', '--kubeconfig', kubeconfig]);
    assertFails(run, /default\/tablet has no client config yet \(WaitingForServer: waiting for Network/);
  });

  it('names the namespace the credentials may not read', async () => {
    const tenant = join(dir, 'tenant.kubeconfig');
    const ca = loadCertificateAuthority(dir);
    writeFileSync(tenant, issueKubeconfig(ca, plane.apiServer.url, 'bob', [`${tenantGroupPrefix}other`]));
    const run = await loam(['wg-config', 'default/laptop', '--kubeconfig', tenant]);
    assertFails(run, /forbidden: these credentials may not read wireguardpeers in namespace default$/m);
  });

  it('rejects an argument that is not NAMESPACE/PEER', async () => {
    const refs = ['laptop', 'default/', 'a/b/c'];
    const runs = await Promise.all(refs.map((ref) => loam(['wg-config', ref, '--kubeconfig', kubeconfig])));
    runs.forEach((run, i) => {
      assertFails(run, new RegExp(`^loam: argument "${refs[i]}" is not NAMESPACE/PEER`));
    });
  });
});
