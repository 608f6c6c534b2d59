/**
 * Controllers at scale: N Instances (default 1,000) across H hosts (default 20) converge to
 * Running, with the real control plane and agent runtime and a recording hypervisor behind each
 * agent, so what is measured is the controllers', the API server's and the hub's work, not a
 * hypervisor's.
 *
 * `loam up` (API server on the embedded sqlite store, hub, controllers) runs in this process on
 * 127.0.0.1; so do H agents (the Agent runtime over mutual TLS, each enrolled with a bootstrap
 * token of its own) named hv01.., each with a RecordingHypervisor reporting 64 cpus and 256Gi.
 * One Network (a /20) and N Instances (1 cpu, 256Mi, one NIC) are created through the Kubernetes
 * API with 32 creates in flight; a watch on Instances records when each first reports Running.
 *
 * Prints: convergence time and throughput, apply -> Running latency (from the start of the
 * Instance's create request to the watch event saying Running) p50/p90/p99/max, API writes per
 * Instance by resource and verb from the API server's own metrics (loam_apiserver_request_
 * duration_seconds_count, read before the Network is created and once writes have stopped after
 * convergence) against KubeVirt's density gate (at most 2 PATCHes and 10 UPDATEs per VMI), the
 * Instance writes the watch saw split into status-only and other, and the jobs the agents got.
 *
 * Env: LOAM_BENCH_INSTANCES, LOAM_BENCH_HOSTS (defaults 1000 and 20), LOAM_BENCH_LOG (log level of
 * the control plane and agents, default silent; logs go to stderr).
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { CustomObjectsApi, KubeConfig, KubernetesObjectApi } from '@kubernetes/client-node';
import { pino } from 'pino';
import { Agent } from '../../agents/runtime/agent.js';
import { RecordingHypervisor } from '../../agents/runtime/testing/recording-hypervisor.js';
import { createBootstrapToken } from '../../controllers/pki/bootstrap-tokens.js';
import { caPin } from '../../controllers/pki/certificates.js';
import type { ControlPlane } from '../../controllers/up.js';
import { group, hostsReady, InstanceWatch, ms, startPlane, within } from './common.js';
import { percentile } from './measure.js';

const instanceCount = Number(process.env.LOAM_BENCH_INSTANCES ?? 1000);
const hostCount = Number(process.env.LOAM_BENCH_HOSTS ?? 20);
const logLevel = process.env.LOAM_BENCH_LOG ?? 'silent';
/** Creates in flight at once. */
const createConcurrency = 32;
/** Bound on all agents enrolling, connecting and their Hosts turning Ready. */
const hostsTimeoutMs = 60_000;
/** Bound on every Instance reaching Running, from the first create. */
const convergeTimeoutMs = 5 * 60_000;
/** After convergence: writes must stop for this long before the metrics are read again... */
const quietMs = 1_000;
/** ...bounded by this. */
const quiesceTimeoutMs = 15_000;
/** KubeVirt's density gate, per VMI. */
const kubevirtGate = { patch: 2, update: 10 };

const namespace = 'default';
const networkName = 'bench';
const hostNames = Array.from({ length: hostCount }, (_, i) => `hv${String(i + 1).padStart(2, '0')}`);
const instanceName = (i: number) => `vm-${String(i).padStart(4, '0')}`;

const network = {
  apiVersion: 'loam.dev/v1alpha1',
  kind: 'Network',
  metadata: { name: networkName, namespace },
  // 4094 host addresses: room for 1000 Instances and the few at the top DHCP hands out.
  spec: { cidr: '10.64.0.0/20', dhcp: { rangeStart: '10.64.15.240', rangeEnd: '10.64.15.250' } },
};

function instance(name: string) {
  return {
    apiVersion: 'loam.dev/v1alpha1',
    kind: 'Instance',
    metadata: { name, namespace },
    spec: {
      cpus: 1,
      memory: '256Mi',
      kernel: { url: 'http://127.0.0.1:1/k', sha256: 'a'.repeat(64) },
      networks: [{ name: networkName }],
    },
  };
}

// --- API server metrics ---------------------------------------------------------------------------

/** Samples of the plane's /metrics (counters and histogram counts), by series: `name{labels}`. */
type Samples = Map<string, number>;

