/**
 * `loam console` end to end without a hypervisor: `loam up` (the real API server, hub and
 * controllers) and a real agent runtime whose test driver echoes every byte stream. The console
 * subresource as a WebSocket (bytes both ways, keepalive pings, either side closing the other),
 * its refusals as Kubernetes Status codes, and the real CLI (bin/loam) on top. The real serial
 * console of a booted guest is test/e2e/boot.test.ts's.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { status } from '@grpc/grpc-js';
import * as k8s from '@kubernetes/client-node';
import { type ClientOptions, WebSocket } from 'ws';
import { gate, TestDriver } from '../../agents/runtime/testing/driver.js';
import { tenantGroupPrefix } from '../../controllers/apiserver/auth.js';
import { consoleUrl } from '../../controllers/instance/console-command.js';
import { createBootstrapToken } from '../../controllers/pki/bootstrap-tokens.js';
import { loadCertificateAuthority } from '../../controllers/pki/files.js';
import { issueKubeconfig } from '../../controllers/pki/kubeconfig.js';
import type { ControlPlane } from '../../controllers/up.js';
import type { Instance } from '../../crds/v1alpha1/index.js';
import type { TestAgent } from '../agents/hub-double.js';
import { ConsoleProcess } from '../harness/console.js';
import { apiClient } from '../harness/https.js';
import { joinAgent } from '../harness/join.js';
import { startPlane, tempDir } from '../harness/plane.js';
import { freePort, pollUntil } from '../harness/poll.js';

const group = { group: 'loam.dev', version: 'v1alpha1', plural: 'instances' };
const pingIntervalMs = 200;
const wait = { timeoutMs: 15_000 };

function instance(namespace: string, name: string, spec: Record<string, unknown> = {}) {
  return {
    apiVersion: 'loam.dev/v1alpha1',
    kind: 'Instance',
    metadata: { name, namespace },
    spec: {
      cpus: 1,
      memory: '64Mi',
      kernel: { url: 'http://127.0.0.1:1/k', sha256: 'a'.repeat(64) },
      ...spec,
    },
  };
}

/** A console WebSocket opened in the test process, with what came through it. */
class Session {
  readonly received: Buffer[] = [];
  pings = 0;
  closed: { code: number; reason: string } | undefined;

  constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => this.received.push(data));
    ws.on('ping', () => {
      this.pings++;
    });
    ws.on('error', () => {});
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
    });
  }

  get text(): string {
    return Buffer.concat(this.received).toString();
  }
}

