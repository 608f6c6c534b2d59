/**
 * /metrics as an operator uses it: a real Prometheus scrapes the API server over HTTPS with a
 * bearer token of the system:monitoring group, and the request histogram is there by verb,
 * resource and code. Tenants may not read it.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { ControlPlane } from '../../controllers/up.js';
import { apiClient } from '../harness/https.js';
import { startPlane, tempDir } from '../harness/plane.js';
import { freePort, pollUntil } from '../harness/poll.js';

const exec = promisify(execFile);
const cli = new URL('../../bin/loam.js', import.meta.url).pathname;

describe('API server metrics', function () {
  this.timeout(90_000);
  let dir: string;
  let plane: ControlPlane;
  let prometheus: ChildProcess | undefined;

  /** `loam kubeconfig ...` written to a file. */
  const issue = async (name: string, args: string[]) => {
    const { stdout } = await exec(process.execPath, [
      cli,
      'kubeconfig',
      '--data-dir',
      dir,
      '--server',
      plane.apiServer.url,
      ...args,
    ]);
    const path = join(dir, name);
    writeFileSync(path, stdout);
    return { path, text: stdout };
  };

  before(async () => {
    dir = tempDir('metrics');
    plane = await startPlane(dir);
  });
  after(async () => {
    if (prometheus && prometheus.exitCode === null) {
      const exited = new Promise((resolve) => prometheus?.once('exit', resolve));
      prometheus.kill();
      await exited;
    }
    await plane?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves the request histogram to a Prometheus scraping with a monitoring token', async () => {
    const admin = apiClient(plane.kubeconfigPath);
    const created = await admin(
      'POST',
      '/apis/loam.dev/v1alpha1/namespaces/default/networks',
      JSON.stringify({
        apiVersion: 'loam.dev/v1alpha1',
        kind: 'Network',
        metadata: { name: 'm' },
        spec: { cidr: '10.9.0.0/24' },
      }),
    );
    assert.equal(created.code, 201);

    const monitoring = await issue('monitoring.kubeconfig', [
      '--user',
      'prometheus',
      '--group',
      'system:monitoring',
      '--token',
    ]);
    const token = /token: (\S+)/.exec(monitoring.text)?.[1] as string;
    writeFileSync(join(dir, 'token'), token);
    const tenant = apiClient(
      (await issue('tenant.kubeconfig', ['--user', 'alice', '--namespace', 'default'])).path,
    );
    assert.equal((await tenant('GET', '/metrics')).code, 403);

    const port = await freePort();
    const target = new URL(plane.apiServer.url).host;
    writeFileSync(
      join(dir, 'prometheus.yml'),
      `global: {scrape_interval: 1s}
scrape_configs:
  - job_name: loam-apiserver
    scheme: https
    tls_config: {ca_file: ${join(dir, 'pki', 'ca.crt')}}
    authorization: {credentials_file: ${join(dir, 'token')}}
    static_configs: [{targets: ['${target}']}]
`,
    );
    prometheus = spawn(
      'prometheus',
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'tsdb')}`,
        `--web.listen-address=127.0.0.1:${port}`,
      ],
      { stdio: 'ignore' },
    );
    const query = async (promql: string) => {
      const res = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(promql)}`, {
        signal: AbortSignal.timeout(5000),
      });
      return ((await res.json()) as { data: { result: { metric: Record<string, string> }[] } }).data.result;
    };
    let series: { metric: Record<string, string> }[] = [];
    await pollUntil(
      async () => {
        series = await query(
          'loam_apiserver_request_duration_seconds_count{verb="create",resource="networks"}',
        ).catch(() => []);
        return series.length > 0;
      },
      { timeoutMs: 60_000, intervalMs: 500, what: 'Prometheus to scrape the create' },
    );
    assert.equal(series[0]?.metric.code, '201');
    const up = await query('up{job="loam-apiserver"}');
    assert.equal(up.length, 1);
  });
});