async function scrape(kubeConfig: KubeConfig, url: string): Promise<Samples> {
  const options: Parameters<typeof request>[1] = { method: 'GET', timeout: 10_000 };
  await kubeConfig.applyToHTTPSOptions(options);
  const text = await new Promise<string>((resolve, reject) => {
    const req = request(new URL('/metrics', url), options, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 200)
          reject(new Error(`GET /metrics: ${res.statusCode} ${body.slice(0, 300)}`));
        else resolve(body);
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('GET /metrics: no answer within 10 s')));
    req.on('error', reject);
    req.end();
  });
  const samples: Samples = new Map();
  for (const line of text.split('\n')) {
    const match = /^(loam_\w+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (match) samples.set(match[1] as string, Number(match[2]));
  }
  return samples;
}

function difference(after: Samples, before: Samples): Samples {
  return new Map([...after].map(([series, value]) => [series, value - (before.get(series) ?? 0)]));
}

/** The series of metric `name`, with their labels, e.g. { verb: 'update', resource: 'instances' }. */
function series(samples: Samples, name: string): { labels: Record<string, string>; value: number }[] {
  return [...samples]
    .filter(([key]) => key === name || key.startsWith(`${name}{`))
    .map(([key, value]) => ({
      labels: Object.fromEntries([...key.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]])),
      value,
    }));
}

const requestCount = 'loam_apiserver_request_duration_seconds_count';
const writeVerbs = new Set(['create', 'update', 'patch', 'delete', 'deletecollection']);

/** API requests by "resource verb": all, and those answered with a code other than 2xx. */
function requests(samples: Samples): Map<string, { all: number; failed: number; codes: Set<string> }> {
  const byKey = new Map<string, { all: number; failed: number; codes: Set<string> }>();
  for (const { labels, value } of series(samples, requestCount)) {
    if (value === 0) continue;
    const key = `${labels.resource || '(none)'} ${labels.verb}`;
    const entry = byKey.get(key) ?? { all: 0, failed: 0, codes: new Set<string>() };
    entry.all += value;
    if (!(labels.code ?? '').startsWith('2')) {
      entry.failed += value;
      entry.codes.add(labels.code ?? '?');
    }
    byKey.set(key, entry);
  }
  return byKey;
}

const isWrite = (key: string) => writeVerbs.has(key.split(' ')[1] ?? '');
const writesServed = (samples: Samples) =>
  [...requests(samples)].filter(([key]) => isWrite(key)).reduce((sum, [, { all }]) => sum + all, 0);

/** Waits until the API has served no write for `quietMs` (bounded); returns the last reading. */
async function quiesce(read: () => Promise<Samples>): Promise<{ samples: Samples; quiet: boolean }> {
  const deadline = performance.now() + quiesceTimeoutMs;
  let last = await read();
  for (;;) {
    await sleep(quietMs);
    const now = await read();
    if (writesServed(now) === writesServed(last)) return { samples: now, quiet: true };
    last = now;
    if (performance.now() > deadline) return { samples: now, quiet: false };
  }
}

// --- The run -------------------------------------------------------------------------------------

const perInstance = (count: number) => (count / instanceCount).toFixed(2).padStart(7);

