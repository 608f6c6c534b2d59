/**
 * kubectl end to end: the real kubectl 1.27 and 1.33 against a running `loam up` (the CLI, in a
 * child process), on the embedded store and on a real etcd, with default client-side validation.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { EtcdServer } from '../harness/etcd.js';
import { type Kubectl, kubectl } from '../harness/kubectl.js';
import { LoamProcess } from '../harness/loam.js';
import { pollUntil } from '../harness/poll.js';

const exec = promisify(execFile);
const cli = new URL('../../bin/loam.js', import.meta.url).pathname;
const versions = ['1.27', '1.33'];

function networkManifest(namespace: string, name: string, spec: string, extraMetadata = ''): string {
  return `apiVersion: loam.dev/v1alpha1
kind: Network
metadata:
  name: ${name}
  namespace: ${namespace}
${extraMetadata}spec:
${spec}`;
}

for (const backend of ['sqlite', 'etcd'] as const) {
  describe(`kubectl against loam up (${backend})`, function () {
    this.timeout(120_000);
    let dir: string;
    let etcd: EtcdServer | undefined;
    let loam: LoamProcess;

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), `loam-e2e-${backend}-`));
      if (backend === 'etcd') etcd = await EtcdServer.start();
      loam = await LoamProcess.start({
        dataDir: join(dir, 'data'),
        store: backend,
        ...(etcd ? { etcdEndpoints: [etcd.endpoint] } : {}),
      });
    });
    after(async () => {
      await loam?.stop();
      await etcd?.destroy();
      rmSync(dir, { recursive: true, force: true });
    });

    /** A manifest file in the test's temp dir. */
    const file = (name: string, text: string) => {
      const path = join(dir, name);
      writeFileSync(path, text);
      return path;
    };

    /** A kubeconfig from `loam kubeconfig`, as an admin would issue it. */
    const issue = async (name: string, args: string[]) => {
      const { stdout } = await exec(process.execPath, [
        cli,
        'kubeconfig',
        '--data-dir',
        join(dir, 'data'),
        '--server',
        loam.url,
        ...args,
      ]);
      return file(name, stdout);
    };

    for (const version of versions) {
      describe(`kubectl ${version}`, () => {
        const ns = `e2e-${version.replace('.', '')}`;
        let k: Kubectl;

        before(async () => {
          k = kubectl(version, loam.kubeconfig);
          await k('create', 'namespace', ns);
        });

        it('applies a manifest, applies a change to it, and drops a field removed from it', async () => {
          const spec = '  cidr: 10.20.0.0/24\n  egress: true\n  dns: [10.20.0.1]\n';
          const path = file(`${ns}-apply.yaml`, networkManifest(ns, 'lab', spec));
          assert.match(await k('apply', '-f', path), /network.loam.dev\/lab created/);
          assert.match(await k('apply', '-f', path), /network.loam.dev\/lab unchanged/);
          file(`${ns}-apply.yaml`, networkManifest(ns, 'lab', spec.replace('egress: true', 'egress: false')));
          assert.match(await k('apply', '-f', path), /network.loam.dev\/lab configured/);
          assert.equal(await k('-n', ns, 'get', 'network', 'lab', '-o', 'jsonpath={.spec.egress}'), 'false');
          file(`${ns}-apply.yaml`, networkManifest(ns, 'lab', '  cidr: 10.20.0.0/24\n  egress: false\n'));
          assert.match(await k('apply', '-f', path), /network.loam.dev\/lab configured/);
          const spec2 = JSON.parse(await k('-n', ns, 'get', 'network', 'lab', '-o', 'json')).spec;
          assert.equal(spec2.dns, undefined);
          assert.equal(spec2.cidr, '10.20.0.0/24');
        });

        it('lists the loam.dev kinds with short names, and instances with their columns', async () => {
          const resources = await k('api-resources', '--api-group=loam.dev');
          assert.match(resources, /instances\s+inst\s+loam\.dev\/v1alpha1\s+true\s+Instance/);
          assert.match(resources, /hosts\s+hv\s+loam\.dev\/v1alpha1\s+false\s+Host/);
          const vm = `apiVersion: loam.dev/v1alpha1
kind: Instance
metadata: {name: vm1, namespace: ${ns}}
spec: {kernel: {url: "https://images.example.org/k", sha256: "${'a'.repeat(64)}"}}
`;
          await k('create', '-f', file(`${ns}-vm.yaml`, vm));
          const table = await k('-n', ns, 'get', 'inst');
          assert.match(table, /^NAME\s+PHASE\s+HOST\s+IP\s+AGE\n/);
          // No Host: the Instance controller reports it Scheduling (unless kubectl was quicker).
          assert.match(table, /\nvm1\s+(Scheduling\s+)?\d+s\n/);
          assert.equal(
            await k('-n', ns, 'get', 'instance', 'vm1', '-o', 'jsonpath={.spec.runStrategy}'),
            'Always',
          );
        });

        it('applies server-side: a second field manager conflicts until it forces, and removed fields go', async () => {
          const mine = (spec: string) => file(`${ns}-ssa.yaml`, networkManifest(ns, 'ssa', spec));
          assert.match(
            await k(
              'apply',
              '--server-side',
              '-f',
              mine('  cidr: 10.38.0.0/24\n  egress: true\n  dns: [10.38.0.1]\n'),
            ),
            /network.loam.dev\/ssa serverside-applied/,
          );
          const theirs = file(
            `${ns}-ssa-ops.yaml`,
            networkManifest(ns, 'ssa', '  cidr: 10.38.0.0/24\n  egress: false\n'),
          );
          const conflict = await k.run(['apply', '--server-side', '--field-manager=ops', '-f', theirs]);
          assert.equal(conflict.code, 1);
          assert.match(
            conflict.stderr,
            /Apply failed with 1 conflict: conflict with "kubectl": \.spec\.egress/,
          );
          assert.match(
            await k('apply', '--server-side', '--field-manager=ops', '--force-conflicts', '-f', theirs),
            /serverside-applied/,
          );
          // kubectl's configuration drops egress (now ops') and dns (only its own): dns goes, egress stays.
          await k('apply', '--server-side', '-f', mine('  cidr: 10.38.0.0/24\n'));
          const obj = JSON.parse(
            await k('-n', ns, 'get', 'network', 'ssa', '-o', 'json', '--show-managed-fields'),
          );
          assert.equal(obj.spec.egress, false);
          assert.equal(obj.spec.dns, undefined);
          // The Network controller's writes (finalizer, status) are its own entries.
          assert.deepEqual(
            obj.metadata.managedFields
              .map((e: { manager: string; operation: string }) => `${e.manager}/${e.operation}`)
              .filter((entry: string) => !entry.startsWith('loam-controller/'))
              .sort(),
            ['kubectl/Apply', 'ops/Apply'],
          );
        });

        it('prints objects as yaml, json, wide and name', async () => {
          await k(
            'apply',
            '-f',
            file(`${ns}-print.yaml`, networkManifest(ns, 'print', '  cidr: 10.30.0.0/24\n')),
          );
          assert.match(
            await k('-n', ns, 'get', 'network', 'print', '-o', 'yaml'),
            /^ {2}cidr: 10\.30\.0\.0\/24$/m,
          );
          assert.equal(JSON.parse(await k('-n', ns, 'get', 'networks', '-o', 'json')).kind, 'List');
          const wide = await k('-n', ns, 'get', 'network', 'print', '-o', 'wide');
          assert.match(wide, /^NAME\s+CIDR\s+SEGMENT\s+ROUTER\s+PHASE\s+AGE/);
          assert.match(wide, /^print\s+10\.30\.0\.0\/24\s+/m);
          assert.equal(
            await k('-n', ns, 'get', 'network', 'print', '-o', 'name'),
            'network.loam.dev/print\n',
          );
        });

        it('watches with get -w and sees a change another client makes', async () => {
          await k(
            'apply',
            '-f',
            file(`${ns}-watch.yaml`, networkManifest(ns, 'watched', '  cidr: 10.31.0.0/24\n')),
          );
          const watch = k.start([
            '-n',
            ns,
            'get',
            'network',
            'watched',
            '-w',
            '-o',
            'jsonpath={.metadata.labels.stage}{"\\n"}',
          ]);
          try {
            await pollUntil(() => watch.output().includes('\n'), {
              timeoutMs: 10_000,
              what: 'the initial object',
            });
            await k('-n', ns, 'label', 'network', 'watched', 'stage=two');
            await pollUntil(() => watch.output().includes('two'), { timeoutMs: 10_000, what: 'the update' });
          } finally {
            await watch.stop();
          }
        });

        it('patches with merge and json patches, and labels', async () => {
          await k(
            'apply',
            '-f',
            file(`${ns}-patch.yaml`, networkManifest(ns, 'patched', '  cidr: 10.32.0.0/24\n')),
          );
          assert.match(
            await k(
              '-n',
              ns,
              'patch',
              'network',
              'patched',
              '--type',
              'merge',
              '-p',
              '{"spec":{"egress":true}}',
            ),
            /network.loam.dev\/patched patched/,
          );
          await k(
            '-n',
            ns,
            'patch',
            'network',
            'patched',
            '--type',
            'json',
            '-p',
            '[{"op":"add","path":"/spec/dns","value":["10.32.0.1"]}]',
          );
          await k('-n', ns, 'label', 'network', 'patched', 'tier=lab');
          const obj = JSON.parse(await k('-n', ns, 'get', 'network', 'patched', '-o', 'json'));
          assert.equal(obj.spec.egress, true);
          assert.deepEqual(obj.spec.dns, ['10.32.0.1']);
          assert.equal(obj.metadata.labels.tier, 'lab');
          assert.equal(
            await k('-n', ns, 'get', 'networks', '-l', 'tier=lab', '-o', 'name'),
            'network.loam.dev/patched\n',
          );
          const immutable = await k.run([
            '-n',
            ns,
            'patch',
            'network',
            'patched',
            '--type',
            'merge',
            '-p',
            '{"spec":{"cidr":"10.33.0.0/24"}}',
          ]);
          assert.equal(immutable.code, 1);
          assert.match(immutable.stderr, /spec\.cidr: Invalid value: "10\.33\.0\.0\/24": field is immutable/);
        });

        it('describes an object with its conditions and events', async () => {
          await k(
            'apply',
            '-f',
            file(`${ns}-describe.yaml`, networkManifest(ns, 'described', '  cidr: 10.34.0.0/24\n')),
          );
          const status = {
            status: {
              phase: 'Ready',
              conditions: [
                {
                  type: 'Ready',
                  status: 'True',
                  reason: 'Applied',
                  message: 'router r1 applied generation 1',
                  lastTransitionTime: '2026-01-01T00:00:00Z',
                },
              ],
            },
          };
          await k(
            '-n',
            ns,
            'patch',
            'network',
            'described',
            '--subresource=status',
            '--type',
            'merge',
            '-p',
            JSON.stringify(status),
          );
          const uid = await k('-n', ns, 'get', 'network', 'described', '-o', 'jsonpath={.metadata.uid}');
          const event = {
            apiVersion: 'v1',
            kind: 'Event',
            metadata: { name: 'described.1', namespace: ns },
            involvedObject: {
              apiVersion: 'loam.dev/v1alpha1',
              kind: 'Network',
              name: 'described',
              namespace: ns,
              uid,
            },
            reason: 'Applied',
            message: 'configuration applied on router r1',
            type: 'Normal',
            count: 1,
            firstTimestamp: '2026-01-01T00:00:00Z',
            lastTimestamp: '2026-01-01T00:00:00Z',
            source: { component: 'loam-network-controller' },
          };
          await k('create', '-f', file(`${ns}-event.json`, JSON.stringify(event)));
          const described = await k('-n', ns, 'describe', 'network', 'described');
          assert.match(described, /Conditions:[\s\S]*Type:\s+Ready/);
          assert.match(
            described,
            /Events:[\s\S]*Normal\s+Applied\s+.*loam-network-controller\s+configuration applied on router r1/,
          );
        });

        it('waits on delete until the finalizers are removed', async () => {
          await k(
            'apply',
            '-f',
            file(
              `${ns}-final.yaml`,
              networkManifest(ns, 'held', '  cidr: 10.35.0.0/24\n', '  finalizers: [loam.dev/test]\n'),
            ),
          );
          const deletion = k.run(['-n', ns, 'delete', 'network', 'held']);
          await pollUntil(
            async () =>
              (await k(
                '-n',
                ns,
                'get',
                'network',
                'held',
                '-o',
                'jsonpath={.metadata.deletionTimestamp}',
              )) !== '',
            { timeoutMs: 10_000, what: 'the deletion timestamp' },
          );
          await k(
            '-n',
            ns,
            'patch',
            'network',
            'held',
            '--type',
            'json',
            '-p',
            '[{"op":"remove","path":"/metadata/finalizers"}]',
          );
          const deleted = await deletion;
          assert.equal(deleted.code, 0, deleted.stderr);
          assert.match(deleted.stdout, /network.loam.dev "held" deleted/);
          const gone = await k.run(['-n', ns, 'get', 'network', 'held']);
          assert.match(gone.stderr, /NotFound/);
        });

        it('edits an object in $EDITOR', async () => {
          await k(
            'apply',
            '-f',
            file(`${ns}-edit.yaml`, networkManifest(ns, 'edited', '  cidr: 10.36.0.0/24\n  egress: false\n')),
          );
          const edited = await k.run(['-n', ns, 'edit', 'network', 'edited'], {
            env: { KUBE_EDITOR: 'sed -i s/egress:\\ false/egress:\\ true/' },
          });
          assert.equal(edited.code, 0, edited.stderr);
          assert.equal(
            await k('-n', ns, 'get', 'network', 'edited', '-o', 'jsonpath={.spec.egress}'),
            'true',
          );
        });

        it('explains a field from the OpenAPI schema', async () => {
          const explained = await k('explain', 'instance.spec');
          assert.match(explained, /KIND:\s+Instance/);
          assert.match(explained, /cpus/);
        });

        it('refuses an invalid manifest with exit 1 and a message naming the field', async () => {
          const bad = await k.run([
            'create',
            '-f',
            file(`${ns}-bad.yaml`, networkManifest(ns, 'bad', '  cidr: 10.40.0.1/24\n')),
          ]);
          assert.equal(bad.code, 1);
          assert.match(bad.stderr, /spec\.cidr/);
          const unknown = await k.run([
            'create',
            '-f',
            file(`${ns}-unknown.yaml`, networkManifest(ns, 'bad', '  cidr: 10.40.0.0/24\n  egres: true\n')),
          ]);
          assert.equal(unknown.code, 1);
          assert.match(unknown.stderr, /unknown field "spec\.egres"/);
          const warned = await k.run([
            'create',
            '--validate=warn',
            '--dry-run=server',
            '-f',
            file(`${ns}-unknown.yaml`, networkManifest(ns, 'bad', '  cidr: 10.40.0.0/24\n  egres: true\n')),
          ]);
          assert.equal(warned.code, 0, warned.stderr);
          assert.match(warned.stderr, /Warning: unknown field "spec\.egres"/);
          assert.match((await k.run(['-n', ns, 'get', 'network', 'bad'])).stderr, /NotFound/);
        });

        it('confines a tenant to its namespace, with a certificate or a bearer token', async () => {
          for (const credential of [[], ['--token']]) {
            const tenant = kubectl(
              version,
              await issue(`${ns}-tenant.kubeconfig`, ['--user', 'alice', '--namespace', ns, ...credential]),
            );
            assert.match(await tenant('get', 'networks'), /lab/);
            const across = await tenant.run(['get', 'networks', '-A']);
            assert.equal(across.code, 1);
            assert.match(across.stderr, /Forbidden.*User "alice" cannot list resource "networks"/);
            const elsewhere = await tenant.run(['-n', 'default', 'get', 'networks']);
            assert.match(elsewhere.stderr, /Forbidden/);
            assert.equal((await tenant('auth', 'can-i', 'create', 'instances')).trim(), 'yes');
            const cannot = await tenant.run(['auth', 'can-i', 'list', 'instances', '-n', 'default']);
            assert.equal(cannot.code, 1);
            assert.equal(cannot.stdout.trim(), 'no');
          }
          assert.equal((await k('auth', 'can-i', 'delete', 'networks', '-A')).trim(), 'yes');
        });

        it('deletes a namespace with everything in it', async () => {
          const doomed = `${ns}-doomed`;
          await k('create', 'namespace', doomed);
          await k(
            'apply',
            '-f',
            file(`${ns}-doomed.yaml`, networkManifest(doomed, 'inside', '  cidr: 10.37.0.0/24\n')),
          );
          assert.match(await k('delete', 'namespace', doomed, '--timeout=30s'), /namespace "[^"]+" deleted/);
          assert.match((await k.run(['get', 'namespace', doomed])).stderr, /NotFound/);
          await k('create', 'namespace', doomed);
          assert.equal(await k('-n', doomed, 'get', 'networks', '-o', 'name'), '');
        });
      });
    }
  });
}
