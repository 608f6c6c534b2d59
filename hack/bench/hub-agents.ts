/**
 * The agents of the hub benchmark (hack/bench/hub.ts), in a process of their own so the
 * benchmark's process holds only the hub and the API server. Forked with an IPC channel and
 * driven by it: enroll agents (the runtime's enrollment: pin check, own key, token), start them
 * (the real Agent runtime over mutual TLS, with an echo driver), report this process's event loop
 * utilization, and stop them all. Not meant to be run by hand.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { status } from '@grpc/grpc-js';
import { pino } from 'pino';
import { Agent } from '../../agents/runtime/agent.js';
import { resolveAgentConfig } from '../../agents/runtime/config.js';
import type { AgentJob, Driver, JobOutcome } from '../../agents/runtime/driver.js';
import { enroll } from '../../agents/runtime/enroll.js';
import { saveIdentity } from '../../agents/runtime/identity.js';

/** What the benchmark asks for; each request carries an id its reply repeats. */
export type AgentsCommand =
  | {
      cmd: 'enroll';
      server: string;
      caPin: string;
      dataRoot: string;
      agents: { name: string; token: string }[];
    }
  | { cmd: 'start'; names: string[] }
  | { cmd: 'elu' }
  | { cmd: 'stop' };

export interface AgentsReply {
  id: number;
  error?: string;
  /** 'elu': performance.eventLoopUtilization() of this process. */
  elu?: EventLoopUtilization;
}

/** An agent that failed after it was started, reported when it happens. */
export interface AgentFailure {
  failed: string;
  error: string;
}

type EventLoopUtilization = ReturnType<typeof performance.eventLoopUtilization>;

/** Answers every job OK at once with the job's object as what it observed. */
class EchoDriver implements Driver {
  readonly capabilities = ['echo'];

  async facts(): Promise<Record<string, string>> {
    return {};
  }

  async inventory(): Promise<[]> {
    return [];
  }

  async handle(job: AgentJob): Promise<JobOutcome> {
    return { code: status.OK, observed: job.object };
  }
}

/** Silent unless LOAM_BENCH_AGENT_LOG names a level; logs go to stderr. */
const logger = pino({ level: process.env.LOAM_BENCH_AGENT_LOG ?? 'silent' }, pino.destination(2));
const driver = new EchoDriver();
/** Agents' settings, by name, from enrollment on. */
const configs = new Map<string, ReturnType<typeof resolveAgentConfig>>();
const running = new Map<string, { agent: Agent; done: Promise<void> }>();
const shutdown = new AbortController();
let dataRoot: string | undefined;

function send(message: AgentsReply | AgentFailure | { ready: true }): Promise<void> {
  return new Promise((resolve, reject) =>
    process.send?.(message, undefined, {}, (err) => (err ? reject(err) : resolve())),
  );
}

async function enrollAll(command: Extract<AgentsCommand, { cmd: 'enroll' }>): Promise<void> {
  dataRoot = command.dataRoot;
  await Promise.all(
    command.agents.map(async ({ name, token }) => {
      const dataDir = join(command.dataRoot, name);
      mkdirSync(dataDir, { recursive: true, mode: 0o700 });
      const config = resolveAgentConfig('libvirt', {
        flags: {
          server: command.server,
          token,
          caPin: command.caPin,
          dataDir,
          name,
          metricsAddress: '127.0.0.1:0',
          logLevel: 'silent',
        },
        env: {},
        hostname: name,
      });
      const identity = await enroll(config, shutdown.signal, logger);
      if (!identity) throw new Error(`${name}: enrollment aborted`);
      saveIdentity(dataDir, identity);
      configs.set(name, config);
    }),
  );
}

function start(names: string[]): void {
  for (const name of names) {
    const config = configs.get(name);
    if (!config) throw new Error(`${name} is not enrolled`);
    const agent = new Agent({ config, driver, logger, version: '0.0.0-bench' });
    const done = agent.run();
    done.catch((err: Error) => send({ failed: name, error: err.stack ?? String(err) }).catch(() => {}));
    running.set(name, { agent, done });
  }
}

async function stopAll(): Promise<void> {
  shutdown.abort();
  await Promise.all([...running.values()].map(({ agent }) => agent.stop()));
  running.clear();
  if (dataRoot) rmSync(dataRoot, { recursive: true, force: true });
}

async function handle(command: AgentsCommand): Promise<Omit<AgentsReply, 'id'>> {
  switch (command.cmd) {
    case 'enroll':
      await enrollAll(command);
      return {};
    case 'start':
      start(command.names);
      return {};
    case 'elu':
      return { elu: performance.eventLoopUtilization() };
    case 'stop':
      await stopAll();
      return {};
  }
}

if (!process.send) {
  console.error('hub-agents: the agents of hack/bench/hub.ts; it forks this script, run that instead');
  process.exitCode = 2;
} else {
  process.on('message', async ({ id, command }: { id: number; command: AgentsCommand }) => {
    let reply: AgentsReply;
    try {
      reply = { id, ...(await handle(command)) };
    } catch (err) {
      reply = { id, error: (err as Error).stack ?? String(err) };
    }
    await send(reply);
    if (command.cmd === 'stop') {
      // With the agents stopped and the channel closed, nothing should hold the process. If
      // something does, say what (the timer is unref'd: it fires only in a process that lingers).
      process.disconnect();
      setTimeout(() => {
        console.error(
          `hub-agents: still running 3 s after stopping; active resources: ${process.getActiveResourcesInfo().join(', ')}`,
        );
      }, 3000).unref();
    }
  });
  // The benchmark went away without stopping its agents (killed, crashed): stop them, so this
  // process does not outlive it reconnecting forever.
  process.on('disconnect', () => {
    if (!shutdown.signal.aborted) void stopAll();
  });
  // Messages sent before the listener was attached would be lost: say it is there.
  await send({ ready: true });
}
