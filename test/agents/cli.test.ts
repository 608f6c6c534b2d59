/** `loam agent` as a user runs it: a child process against the hub double, signals, exit codes. */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { status } from '@grpc/grpc-js';
import { caPin, createCertificateAuthority } from '../../controllers/pki/certificates.js';
import { pollUntil } from '../harness/poll.js';
import { AgentHubDouble, removeDir, tempDataDir } from './hub-double.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const loam = `${root}bin/loam`;

function agentArgs(
  hub: AgentHubDouble,
  dataDir: string,
  extra: string[] = [],
  role: 'network' | 'libvirt' = 'network',
): string[] {
  return [
    'agent',
    role,
    '--server',
    hub.address,
    '--token',
    hub.token,
    '--ca-pin',
    hub.pin,
    '--data-dir',
    dataDir,
    '--name',
    'edge1',
    '--metrics-address',
    '127.0.0.1:0',
    ...extra,
  ];
}

describe('loam agent', () => {
  let hub: AgentHubDouble;
  let dataDir: string;
  let child: ChildProcess | undefined;

  beforeEach(async () => {
    hub = await AgentHubDouble.start();
    dataDir = await tempDataDir();
  });

  afterEach(() => {
    child?.kill('SIGKILL');
    child = undefined;
    hub.stop();
    removeDir(dataDir);
  });

  it('enrolls, connects, runs the linux router driver, and exits 0 on SIGTERM after closing its session', async () => {
    // The state directory is the test's: a router agent with no Networks stored touches no device.
    const env = { ...process.env, LOAM_AGENT_LOG_LEVEL: 'info', LOAM_AGENT_STATE_DIR: `${dataDir}/network` };
    const started = spawn(loam, agentArgs(hub, dataDir), { env, stdio: ['ignore', 'pipe', 'pipe'] });
    child = started;
    let output = '';
    started.stdout?.on('data', (chunk: Buffer) => {
      output += chunk;
    });
    started.stderr?.on('data', (chunk: Buffer) => {
      output += chunk;
    });
    await pollUntil(() => hub.sessions.length === 1, {
      timeoutMs: 15_000,
      what: `a session; output: ${output}`,
    });
    const session = hub.sessions[0];
    assert.equal(session?.peer.subject.CN, 'edge1');
    assert.equal(session?.peer.subject.O, 'network');
    assert.ok(session?.hello.facts.kernel);
    assert.equal(session?.hello.facts.driver, 'linux');
    assert.deepEqual(session?.hello.capabilities, ['vxlan', 'wireguard']);
    assert.deepEqual(session?.hello.inventory, []);

    hub.dispatch({
      id: 'j1',
      type: 'network.apply',
      object: { kind: 'Network', metadata: { name: 'lab', namespace: 'default' } },
    });
    const result = await hub.result('j1');
    assert.equal(result.code, status.INVALID_ARGUMENT);
    assert.match(result.message, /network.apply carries no router/);

    const url = /"url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(output)?.[1];
    assert.ok(url, output);
    assert.equal((await fetch(`${url}/healthz`)).status, 200);

    const exited = once(started, 'exit');
    started.kill('SIGTERM');
    const [code, signal] = await exited;
    assert.equal(signal, null);
    assert.equal(code, 0, output);
    assert.equal(session?.endedBy, 'agent');
    assert.doesNotMatch(output, new RegExp(hub.token.replace('.', '\\.')), 'the token is never logged');
    assert.doesNotMatch(output, /PRIVATE KEY/);
  });

  it('runs the libvirt driver for the libvirt role: facts, capabilities and jobs', async () => {
    const storageDir = `${dataDir}/storage`;
    const args = agentArgs(
      hub,
      dataDir,
      ['--libvirt-uri', 'test:///default', '--storage-dir', storageDir],
      'libvirt',
    );
    const started = spawn(loam, args, {
      env: { ...process.env, LOAM_AGENT_LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = started;
    let output = '';
    started.stdout?.on('data', (chunk: Buffer) => {
      output += chunk;
    });
    started.stderr?.on('data', (chunk: Buffer) => {
      output += chunk;
    });
    await pollUntil(() => hub.sessions.length === 1, {
      timeoutMs: 15_000,
      what: `a session; output: ${output}`,
    });
    const session = hub.sessions[0];
    assert.equal(session?.peer.subject.O, 'libvirt');
    assert.deepEqual(session?.hello.capabilities, ['tcg', 'vxlan']);
    assert.equal(session?.hello.facts.domainType, 'qemu');
    assert.match(session?.hello.facts.libvirtVersion ?? '', /^libvirt /);
    // The test driver's own domain carries no Loam metadata.
    assert.deepEqual(session?.hello.inventory, []);

    const metadata = {
      name: 'web',
      namespace: 'default',
      uid: '6c0a0000-0000-4000-8000-000000000001',
      generation: 1,
    };
    hub.dispatch({ id: 'd1', type: 'instance.delete', object: { kind: 'Instance', metadata } });
    const result = await hub.result('d1');
    assert.equal(result.code, status.OK, result.message);
    assert.deepEqual(JSON.parse(result.observedJson.toString()), { state: 'absent', deleted: true });

    const exited = once(started, 'exit');
    started.kill('SIGTERM');
    const [code] = await exited;
    assert.equal(code, 0, output);
  });

  it('exits non-zero in one line when the pin does not match, having sent nothing', async () => {
    const wrongPin = caPin(createCertificateAuthority('elsewhere').certPem);
    const args = agentArgs(hub, dataDir);
    args[args.indexOf('--ca-pin') + 1] = wrongPin;
    // Asynchronous: the hub double answers in this process.
    const started = spawn(loam, args, {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, LOAM_AGENT_LOG_LEVEL: 'silent' },
    });
    child = started;
    let stderr = '';
    started.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk;
    });
    const [code] = await once(started, 'exit');
    assert.equal(code, 1);
    assert.match(stderr, /^loam: refusing 127\.0\.0\.1:\d+: its CA does not match --ca-pin/);
    assert.equal(stderr.trim().split('\n').length, 1, stderr);
    assert.equal(hub.enrollments.length, 0);
  });

  it('exits non-zero with one line naming the setting for a bad pin, server or name', async () => {
    const cases: [string, string, RegExp][] = [
      ['--ca-pin', 'sha256:xyz', /--ca-pin: must be 'sha256:' and 64 lower-case hex digits/],
      ['--server', 'hub.example.com', /--server: must be host:port/],
      ['--name', 'Edge_1', /--name: must be a lower-case RFC 1123 label/],
    ];
    // In parallel: each run pays the CLI's start-up.
    await Promise.all(
      cases.map(async ([flag, value, error]) => {
        const args = agentArgs(hub, dataDir);
        args[args.indexOf(flag) + 1] = value;
        const run = spawn(loam, args, { stdio: ['ignore', 'ignore', 'pipe'] });
        let stderr = '';
        run.stderr?.on('data', (chunk: Buffer) => {
          stderr += chunk;
        });
        const [code] = await once(run, 'exit');
        assert.equal(code, 1, `${flag}: ${stderr}`);
        assert.match(stderr, /^loam: invalid agent configuration: /);
        assert.match(stderr, error);
        assert.equal(stderr.trim().split('\n').length, 1, stderr);
      }),
    );
    assert.equal(hub.enrollments.length, 0);
  });

  it('lists both roles and their flags in its help', () => {
    const res = spawnSync(loam, ['agent', 'libvirt', '--help'], { encoding: 'utf8', timeout: 15_000 });
    assert.equal(res.status, 0);
    for (const flag of [
      '--server',
      '--token',
      '--ca-pin',
      '--data-dir',
      '--name',
      '--config',
      '--metrics-address',
      '--log-level',
      '--libvirt-uri',
      '--storage-dir',
      // The host's Network segments.
      '--trunk',
      '--vxlan-local',
      '--vxlan-remotes',
    ]) {
      assert.match(res.stdout, new RegExp(flag));
    }
    assert.match(res.stdout, /LOAM_AGENT_CA_PIN/);
    assert.match(res.stdout, /LOAM_AGENT_LIBVIRT_URI/);
    assert.doesNotMatch(res.stdout, /--state-dir|--wan|--wireguard-endpoint/);
    const network = spawnSync(loam, ['agent', 'network', '--help'], { encoding: 'utf8', timeout: 15_000 });
    assert.doesNotMatch(network.stdout, /--libvirt-uri|--storage-dir/);
    for (const flag of [
      '--state-dir',
      '--wan',
      '--trunk',
      '--vxlan-port',
      '--vxlan-local',
      '--vxlan-uplink',
      '--vxlan-group',
      '--vxlan-remotes',
      '--wireguard-endpoint',
      '--driver',
      '--rpcd-url',
      '--rpcd-user',
      '--rpcd-password-file',
      '--rpcd-ca-file',
    ]) {
      assert.match(network.stdout, new RegExp(`${flag} `));
    }
    assert.match(network.stdout, /LOAM_AGENT_WIREGUARD_ENDPOINT/);
    assert.match(network.stdout, /default \/var\/lib\/loam\/network/);
    assert.match(network.stdout, /LOAM_AGENT_RPCD_PASSWORD_FILE/);
  });
});