describe('loam console: the console subresource through the hub', function () {
  this.timeout(90_000);
  let dir: string;
  let plane: ControlPlane;
  let kc: k8s.KubeConfig;
  let api: k8s.CustomObjectsApi;
  let agent: TestAgent<TestDriver>;
  let tenantConfig: string;
  const consoles: ConsoleProcess[] = [];
  const sessions: Session[] = [];
  /** Holds the agent's answer for Instance default/late until the test opens it. */
  const late = gate();

  /** Opens the console of namespace/name over a WebSocket with `config`'s credentials. */
  async function open(
    namespace: string,
    name: string,
    options: ClientOptions = {},
    config = kc,
  ): Promise<Session | { code: number; body: Record<string, unknown> }> {
    const cluster = config.getCurrentCluster();
    assert.ok(cluster);
    const wsOptions: ClientOptions = { handshakeTimeout: 15_000, ...options };
    await config.applyToHTTPSOptions(wsOptions);
    const ws = new WebSocket(consoleUrl(cluster.server, namespace, name), wsOptions);
    return new Promise((resolve, reject) => {
      ws.once('open', () => {
        const session = new Session(ws);
        sessions.push(session);
        resolve(session);
      });
      ws.once('unexpected-response', (req, res) => {
        let body = '';
        res.on('data', (chunk: Buffer) => {
          body += chunk;
        });
        res.on('end', () => {
          req.destroy();
          resolve({ code: res.statusCode ?? 0, body: JSON.parse(body) as Record<string, unknown> });
        });
      });
      ws.on('error', reject);
    });
  }

  async function refused(namespace: string, name: string, config = kc) {
    const result = await open(namespace, name, {}, config);
    assert.ok(!(result instanceof Session), `the console of ${namespace}/${name} opened`);
    assert.equal(result.body.kind, 'Status');
    return result;
  }

  async function opened(namespace: string, name: string, options: ClientOptions = {}): Promise<Session> {
    const result = await open(namespace, name, options);
    assert.ok(result instanceof Session, `refused: ${JSON.stringify(result)}`);
    return result;
  }

  /** The agent's end of the stream the hub asks for after `before` others, once asked. */
  async function agentEnd(before: number, cli?: ConsoleProcess): Promise<Duplex> {
    await pollUntil(() => agent.driver.streams.length > before, {
      ...wait,
      what: () => `a stream at the agent${cli ? ` (loam console said: ${JSON.stringify(cli.stderr)})` : ''}`,
    });
    return agent.driver.streams[before]?.local as Duplex;
  }

  async function phaseOf(namespace: string, name: string, phase: string): Promise<Instance> {
    let last: Instance | undefined;
    await pollUntil(
      async () => {
        last = (await api.getNamespacedCustomObject({ ...group, namespace, name })) as Instance;
        return last.status?.phase === phase;
      },
      { ...wait, what: () => `${namespace}/${name} to be ${phase}: ${JSON.stringify(last?.status)}` },
    );
    return last as Instance;
  }

  /** The one line a refused `loam console` prints, and that it exited 1. */
  async function cliFails(ref: string, config: string, message: RegExp, flags: string[] = []): Promise<void> {
    const cli = ConsoleProcess.start(ref, config, flags);
    consoles.push(cli);
    assert.equal(await cli.exited(), 1, cli.stderr);
    assert.equal(cli.stdout, '');
    assert.equal(cli.stderr.trimEnd().split('\n').length, 1, cli.stderr);
    assert.match(cli.stderr.trimEnd(), message);
  }

  before(async () => {
    dir = tempDir('console');
    const agentPort = await freePort();
    plane = await startPlane(join(dir, 'plane'), {
      controllers: true,
      agentPort,
      consolePingIntervalMs: pingIntervalMs,
    });
    kc = new k8s.KubeConfig();
    kc.loadFromFile(plane.kubeconfigPath);
    api = kc.makeApiClient(k8s.CustomObjectsApi);
    const { token } = await createBootstrapToken(k8s.KubernetesObjectApi.makeApiClient(kc), {
      ttlSeconds: 600,
      usages: 1,
      role: 'libvirt',
    });
    const driver = new TestDriver();
    // Room for every Instance of the test, whatever this machine has.
    driver.extraFacts = { driver: 'test', cpus: '16', memory: `${16 * 1024 * 1024}Ki` };
    // As the libvirt agent answers: the domain runs, at the job's generation.
    driver.respond = async (job) => {
      if (job.object.metadata.name === 'late') await late.promise;
      return {
        code: status.OK,
        observed:
          job.type === 'instance.apply'
            ? { state: 'running', generation: job.object.metadata.generation }
            : { state: 'absent', deleted: true },
      };
    };
    agent = await joinAgent({
      role: 'libvirt',
      name: 'hv1',
      driver,
      planeDir: join(dir, 'plane'),
      agentPort,
      token,
      dataDir: dir,
    });
    await k8s.KubernetesObjectApi.makeApiClient(kc).create({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'team-a' },
    });
    tenantConfig = join(dir, 'tenant.kubeconfig');
    writeFileSync(
      tenantConfig,
      issueKubeconfig(
        loadCertificateAuthority(join(dir, 'plane')),
        plane.apiServer.url,
        'alice',
        [`${tenantGroupPrefix}team-a`],
        { namespace: 'team-a' },
      ),
    );
    for (const [namespace, name, spec] of [
      ['default', 'web', {}],
      ['team-a', 'own', {}],
      // Never scheduled: no such Host.
      ['default', 'stray', { host: 'nowhere' }],
    ] as const) {
      await api.createNamespacedCustomObject({ ...group, namespace, body: instance(namespace, name, spec) });
    }
    await phaseOf('default', 'web', 'Running');
    await phaseOf('team-a', 'own', 'Running');
  });

  afterEach(() => {
    for (const cli of consoles.splice(0)) cli.kill();
    for (const session of sessions.splice(0)) session.ws.terminate();
  });

  after(async () => {
    await agent?.agent.stop();
    await plane?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('carries bytes both ways through `loam console`, and detaches on Ctrl+]', async () => {
    const before = agent.driver.streams.length;
    const cli = ConsoleProcess.start('default/web', plane.kubeconfigPath);
    consoles.push(cli);
    const local = await agentEnd(before, cli);
    const web = (await api.getNamespacedCustomObject({
      ...group,
      namespace: 'default',
      name: 'web',
    })) as Instance;
    const { request } = agent.driver.streams[before] ?? {};
    assert.deepEqual(request, {
      sessionId: request?.sessionId,
      kind: 'console',
      resource: { kind: 'Instance', namespace: 'default', name: 'web', uid: web.metadata.uid },
    });
    const typed = `echo ${randomBytes(4).toString('hex')}\r\n`;
    cli.write(typed);
    await cli.waitFor(typed);
    // Every byte value passes unchanged but the escape character.
    const binary = Buffer.from([...Array(256).keys()].filter((b) => b !== 0x1d));
    cli.write(binary);
    await cli.waitFor(binary.toString('latin1'));
    assert.match(cli.stderr, /^Connected to instance default\/web; escape character is \^\]/);
    assert.equal(await cli.detach(), 0, cli.stderr);
    await pollUntil(() => local.destroyed, { ...wait, what: "the agent's end to close after the detach" });
  });

  it('is `kubectl loam console` too, as a kubectl plugin', async () => {
    const pluginDir = join(dir, 'plugins');
    mkdirSync(pluginDir);
    const cli = ConsoleProcess.startAsKubectlPlugin('default/web', plane.kubeconfigPath, pluginDir);
    consoles.push(cli);
    await cli.waitFor('Connected to instance default/web', 30_000, 'stderr');
    cli.write('plugged\n');
    await cli.waitFor('plugged\n');
    assert.equal(await cli.detach(), 0, cli.stderr);
  });

  it('keeps an idle session open with pings, and ends it when the console ends', async () => {
    const before = agent.driver.streams.length;
    const session = await opened('default', 'web');
    const local = await agentEnd(before);
    await pollUntil(() => session.pings >= 5, { ...wait, what: 'five pings' });
    assert.equal(session.closed, undefined, 'the idle session is still open');
    session.ws.send(Buffer.from('ping?'));
    await pollUntil(() => session.text === 'ping?', { ...wait, what: 'the echo' });
    // The domain stopped: the agent ends its side.
    local.end();
    await pollUntil(() => session.closed !== undefined, { ...wait, what: 'the WebSocket to close' });
    assert.deepEqual(session.closed, { code: 1000, reason: 'the console ended' });
  });

  it('drops a peer that stops answering pings, and closes the stream to the agent', async () => {
    const before = agent.driver.streams.length;
    const session = await opened('default', 'web', { autoPong: false });
    const local = await agentEnd(before);
    await pollUntil(() => session.closed !== undefined, { ...wait, what: 'the silent peer to be dropped' });
    assert.equal(session.closed?.code, 1006, 'terminated, not closed');
    await pollUntil(() => local.destroyed, { ...wait, what: "the agent's end to close" });
  });

  it('lets a tenant open consoles in its own namespace only', async () => {
    const tenant = new k8s.KubeConfig();
    tenant.loadFromFile(tenantConfig);
    const own = await open('team-a', 'own', {}, tenant);
    assert.ok(own instanceof Session, `refused: ${JSON.stringify(own)}`);
    sessions.push(own);
    const other = await refused('default', 'web', tenant);
    assert.equal(other.code, 403);
    assert.match(
      other.body.message as string,
      /User "alice" cannot get resource "instances\/console" in API group "loam.dev" in the namespace "default"/,
    );
    await cliFails('default/web', tenantConfig, /^loam: forbidden: .*instance default\/web/);
  });

  it('answers with Kubernetes Status codes: 404, 409, 400 without the upgrade, 405', async () => {
    const missing = await refused('default', 'nope');
    assert.equal(missing.code, 404);
    assert.equal(missing.body.message, 'instances.loam.dev "nope" not found');
    // Waiting is for an Instance on its way to run, not for one that is not there.
    await cliFails('default/nope', plane.kubeconfigPath, /^loam: instance default\/nope not found$/, [
      '--wait',
      '1m',
    ]);

    await phaseOf('default', 'stray', 'Scheduling');
    const stray = await refused('default', 'stray');
    assert.equal(stray.code, 409);
    assert.match(
      stray.body.message as string,
      /"stray": the Instance is not scheduled to a Host \(phase Scheduling\)/,
    );
    await cliFails(
      'default/stray',
      plane.kubeconfigPath,
      /^loam: cannot open the console of instance default\/stray: .*not scheduled to a Host/,
    );

    const raw = apiClient(plane.kubeconfigPath);
    const path = '/apis/loam.dev/v1alpha1/namespaces/default/instances/web/console';
    const plain = await raw('GET', path);
    assert.equal(plain.code, 400);
    assert.equal(plain.json?.message, 'Upgrade request required');
    assert.equal((await raw('POST', path, '{}')).code, 405);
  });

  it('with --wait, attaches once the Instance runs; the end of stdin leaves it attached, SIGTERM detaches', async () => {
    await api.createNamespacedCustomObject({
      ...group,
      namespace: 'default',
      body: instance('default', 'late'),
    });
    const before = agent.driver.streams.length;
    const cli = ConsoleProcess.start('default/late', plane.kubeconfigPath, ['--wait', '1m']);
    consoles.push(cli);
    await cli.waitFor('Waiting for instance default/late: ', 30_000, 'stderr');
    late.open();
    await cli.waitFor('Connected to instance default/late', 30_000, 'stderr');
    const local = await agentEnd(before, cli);
    cli.write('late\n');
    await cli.waitFor('late\n');
    cli.endInput();
    local.write('still here\n');
    await cli.waitFor('still here\n');
    assert.equal(await cli.terminate(), 0, cli.stderr);
  });

  it('lists the subresource in discovery', async () => {
    const raw = apiClient(plane.kubeconfigPath);
    const list = (await raw('GET', '/apis/loam.dev/v1alpha1')).json as {
      resources: { name: string; verbs: string[] }[];
    };
    assert.deepEqual(list.resources.find((r) => r.name === 'instances/console')?.verbs, ['get']);
  });

  // Last: the agent does not come back.
  it("answers 503 while the Host's agent is not connected", async () => {
    await agent.agent.stop();
    const offline = await refused('default', 'web');
    assert.equal(offline.code, 503);
    assert.match(offline.body.message as string, /libvirt agent hv1 is not connected/);
    await cliFails(
      'default/web',
      plane.kubeconfigPath,
      /^loam: cannot open the console of instance default\/web: libvirt agent hv1 is not connected/,
    );
  });
});
