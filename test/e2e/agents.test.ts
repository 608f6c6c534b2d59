/**
 * Joining an agent as an admin does it, every piece a real process: `loam up`, `loam token create`,
 * then the printed `loam agent network` command. The Router appears with its facts and Ready=True;
 * the agent stops cleanly on SIGTERM and, started again without a token, comes back as the same
 * Router.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { kubectl } from '../harness/kubectl.js';
import { LoamProcess } from '../harness/loam.js';
import { tempDir } from '../harness/plane.js';
import { pollUntil } from '../harness/poll.js';

const exec = promisify(execFile);
const cli = new URL('../../bin/loam.js', import.meta.url).pathname;

interface Router {
  metadata: { uid: string };
  status?: { facts?: Record<string, string>; conditions?: { type: string; status: string }[] };
}

describe('joining an agent to loam up', function () {
  this.timeout(120_000);
  let dir: string;
  let loam: LoamProcess;
  let agent: ChildProcess | undefined;

  before(async () => {
    dir = tempDir('e2e-agents');
    loam = await LoamProcess.start({ dataDir: join(dir, 'plane'), store: 'sqlite' });
  });
  after(async () => {
    if (agent && agent.exitCode === null) {
      const exited = new Promise((resolve) => agent?.once('exit', resolve));
      agent.kill('SIGKILL');
      await exited;
    }
    await loam?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Starts the agent with `args` (the join command's flags), logs kept for failure messages. */
  function startAgent(args: string[]): { child: ChildProcess; logs: () => string } {
    const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let logs = '';
    child.stdout?.on('data', (d: Buffer) => {
      logs += d;
    });
    child.stderr?.on('data', (d: Buffer) => {
      logs += d;
    });
    return { child, logs: () => logs };
  }

  async function stopAgent(child: ChildProcess): Promise<number | null> {
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    return exited;
  }

  it('enrolls with the printed join command, shows Ready, and rejoins as the same Router', async () => {
    const { stdout } = await exec(process.execPath, [
      cli,
      'token',
      'create',
      '--role',
      'network',
      '--data-dir',
      join(dir, 'plane'),
    ]);
    const join_ = /loam agent network (.+)$/m.exec(stdout)?.[1];
    assert.ok(join_, `a join command in: ${stdout}`);
    const flags = join_.trim().split(/\s+/);
    const agentDir = join(dir, 'agent');
    const dataDirIndex = flags.indexOf('--data-dir');
    if (dataDirIndex >= 0) flags.splice(dataDirIndex, 2);
    const common = ['--data-dir', agentDir, '--name', 'edge-1', '--metrics-address', '127.0.0.1:0'];
    const k = kubectl('', loam.kubeconfig);
    const router = async () => {
      const got = await k.run(['get', 'router', 'edge-1', '-o', 'json']);
      return got.code === 0 ? (JSON.parse(got.stdout) as Router) : undefined;
    };
    const ready = (r: Router | undefined) => r?.status?.conditions?.find((c) => c.type === 'Ready')?.status;

    const first = startAgent(['agent', 'network', ...flags, ...common]);
    agent = first.child;
    await pollUntil(async () => ready(await router()) === 'True', {
      timeoutMs: 30_000,
      what: `the Router to be Ready (agent logs: ${first.logs()})`,
    });
    const enrolled = (await router()) as Router;
    assert.ok(enrolled.status?.facts?.hostname, 'facts are reported');
    assert.ok(enrolled.status?.facts?.agentVersion);
    assert.doesNotMatch(
      first.logs(),
      new RegExp(flags[flags.indexOf('--token') + 1] as string),
      'the token is never logged',
    );
    assert.equal(await stopAgent(first.child), 0, 'SIGTERM stops the agent cleanly');

    // Started again with only its identity: no token, the same Router.
    const second = startAgent([
      'agent',
      'network',
      '--server',
      flags[flags.indexOf('--server') + 1] as string,
      '--ca-pin',
      flags[flags.indexOf('--ca-pin') + 1] as string,
      ...common,
    ]);
    agent = second.child;
    await pollUntil(
      async () => {
        const metrics = await k.run(['get', '--raw', '/metrics']);
        return /loam_agent_connected\{role="network"\} 1/.test(metrics.stdout);
      },
      { timeoutMs: 30_000, what: `the agent to reconnect (agent logs: ${second.logs()})` },
    );
    assert.equal(ready(await router()), 'True');
    assert.equal((await router())?.metadata.uid, enrolled.metadata.uid, 'the same object');
    assert.equal((await k('get', 'routers', '-o', 'name')).trim(), 'router.loam.dev/edge-1', 'no duplicate');
    assert.equal(await stopAgent(second.child), 0);
  });
});