async function main(): Promise<void> {
  if (!(instanceCount > 0 && hostCount > 0 && hostCount <= 99)) {
    throw new Error('LOAM_BENCH_INSTANCES must be > 0 and LOAM_BENCH_HOSTS from 1 to 99');
  }
  const dir = mkdtempSync(join(tmpdir(), 'loam-bench-controllers-'));
  let plane: ControlPlane | undefined;
  const agents: { agent: Agent; driver: RecordingHypervisor; done: Promise<void> }[] = [];
  let watch: InstanceWatch | undefined;
  try {
    const logger = pino({ level: logLevel }, pino.destination(2));
    plane = await startPlane(join(dir, 'plane'), logLevel);
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(plane.kubeconfigPath);
    const custom = kubeConfig.makeApiClient(CustomObjectsApi);
    const objectApi = KubernetesObjectApi.makeApiClient(kubeConfig);
    const apiUrl = plane.apiServer.url;
    const pin = caPin(readFileSync(join(dir, 'plane', 'pki', 'ca.crt'), 'utf8'));

    console.log(
      `loam controllers benchmark: ${instanceCount} Instances across ${hostCount} hosts ` +
        `(${availableParallelism()} cores, load average at start ${loadavg()[0]?.toFixed(2)})\n` +
        'plane: loam up (API server on embedded sqlite, hub, controllers) in this process on 127.0.0.1;\n' +
        `agents: ${hostCount} Agent runtimes in this process over mTLS, each a RecordingHypervisor (64 cpus, 256Gi; answers at once);\n` +
        `Instances: 1 cpu, 256Mi, one NIC on a /20 Network, created through the API ${createConcurrency} at a time\n`,
    );

    // Agents: one bootstrap token each (one shared token would have them race on its Secret).
    let t0 = performance.now();
    const tokens = await Promise.all(
      hostNames.map(
        async () =>
          (await createBootstrapToken(objectApi, { ttlSeconds: 600, usages: 1, role: 'libvirt' })).token,
      ),
    );
    for (const [i, name] of hostNames.entries()) {
      const dataDir = join(dir, 'agents', name);
      mkdirSync(dataDir, { recursive: true, mode: 0o700 });
      const driver = new RecordingHypervisor({ capacity: { cpus: 64, memory: '256Gi' } });
      const agent = new Agent({
        config: {
          role: 'libvirt',
          server: plane.agentAddress,
          token: tokens[i] as string,
          caPin: pin,
          dataDir,
          name,
          metricsAddress: '127.0.0.1:0',
          logLevel: 'silent',
          renewAt: 0.8,
          backoff: { initialMs: 50, maxMs: 300 },
        },
        driver,
        logger,
        version: '0.0.0-bench',
        shutdownTimeoutMs: 1_000,
      });
      const done = agent.run();
      done.catch((err: Error) => console.error(`agent ${name} failed: ${err.stack ?? err}`));
      agents.push({ agent, driver, done });
    }
    await hostsReady(custom, hostNames, hostsTimeoutMs);
    console.log(
      `${hostCount} agents enrolled, connected, Hosts Ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );

    // Baseline of the API's counters, then the Network, the watch and the Instances.
    const before = await scrape(kubeConfig, apiUrl);
    await custom.createNamespacedCustomObject({ ...group, namespace, plural: 'networks', body: network });
    const observer = new InstanceWatch(kubeConfig, namespace, instanceCount);
    watch = observer;
    await observer.start();

    const created = new Map<string, number>();
    const names = Array.from({ length: instanceCount }, (_, i) => instanceName(i));
    const allRunning = observer.untilAllRunning();
    allRunning.catch(() => {});
    t0 = performance.now();
    const busyStart = performance.eventLoopUtilization();
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(createConcurrency, instanceCount) }, async () => {
        while (next < instanceCount) {
          const name = names[next++] as string;
          created.set(name, performance.now());
          await custom.createNamespacedCustomObject({
            ...group,
            namespace,
            plural: 'instances',
            body: instance(name),
          });
        }
      }),
    );
    const createdMs = performance.now() - t0;
    try {
      await within(allRunning, convergeTimeoutMs, `${instanceCount} Instances to be Running`);
    } catch (err) {
      throw new Error(
        `${(err as Error).message}: ${observer.running.size} Running; the others by phase: ${observer.stuck(names)}`,
      );
    }
    const convergedMs = Math.max(...observer.running.values()) - t0;
    const busy = performance.eventLoopUtilization(busyStart).utilization;

    // Once writes stop (the last status and events land), the counters again.
    const { samples: after, quiet } = await quiesce(() => scrape(kubeConfig, apiUrl));
    const diff = difference(after, before);

    const latencies = names
      .map((name) => (observer.running.get(name) as number) - (created.get(name) as number))
      .sort((a, b) => a - b);
    console.log(
      `\nconvergence: ${instanceCount} Instances created in ${(createdMs / 1000).toFixed(1)} s ` +
        `(${(instanceCount / (createdMs / 1000)).toFixed(0)}/s), all Running after ${(convergedMs / 1000).toFixed(1)} s ` +
        `from the first create: ${(instanceCount / (convergedMs / 1000)).toFixed(1)} Instances/s; ` +
        `this process's event loop (plane, agents, client) busy ${busy.toFixed(2)} meanwhile (1.00 = saturated)`,
    );
    console.log(
      `apply -> Running latency (create sent -> watch event with phase Running), ${instanceCount} Instances:\n` +
        `  p50 ${ms(percentile(latencies, 50))}   p90 ${ms(percentile(latencies, 90))}   ` +
        `p99 ${ms(percentile(latencies, 99))}   max ${ms(latencies[latencies.length - 1] as number)}`,
    );

    const served = requests(diff);
    console.log(
      `\nAPI writes from the Network's create until writes stopped${quiet ? '' : ` (NOT quiet after ${quiesceTimeoutMs} ms)`}, ` +
        "per Instance (the creates of Instances and the Network are this benchmark's):",
    );
    console.log(
      `  ${'resource verb'.padEnd(28)} ${'total'.padStart(7)} ${'/Instance'.padStart(9)} ${'not 2xx'.padStart(8)}`,
    );
    const writes = [...served].filter(([key]) => isWrite(key)).sort(([a], [b]) => a.localeCompare(b));
    for (const [key, { all, failed }] of writes) {
      console.log(
        `  ${key.padEnd(28)} ${String(all).padStart(7)} ${perInstance(all)}   ${String(failed).padStart(7)}`,
      );
    }
    // Without this benchmark's own GETs of /metrics (no resource).
    const reads = [...served].filter(([key]) => !isWrite(key) && key !== '(none) GET');
    console.log(
      `  reads (watches not counted): ${reads.map(([key, { all }]) => `${key} ${all}`).join(', ') || 'none'}`,
    );

    const count = (key: string) => served.get(key) ?? { all: 0, failed: 0, codes: new Set<string>() };
    const patch = count('instances patch');
    const update = count('instances update');
    const events = count('events create');
    const gate = (mine: number, theirs: number) =>
      `${(mine / instanceCount).toFixed(2)} per Instance vs KubeVirt's gate of ${theirs} per VMI: ` +
      `${(mine / instanceCount / theirs).toFixed(2)}x of the allowance`;
    console.log("\nper Instance against KubeVirt's density gate (instances resource, all response codes):");
    console.log(`  PATCH  ${gate(patch.all, kubevirtGate.patch)}`);
    console.log(`  UPDATE ${gate(update.all, kubevirtGate.update)}`);
    console.log(
      `  Event creates ${(events.all / instanceCount).toFixed(2)} per Instance` +
        (events.failed > 0 ? ` (${events.failed} of ${events.all} refused: not 2xx)` : ''),
    );
    console.log(
      `  the Instance watch saw ${((observer.statusChanges + observer.otherChanges) / instanceCount).toFixed(2)} ` +
        `changes per Instance after its create: ${(observer.statusChanges / instanceCount).toFixed(2)} to status only ` +
        `(the status subresource), ${(observer.otherChanges / instanceCount).toFixed(2)} to metadata or spec ` +
        '(the request metric has no subresource label)',
    );

    const reconciles = series(diff, 'loam_reconcile_total').filter((s) => s.labels.controller === 'instance');
    const reconcileTime = (suffix: string) =>
      series(diff, `loam_reconcile_time_seconds_${suffix}`).find((s) => s.labels.controller === 'instance')
        ?.value ?? 0;
    const retries = series(diff, 'loam_workqueue_retries_total').find((s) => s.labels.name === 'instance');
    const queued = (suffix: string) =>
      series(diff, `loam_workqueue_queue_duration_seconds_${suffix}`).find(
        (s) => s.labels.name === 'instance',
      )?.value ?? 0;
    console.log(
      `\nInstance controller: ${(reconciles.reduce((sum, s) => sum + s.value, 0) / instanceCount).toFixed(2)} reconciles per Instance ` +
        `(${reconciles.map((s) => `${s.labels.result} ${s.value}`).join(', ')}), ` +
        `mean ${((reconcileTime('sum') / Math.max(1, reconcileTime('count'))) * 1000).toFixed(1)} ms each, ` +
        `${retries?.value ?? 0} retries; keys waited ${((queued('sum') / Math.max(1, queued('count'))) * 1000).toFixed(0)} ms ` +
        'on average in its work queue',
    );

    const jobs = agents.flatMap(({ driver }) => driver.jobs);
    const byType = new Map<string, number>();
    for (const job of jobs) byType.set(job.type, (byType.get(job.type) ?? 0) + 1);
    const perHost = agents.map(({ driver }) => driver.running().size);
    console.log(
      `\njobs the agents received: ${jobs.length}, ${(jobs.length / instanceCount).toFixed(3)} per Instance ` +
        `(${[...byType].map(([type, n]) => `${type} ${n}`).join(', ')}); ` +
        `domains per host min ${Math.min(...perHost)} max ${Math.max(...perHost)}`,
    );
  } finally {
    watch?.stop();
    await Promise.all(agents.map(({ agent }) => agent.stop()));
    await plane?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
