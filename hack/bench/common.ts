/**
 * What the whole-system benchmarks (controllers.ts, libvirt.ts) share: `loam up` in this process,
 * bounded waiting, Hosts turning Ready, and a watch on Instances recording when each first said
 * Running and when it was gone.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { type CustomObjectsApi, type KubeConfig, Watch } from '@kubernetes/client-node';
import { pino } from 'pino';
import type { AgentObject } from '../../controllers/hub/objects.js';
import type { LocalAgent } from '../../controllers/local-agents.js';
import { type ControlPlane, up } from '../../controllers/up.js';
import { getCondition } from '../../crds/meta.js';
import type { Instance } from '../../crds/v1alpha1/index.js';

export const group = { group: 'loam.dev', version: 'v1alpha1' };

/** "123 ms", right-aligned for tables. */
export const ms = (x: number) => `${x.toFixed(0)} ms`.padStart(9);

/**
 * `loam up` in this process: API server on the embedded sqlite store, hub and controllers on
 * 127.0.0.1 (free ports), logs to stderr at `logLevel`, with `localAgents` run in this process.
 */
export function startPlane(
  dataDir: string,
  logLevel: string,
  localAgents?: LocalAgent[],
): Promise<ControlPlane> {
  return up({
    dataDir,
    host: '127.0.0.1',
    port: 0,
    store: 'sqlite',
    etcdEndpoints: [],
    tlsSans: [],
    logLevel,
    logDestination: pino.destination(2),
    agentHost: '127.0.0.1',
    agentPort: 0,
    ...(localAgents ? { localAgents, version: '0.0.0-bench' } : {}),
  });
}

/** Rejects with `what` when `promise` has not settled in `ms`. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
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

/** Polls `condition` every `intervalMs` until it holds; throws naming `what` after `timeoutMs`. */
export async function until(
  condition: () => boolean | Promise<boolean>,
  options: { timeoutMs: number; intervalMs?: number; what: string | (() => string) },
): Promise<void> {
  const deadline = performance.now() + options.timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (performance.now() > deadline) {
      const what = typeof options.what === 'string' ? options.what : options.what();
      throw new Error(`${what}: not done within ${options.timeoutMs} ms`);
    }
    await sleep(options.intervalMs ?? 50);
  }
}

/** The names of the Hosts whose condition Ready is True. */
export async function readyHosts(custom: CustomObjectsApi): Promise<string[]> {
  const list = (await custom.listClusterCustomObject({ ...group, plural: 'hosts' })) as {
    items: AgentObject[];
  };
  return list.items
    .filter((host) => getCondition(host.status?.conditions, 'Ready')?.status === 'True')
    .map((host) => host.metadata?.name ?? '');
}

/** Polls the API until the Host of every agent of `names` says Ready=True, within `timeoutMs`. */
export async function hostsReady(
  custom: CustomObjectsApi,
  names: string[],
  timeoutMs: number,
): Promise<void> {
  let ready = 0;
  await until(
    async () => {
      const hosts = new Set(await readyHosts(custom));
      ready = names.filter((name) => hosts.has(name)).length;
      return ready === names.length;
    },
    { timeoutMs, intervalMs: 100, what: () => `all ${names.length} Hosts Ready=True (${ready} are)` },
  );
}

/**
 * What a watch on the Instances of a namespace saw: when each first said Running, when it was
 * deleted, and how it was written. Times are performance.now() on receipt.
 */
export class InstanceWatch {
  readonly running = new Map<string, number>();
  readonly deleted = new Map<string, number>();
  readonly latest = new Map<string, Instance>();
  /** Changes (MODIFIED events) of each Instance touching only its status, and the others. */
  statusChanges = 0;
  otherChanges = 0;
  private resourceVersion: string | undefined;
  private abort: AbortController | undefined;
  private stopped = false;
  private failure: Error | undefined;
  private allRunning: (() => void) | undefined;

  constructor(
    private readonly kubeConfig: KubeConfig,
    private readonly namespace: string,
    private readonly expected: number,
  ) {}

  async start(): Promise<void> {
    const watch = new Watch(this.kubeConfig);
    const query = this.resourceVersion ? { resourceVersion: this.resourceVersion } : {};
    this.abort = await watch.watch(
      `/apis/loam.dev/v1alpha1/namespaces/${this.namespace}/instances`,
      { ...query, allowWatchBookmarks: true },
      (type, object: Instance) => this.event(type, object, performance.now()),
      (err) => {
        if (this.stopped) return;
        // The server ended the watch (or the connection broke): resume where it left off.
        if (err) console.warn(`note: the Instance watch ended (${err}); resuming`);
        this.start().catch((e: Error) => {
          this.failure ??= e;
          this.allRunning?.();
        });
      },
    );
  }

  private event(type: string, object: Instance, at: number): void {
    this.resourceVersion = object.metadata?.resourceVersion ?? this.resourceVersion;
    if (type === 'BOOKMARK' || type === 'ERROR') return;
    const name = object.metadata.name ?? '';
    if (type === 'DELETED') {
      if (!this.deleted.has(name)) this.deleted.set(name, at);
      return;
    }
    const previous = this.latest.get(name);
    if (type === 'MODIFIED' && previous) {
      const identity = (o: Instance) => {
        const {
          resourceVersion: _rv,
          managedFields: _mf,
          ...metadata
        } = o.metadata as Instance['metadata'] & {
          managedFields?: unknown;
        };
        return JSON.stringify({ metadata, spec: o.spec });
      };
      if (identity(previous) === identity(object)) this.statusChanges++;
      else this.otherChanges++;
    }
    this.latest.set(name, object);
    if (object.status?.phase === 'Running' && !this.running.has(name)) {
      this.running.set(name, at);
      if (this.running.size >= this.expected) this.allRunning?.();
    }
  }

  /** Resolves once `expected` Instances have been Running. */
  untilAllRunning(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.allRunning = () => (this.failure ? reject(this.failure) : resolve());
      if (this.running.size >= this.expected) resolve();
    });
  }

  /** Phases of the Instances not yet seen Running, with a few examples, for a failure message. */
  stuck(names: string[]): string {
    const phases = new Map<string, number>();
    const examples: string[] = [];
    for (const name of names) {
      if (this.running.has(name)) continue;
      const status = this.latest.get(name)?.status;
      const phase = status?.phase ?? '(no status)';
      phases.set(phase, (phases.get(phase) ?? 0) + 1);
      if (examples.length < 5) examples.push(`  ${name}: ${JSON.stringify(status ?? null)}`);
    }
    return `${[...phases].map(([p, n]) => `${p} ${n}`).join(', ')}\n${examples.join('\n')}`;
  }

  stop(): void {
    this.stopped = true;
    this.abort?.abort();
  }
}
