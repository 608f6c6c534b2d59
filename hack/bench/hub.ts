/**
 * Agent hub benchmark: what the hub costs per job and per connected agent, over mutual TLS on
 * loopback, with the real Agent runtime on the other end.
 *
 * 1. Job round trip: hub.dispatch → the agent's session and executor → an echo driver that
 *    answers OK at once → JobResult back; throughput and p50/p99 with 1 agent (1 and 16
 *    dispatches at once) and with 50 agents (1 at a time round robin, and 50 at once, one per
 *    agent). The driver does nothing, so the figures are the protocol's and the runtime's overhead.
 * 2. Hub memory per agent: heap, external and RSS of the hub's process (after gc) before and
 *    after 50 agents enroll, connect and run jobs, divided by 50; and how long 50 take to connect.
 *
 * The control plane (`loam up`: API server on the embedded store, and the hub) runs in this
 * process; the agents run in a child process (hack/bench/hub-agents.ts), so this process holds
 * only the hub and the API server, and the two sides have an event loop (and on this 2-core
 * machine, a core) each. Every row is bounded by an operation count and a time budget (env
 * LOAM_BENCH_SECONDS); everything listens on 127.0.0.1. Needs `node --expose-gc`.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { status as Status } from '@grpc/grpc-js';
import { CustomObjectsApi, KubeConfig, KubernetesObjectApi } from '@kubernetes/client-node';
import type { AgentObject } from '../../controllers/hub/objects.js';
import { createBootstrapToken } from '../../controllers/pki/bootstrap-tokens.js';
import { caPin } from '../../controllers/pki/certificates.js';
import type { ControlPlane } from '../../controllers/up.js';
import { getCondition } from '../../crds/meta.js';
import { startPlane } from '../../test/harness/plane.js';
import type { AgentFailure, AgentsCommand, AgentsReply } from './hub-agents.js';
import { budgetMs, maxOps, measure, type Result, row } from './measure.js';

const fleetSize = 50;
const soloName = 'solo';
const fleetNames = Array.from({ length: fleetSize }, (_, i) => `fleet-${String(i).padStart(2, '0')}`);
/** Deadline of one job. */
const jobTimeoutMs = 10_000;
/** Bound on connecting and becoming Ready, for all agents at once, and on each command to the agents. */
const phaseTimeoutMs = 30_000;
/** Bound on enrolling all agents at once: their key pairs are made one after another, on one core. */
const enrollTimeoutMs = 60_000;
/** How many sent job ids the hub remembers per agent (rememberedJobs in controllers/hub/session.ts). */
const rememberedJobs = 4096;
/** Jobs run before the first row, so the rows measure warm code. */
const warmupJobs = 500;
/** How long the agents' process may take to exit once its agents have stopped. */
const exitGraceMs = 5_000;

type EventLoopUtilization = ReturnType<typeof performance.eventLoopUtilization>;

/** Share of the time between two readings that a loop was busy (0 to 1). */
function busyBetween(start: EventLoopUtilization, end: EventLoopUtilization): number {
  const active = end.active - start.active;
  const idle = end.idle - start.idle;
  return active / (active + idle);
}

/** How busy each side's event loop was over a phase (0 to 1; 1 = saturated). */
class Busy {
  constructor(
    readonly hub: number,
    readonly agents: number,
  ) {}

  toString(): string {
    return `hub ${this.hub.toFixed(2)} agents ${this.agents.toFixed(2)}`;
  }

  /** Which side, if either, was saturated (and so set the pace). */
  saturation(): string {
    const saturated = [
      ...(this.hub >= 0.9 ? ["the hub's process"] : []),
      ...(this.agents >= 0.9 ? ["the agents' process"] : []),
    ];
    return saturated.length > 0 ? ` (${saturated.join(' and ')} saturated)` : '';
  }
}

/** Rejects with `what` when `promise` has not settled in `ms`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The benchmark's handle on the agents' process (hub-agents.ts), over its IPC channel. */
class AgentsProcess {
  private readonly pending = new Map<
    number,
    { resolve: (r: AgentsReply) => void; reject: (e: Error) => void }
  >();
  private nextId = 0;
  private failure: Error | undefined;
  private readonly exited: Promise<unknown>;
  private stopping = false;

