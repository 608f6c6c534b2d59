/**
 * Power actions as a user runs them: `loam up` with its local libvirt agent on libvirt's test
 * driver, an Instance applied with kubectl, then the real `loam reboot|reset|stop|start` CLI —
 * jobs through the hub to the agent (reboot, reset, and start/stop under runStrategy Manual) or
 * a change of spec.runStrategy (start/stop under the others) — with the Instance's phase
 * following, and the refusals as one line each. A real guest rebooted by `loam reset` is
 * test/e2e/boot.test.ts's.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tenantGroupPrefix } from '../../controllers/apiserver/auth.js';
import { loadCertificateAuthority } from '../../controllers/pki/files.js';
import { issueKubeconfig } from '../../controllers/pki/kubeconfig.js';
import { assertFails, runLoam } from '../harness/cli.js';
import { type Kubectl, kubectl } from '../harness/kubectl.js';
import { type FileServer, serveFiles, waitForStatus } from '../harness/libvirt.js';
import { LoamProcess } from '../harness/loam.js';
import { tempDir } from '../harness/plane.js';

const kernel = Buffer.from('a kernel, as far as the test driver can tell\n');

describe('loam start, stop, reboot, reset', function () {
  this.timeout(120_000);
  let dir: string;
  let loam: LoamProcess;
  let files: FileServer;
  let k: Kubectl;
  let host = '';

  const run = (args: string[]) => runLoam([...args, '--kubeconfig', loam.kubeconfig]);
  const field = async (path: string) =>
    (await k.run(['get', 'instance', 'hello', '-o', `jsonpath={${path}}`])).stdout;
  const phase = (wanted: string) =>
    waitForStatus(k, 'instance', 'hello', `phase ${wanted}`, (status) => status.phase === wanted, 30_000);

  before(async () => {
    dir = tempDir('power');
    files = await serveFiles({ '/vmlinuz': kernel });
    loam = await LoamProcess.start({
      dataDir: join(dir, 'data'),
      store: 'sqlite',
      libvirtUri: 'test:///default',
    });
    k = kubectl('1.33', loam.kubeconfig);
    const applied = await k.run(['apply', '-f', '-'], {
      input: `
apiVersion: loam.dev/v1alpha1
kind: Instance
metadata: { name: hello, namespace: default }
spec:
  memory: 64Mi
  kernel:
    url: ${files.url('/vmlinuz')}
    sha256: ${createHash('sha256').update(kernel).digest('hex')}
`,
    });
    assert.equal(applied.code, 0, applied.stderr);
    await phase('Running');
    host = await field('.status.host');
  });

  after(async () => {
    await loam?.stop();
    await files?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reboots and resets a running Instance through its agent', async () => {
    for (const action of ['reboot', 'reset']) {
      const done = await run([action, 'default/hello']);
      assert.equal(done.code, 0, done.stderr);
      assert.equal(done.stdout, `default/hello: ${action} done on Host ${host}\n`);
    }
    assert.equal(await field('.status.phase'), 'Running');
  });

  it('stops and starts under runStrategy Always by changing the run strategy', async () => {
    const stopped = await run(['stop', 'default/hello']);
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.equal(stopped.stdout, 'default/hello: spec.runStrategy changed from Always to Halted\n');
    await phase('Stopped');
    assertFails(
      await run(['stop', 'default/hello']),
      /^loam: cannot stop instance default\/hello: Operation cannot be fulfilled on instances\.loam\.dev "hello": runStrategy Halted keeps the Instance stopped already \(HTTP 409\)$/m,
    );
    assertFails(
      await run(['reboot', 'default/hello']),
      /^loam: cannot reboot instance default\/hello: .*the Instance is not running on Host \S+ \(phase Stopped\) \(HTTP 409\)$/m,
    );
    const started = await run(['start', 'default/hello']);
    assert.equal(started.code, 0, started.stderr);
    assert.equal(started.stdout, 'default/hello: spec.runStrategy changed from Halted to Always\n');
    await phase('Running');
  });

  it('stops and starts its domain under runStrategy Manual, which stays Manual', async () => {
    const patched = await k.run([
      'patch',
      'instance',
      'hello',
      '--type',
      'merge',
      '-p',
      '{"spec":{"runStrategy":"Manual"}}',
    ]);
    assert.equal(patched.code, 0, patched.stderr);
    const stopped = await run(['stop', 'default/hello']);
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.equal(stopped.stdout, `default/hello: stop done on Host ${host}\n`);
    await phase('Stopped');
    const started = await run(['start', 'default/hello']);
    assert.equal(started.code, 0, started.stderr);
    assert.equal(started.stdout, `default/hello: start done on Host ${host}\n`);
    await phase('Running');
    assert.equal(await field('.spec.runStrategy'), 'Manual');
  });

  it('honours a dry run in the body, as virtctl --dry-run sends it, and names a bad one', async () => {
    const reset = '/apis/loam.dev/v1alpha1/namespaces/default/instances/hello/reset';
    const dry = await k.run(['replace', '--raw', reset, '-f', '-'], { input: '{"dryRun":["All"]}' });
    assert.equal(dry.code, 0, dry.stderr);
    assert.equal(
      (JSON.parse(dry.stdout) as { message: string }).message,
      `default/hello: reset on Host ${host} (dry run: not done)`,
    );
    const bad = await k.run(['replace', '--raw', reset, '-f', '-'], { input: '{"dryRun":"All"}' });
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /dryRun: "All" is not a list of strings/);
  });

  it('refuses another tenant, a missing Instance and a bad argument, in one line each', async () => {
    const tenant = join(dir, 'tenant.kubeconfig');
    const ca = loadCertificateAuthority(join(dir, 'data'));
    writeFileSync(tenant, issueKubeconfig(ca, loam.url, 'bob', [`${tenantGroupPrefix}other`]));
    assertFails(
      await runLoam(['reset', 'default/hello', '--kubeconfig', tenant]),
      /^loam: forbidden: these credentials may not reset instance default\/hello$/m,
    );
    assertFails(await run(['reboot', 'default/nope']), /^loam: instance default\/nope not found$/m);
    assertFails(await run(['reboot', 'hello']), /argument "hello" is not NAMESPACE\/INSTANCE/);
    // What kubectl reads of the API: the subresources, put only.
    const discovery = await k.run(['get', '--raw', '/apis/loam.dev/v1alpha1']);
    const resources = (JSON.parse(discovery.stdout) as { resources: { name: string; verbs: string[] }[] })
      .resources;
    for (const action of ['start', 'stop', 'reboot', 'reset']) {
      assert.deepEqual(resources.find((r) => r.name === `instances/${action}`)?.verbs, ['update'], action);
    }
  });
});
