/**
 * The README's quickstart as a new user runs it: `loam up` (here on libvirt's test driver, which
 * defines and "runs" domains without booting them), then kubectl applies a Network and an
 * Instance booting a kernel from a URL; the Instance reaches Running on this machine's Host with
 * an address, and `kubectl delete` removes it and its domain. Real boots are the libvirt agent's
 * own tests.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import YAML from 'yaml';
import { parseQuantity } from '../../crds/quantity.js';
import type { Host } from '../../crds/v1alpha1/index.js';
import { kubectl } from '../harness/kubectl.js';
import { LoamProcess } from '../harness/loam.js';
import { tempDir } from '../harness/plane.js';
import { pollUntil } from '../harness/poll.js';

const kernel = Buffer.from('a kernel, as far as the test driver can tell\n');

describe('the quickstart: loam up, kubectl apply, Running', function () {
  this.timeout(90_000);
  let dir: string;
  let loam: LoamProcess | undefined;
  let files: Server;

  before(async () => {
    dir = tempDir('quickstart');
    files = createServer((request, response) => {
      if (request.url === '/vmlinuz') response.end(kernel);
      else response.writeHead(404).end();
    });
    await new Promise<void>((resolve) => files.listen(0, '127.0.0.1', resolve));
  });

  after(async () => {
    await loam?.stop();
    files.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs an applied Instance on the local Host and deletes it', async () => {
    loam = await LoamProcess.start({
      dataDir: join(dir, 'data'),
      store: 'sqlite',
      libvirtUri: 'test:///default',
    });
    const k = kubectl('1.33', loam.kubeconfig);
    const { port } = files.address() as AddressInfo;
    const manifests = `
apiVersion: loam.dev/v1alpha1
kind: Network
metadata: { name: lab, namespace: default }
spec: { cidr: 10.20.0.0/24 }
---
apiVersion: loam.dev/v1alpha1
kind: Instance
metadata: { name: hello, namespace: default }
spec:
  cpus: 1
  memory: 128Mi
  kernel:
    url: http://127.0.0.1:${port}/vmlinuz
    sha256: ${createHash('sha256').update(kernel).digest('hex')}
    cmdline: console=ttyS0
  networks: [{ name: lab }]
`;
    const applied = await k.run(['apply', '-f', '-'], { input: manifests });
    assert.equal(applied.code, 0, applied.stderr);

    let shown = '';
    await pollUntil(
      async () => {
        shown = (await k.run(['get', 'instance', 'hello', '--no-headers'])).stdout;
        return /\bRunning\b/.test(shown);
      },
      { timeoutMs: 45_000, what: () => `the Instance to run (kubectl get: ${shown.trim()})` },
    );
    assert.match(shown, /10\.20\.0\.\d+/, 'kubectl get shows its address');

    // The Host keeps 512Mi of memory for itself by default (--reserved-memory), no cpus.
    const hosts = await k.run(['get', 'hosts', '-o', 'yaml']);
    assert.equal(hosts.code, 0, hosts.stderr);
    const status = (YAML.parse(hosts.stdout) as { items: Host[] }).items[0]?.status;
    assert.equal(status?.allocatable?.cpus, status?.capacity?.cpus);
    assert.equal(
      parseQuantity(status?.capacity?.memory ?? 0) - parseQuantity(status?.allocatable?.memory ?? 0),
      512n * 1024n * 1024n,
      hosts.stdout,
    );

    const deleted = await k.run(['delete', 'instance', 'hello', '--timeout=30s']);
    assert.equal(deleted.code, 0, deleted.stderr);
    const gone = await k.run(['get', 'instance', 'hello']);
    assert.match(gone.stderr, /NotFound/);
  });
});