  private constructor(private readonly child: ChildProcess) {
    this.exited = once(child, 'exit');
    child.on('message', (message: AgentsReply | AgentFailure) => {
      if ('failed' in message) {
        if (!this.stopping) this.fail(new Error(`agent ${message.failed} failed: ${message.error}`));
        return;
      }
      const waiting = this.pending.get(message.id);
      this.pending.delete(message.id);
      if (message.error) waiting?.reject(new Error(`agents process: ${message.error}`));
      else waiting?.resolve(message);
    });
    child.on('exit', (code, signal) => {
      if (!this.stopping) this.fail(new Error(`the agents process exited early (${signal ?? code})`));
    });
  }

  /** Forks the agents' process and waits until it listens for commands. */
  static async start(): Promise<AgentsProcess> {
    const child = fork(fileURLToPath(new URL('./hub-agents.js', import.meta.url)), [], {
      execArgv: [],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const [ready] = (await within(once(child, 'message'), phaseTimeoutMs, 'agents process start')) as [
      { ready?: boolean },
    ];
    if (!ready.ready) throw new Error(`agents process: unexpected first message ${JSON.stringify(ready)}`);
    return new AgentsProcess(child);
  }

  /** The first failure of an agent or of the process, if any: checked between phases. */
  check(): void {
    if (this.failure) throw this.failure;
  }

  call(command: AgentsCommand, timeoutMs = phaseTimeoutMs): Promise<AgentsReply> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    const reply = new Promise<AgentsReply>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.send({ id, command });
    });
    return within(reply, timeoutMs, `agents process: ${command.cmd}`);
  }

  /** Runs `run`, with how busy this process's and the agents' process's event loops were meanwhile. */
  async loadDuring<T>(run: () => Promise<T>): Promise<[T, Busy]> {
    const hubStart = performance.eventLoopUtilization();
    const agentsStart = await this.elu();
    let result: T;
    try {
      result = await run();
    } catch (err) {
      // A job that failed because its agent went away: say why it went, if the process ended.
      await Promise.race([this.exited, sleep(500)]);
      if (this.failure) throw new Error(this.failure.message, { cause: err });
      throw err;
    }
    const hub = busyBetween(hubStart, performance.eventLoopUtilization());
    const agents = busyBetween(agentsStart, await this.elu());
    this.check();
    return [result, new Busy(hub, agents)];
  }

  private async elu(): Promise<EventLoopUtilization> {
    return (await this.call({ cmd: 'elu' })).elu as EventLoopUtilization;
  }

  /** Stops every agent (they end their sessions), then waits for the process to exit by itself. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    try {
      await this.call({ cmd: 'stop' });
    } finally {
      this.stopping = true;
    }
    const timer = setTimeout(() => {
      console.warn(
        `note: the agents process had not exited ${exitGraceMs} ms after stopping its agents; killed it`,
      );
      this.child.kill();
    }, exitGraceMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** Ends the process without waiting for its agents, when something already went wrong. */
  async kill(): Promise<void> {
    this.stopping = true;
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill();
    await this.exited;
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const { reject } of this.pending.values()) reject(err);
    this.pending.clear();
  }
}

/** Resolves when every agent of `names` has opened a session with the hub from now on. */
function sessionsOpened(
  plane: ControlPlane,
  names: string[],
): { done: Promise<void>; times: Map<string, number> } {
  const times = new Map<string, number>();
  const wanted = new Set(names);
  let listener: ((event: { agent: { name: string } }) => void) | undefined;
  const done = new Promise<void>((resolve) => {
    listener = ({ agent }) => {
      if (!wanted.has(agent.name) || times.has(agent.name)) return;
      times.set(agent.name, performance.now());
      if (times.size === wanted.size) resolve();
    };
    plane.hub.on('connected', listener);
  });
  return {
    done: within(done, phaseTimeoutMs, `${names.length} sessions`).finally(() => {
      if (listener) plane.hub.off('connected', listener);
    }),
    times,
  };
}

/** Polls the API until the Host of every agent of `names` says Ready=True. */
async function hostsReady(custom: CustomObjectsApi, names: string[]): Promise<void> {
  const deadline = performance.now() + phaseTimeoutMs;
  const wanted = new Set(names);
  for (;;) {
    const list = (await custom.listClusterCustomObject({
      group: 'loam.dev',
      version: 'v1alpha1',
      plural: 'hosts',
    })) as { items: AgentObject[] };
    const ready = list.items.filter(
      (host) =>
        wanted.has(host.metadata?.name ?? '') &&
        getCondition(host.status?.conditions, 'Ready')?.status === 'True',
    );
    if (ready.length === wanted.size) return;
    if (performance.now() > deadline) {
      throw new Error(`only ${ready.length} of ${wanted.size} Hosts Ready=True within ${phaseTimeoutMs} ms`);
    }
    await sleep(50);
  }
}

interface Memory {
  heapUsed: number;
  external: number;
  rss: number;
}

/** This process's memory after full collections (garbage from the last phase settles first). */
async function memoryNow(gc: () => void): Promise<Memory> {
  for (let i = 0; i < 3; i++) {
    gc();
    await sleep(100);
  }
  gc();
  const { heapUsed, external, rss } = process.memoryUsage();
  return { heapUsed, external, rss };
}

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`.padStart(10);
const kibPerAgent = (bytes: number) =>
  `${bytes >= 0 ? '+' : ''}${(bytes / 1024 / fleetSize).toFixed(1)} KiB`.padStart(12);

function memoryRow(label: string, m: Memory): string {
  return `  ${label.padEnd(34)} ${mib(m.heapUsed)} ${mib(m.external)} ${mib(m.rss)}`;
}

function perAgentRow(label: string, before: Memory, after: Memory): string {
  return `  ${label.padEnd(34)} ${kibPerAgent(after.heapUsed - before.heapUsed)} ${kibPerAgent(after.external - before.external)} ${kibPerAgent(after.rss - before.rss)}`;
}

/** A tiny desired object, a resource of its own per job (an agent runs jobs of one resource in order). */
const echoObject = (i: number) => ({
  apiVersion: 'loam.dev/v1alpha1',
  kind: 'Echo',
  metadata: { name: `echo-${i}` },
});

async function run(gc: () => void): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'loam-bench-hub-'));
  let plane: ControlPlane | undefined;
  let agents: AgentsProcess | undefined;
  let ok = false;
  try {
    plane = await startPlane(dir);
    const hub = plane.hub;
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(plane.kubeconfigPath);
    const objectApi = KubernetesObjectApi.makeApiClient(kubeConfig);
    const custom = kubeConfig.makeApiClient(CustomObjectsApi);
    const pin = caPin(readFileSync(join(dir, 'pki', 'ca.crt'), 'utf8'));
    agents = await AgentsProcess.start();
    const fleet = agents;

    console.log(
      `loam agent hub benchmark (budget ${budgetMs} ms or ${maxOps} ops per row; ${availableParallelism()} cores)\n` +
        `hub: loam up (API server, embedded sqlite, hub) in this process on 127.0.0.1; hub at ${plane.agentAddress}\n` +
        'agents: the Agent runtime in a child process, mTLS with their own enrolled certificates, echo driver (OK at once)\n' +
        'job: hub.dispatch of a ~80-byte object, each job a resource of its own; busy: share of the row each\n' +
        `process's event loop was busy (1.00 = saturated); load average at start ${loadavg()[0]?.toFixed(2)} (others' work skews figures)\n`,
    );

    const tokens = async (count: number) =>
      Promise.all(
        Array.from({ length: count }, async () => {
          const created = await createBootstrapToken(objectApi, {
            ttlSeconds: 600,
            usages: 1,
            role: 'libvirt',
          });
          return created.token;
        }),
      );
    const enrollAgents = async (names: string[], issued: string[]) => {
      await fleet.call(
        {
          cmd: 'enroll',
          server: plane?.agentAddress as string,
          caPin: pin,
          dataRoot: join(dir, 'agents'),
          agents: names.map((name, i) => ({ name, token: issued[i] as string })),
        },
        enrollTimeoutMs,
      );
    };
    /** Starts the agents; resolves once the hub has welcomed all of them. */
    const startAgents = async (names: string[]) => {
      const opened = sessionsOpened(plane as ControlPlane, names);
      const t0 = performance.now();
      await fleet.call({ cmd: 'start', names });
      await opened.done;
      return { t0, first: Math.min(...opened.times.values()) - t0, all: performance.now() - t0 };
    };
    const dispatch = async (name: string, i: number) => {
      const result = await hub.dispatch(
        { role: 'libvirt', name },
        { type: 'bench.echo', object: echoObject(i), deadline: new Date(Date.now() + jobTimeoutMs) },
      );
      if (result.code !== Status.OK)
        throw new Error(`job to ${name}: ${Status[result.code]} ${result.message}`);
    };
    const results = new Map<string, Result>();
    const bench = async (
      label: string,
      clients: number,
      op: (i: number, client: number) => Promise<unknown>,
    ) => {
      const [result, busy] = await fleet.loadDuring(() => measure(clients, op));
      results.set(label, result);
      console.log(`${row(label, result)}   busy: ${busy}${busy.saturation()}`);
    };

    // One agent: enrolled and connected, warmed up, then the 1-agent rows.
    await enrollAgents([soloName], await tokens(1));
    await startAgents([soloName]);
    await hostsReady(custom, [soloName]);
    await measure(16, (i) => dispatch(soloName, i), warmupJobs);
    await bench('1 agent c=1', 1, (i) => dispatch(soloName, i));
    await bench('1 agent c=16', 16, (i) => dispatch(soloName, i));

    // 50 more: memory of the hub's process before, once enrolled, once connected (and Ready).
    const fleetTokens = await tokens(fleetSize);
    const before = await memoryNow(gc);
    let t0 = performance.now();
    const [, enrollBusy] = await fleet.loadDuring(() => enrollAgents(fleetNames, fleetTokens));
    const enrollMs = performance.now() - t0;
    const enrolled = await memoryNow(gc);
    const [connect, connectBusy] = await fleet.loadDuring(() => startAgents(fleetNames));
    await hostsReady(custom, fleetNames);
    const readyMs = performance.now() - connect.t0;
    // Each agent's Lease is written right after its status: let the last ones land.
    await sleep(500);
    const connected = await memoryNow(gc);
    agents.check();

    console.log();
    let fleetJobs = 0;
    await bench(`${fleetSize} agents c=1 (round robin)`, 1, (i) =>
      dispatch(fleetNames[fleetJobs++ % fleetSize] as string, i),
    );
    await bench(`${fleetSize} agents c=${fleetSize} (1 per agent)`, fleetSize, (i, client) => {
      fleetJobs++;
      return dispatch(fleetNames[client] as string, i);
    });
    const afterJobs = await memoryNow(gc);

    console.log(`\nhub process memory after gc (this process: hub + API server; the agents run elsewhere)`);
    console.log(
      `  ${''.padEnd(34)} ${'heapUsed'.padStart(10)} ${'external'.padStart(10)} ${'rss'.padStart(10)}`,
    );
    console.log(memoryRow(`before (1 agent connected)`, before));
    console.log(memoryRow(`${fleetSize} more enrolled, not connected`, enrolled));
    console.log(memoryRow(`${fleetSize} more connected, Hosts Ready`, connected));
    console.log(memoryRow(`after the ${fleetSize}-agent rows`, afterJobs));
    console.log(`per agent, (after - before) / ${fleetSize}:`);
    console.log(perAgentRow('enrolled (Host, records, caches)', before, enrolled));
    console.log(perAgentRow('connected (session, TLS, HTTP/2)', enrolled, connected));
    console.log(perAgentRow('enrolled + connected', before, connected));
    console.log(perAgentRow(`+ after the ${fleetSize}-agent rows`, before, afterJobs));
    // What the rows left behind, per job: the hub remembers the ids of the last 4096 jobs sent to
    // each agent (Session's sentJobs), so this grows with every job until an agent reaches 4096.
    const perJob = (afterJobs.heapUsed - connected.heapUsed) / fleetJobs;
    console.log(
      `  the ${fleetSize}-agent rows sent ${(fleetJobs / fleetSize).toFixed(0)} jobs to each agent and left ${perJob.toFixed(0)} B of heap per job;\n` +
        `  the hub keeps the ids of the last ${rememberedJobs} jobs sent to each agent, so at that rate an agent\n` +
        `  that has had ${rememberedJobs} jobs holds ~${((perJob * rememberedJobs) / 1024).toFixed(0)} KiB more (a projection, not measured here).\n` +
        '  Heap is the figure to go by. RSS per agent is noise at N = 50: V8 and malloc keep or return pages\n' +
        "  as they like (enrollment's certificate work and the API requests move it by MiBs either way).",
    );
    const perAgentMs = (busy: number, ms: number) => `${((busy * ms) / fleetSize).toFixed(1)} ms`;
    console.log(
      `\n${fleetSize} agents at once (the agents' process does the key work of ${fleetSize} machines on one core):\n` +
        `  enroll (own RSA key and CSR, pin check, Enroll: token, Host, certificate): all in ${enrollMs.toFixed(0)} ms   busy: ${enrollBusy}\n` +
        `    hub event loop per enrollment ${perAgentMs(enrollBusy.hub, enrollMs)}, agents' per enrollment ${perAgentMs(enrollBusy.agents, enrollMs)}\n` +
        `  connect (mTLS handshake, authorize, Hello, Welcome): first welcomed after ${connect.first.toFixed(0)} ms, ` +
        `all ${fleetSize} after ${connect.all.toFixed(0)} ms   busy: ${connectBusy}\n` +
        `    hub event loop per connect ${perAgentMs(connectBusy.hub, connect.all)}; all ${fleetSize} Hosts Ready=True after ${readyMs.toFixed(0)} ms`,
    );

    const solo1 = results.get('1 agent c=1') as Result;
    const solo16 = results.get('1 agent c=16') as Result;
    const fleet50 = results.get(`${fleetSize} agents c=${fleetSize} (1 per agent)`) as Result;
    console.log(
      `\nsummary: job round trip over mTLS p50 ${solo1.p50Ms.toFixed(3)} ms / p99 ${solo1.p99Ms.toFixed(3)} ms (1 agent, sequential), ` +
        `${solo16.opsPerSecond.toFixed(0)} jobs/s at c=16, ${fleet50.opsPerSecond.toFixed(0)} jobs/s across ${fleetSize} agents (p99 ${fleet50.p99Ms.toFixed(3)} ms); ` +
        `hub ${((connected.heapUsed - before.heapUsed) / 1024 / fleetSize).toFixed(1)} KiB heap, ` +
        `${((connected.rss - before.rss) / 1024 / fleetSize).toFixed(1)} KiB RSS (noisy) per connected agent ` +
        `(+~${((perJob * rememberedJobs) / 1024).toFixed(0)} KiB heap once it has had ${rememberedJobs} jobs); ` +
        `${fleetSize} agents connected in ${connect.all.toFixed(0)} ms`,
    );
    t0 = performance.now();
    await agents.stop();
    const stopMs = performance.now() - t0;
    t0 = performance.now();
    await plane.stop();
    console.log(
      `shutdown: agents stopped and their process exited in ${stopMs.toFixed(0)} ms; hub and API server closed in ${(performance.now() - t0).toFixed(0)} ms`,
    );
    ok = true;
  } finally {
    if (!ok) {
      await agents?.kill();
      await plane
        ?.stop()
        .catch((err: unknown) => console.warn('note: stopping the control plane failed:', err));
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) {
  console.error('hub benchmark: run it with node --expose-gc (it reads memory after full collections)');
  process.exitCode = 2;
} else {
  try {
    await run(gc);
  } catch (err) {
    console.error('hub benchmark failed:', err);
    process.exitCode = 1;
  }
  // Everything is closed: the process should exit now. If something still holds it, say what
  // (the timer is unref'd, so it fires only in a process that lingers).
  setTimeout(() => {
    console.warn(
      `note: still running 5 s after the benchmark ended; active resources: ${process.getActiveResourcesInfo().join(', ')}`,
    );
  }, 5000).unref();
}
