/**
 * The libvirt agent through the whole system: `loam up` (API server on the embedded sqlite store,
 * hub, controllers) in this process on 127.0.0.1 with a local libvirt agent (openLibvirtDriver,
 * run by up() as `loam up` runs it), its Driver wrapped in a proxy that records when each job's
 * handle() starts and ends and when the driver first reports a domain running. Instances are
 * created through the Kubernetes API and a watch records when each says Running.
 *
 * 1. Real boots (env LOAM_BENCH_BOOTS, default 3; 0 skips them): the agent on qemu:///system
 *    (hack/libvirtd.ts starts libvirtd when it does not answer), domain type qemu (TCG: no KVM
 *    here). The guest of hack/guest.ts (this machine's Debian kernel and a busybox initramfs that
 *    prints LOAM-BOOT-OK on ttyS0), served over HTTP on 127.0.0.1, is applied as a direct-kernel
 *    Instance (1 cpu, 256Mi, no NIC) one at a time (the Host's cpus bound how many fit at once).
 *    Per boot: apply -> job at the agent (control plane: create, scheduling, dispatch through the
 *    hub), the job's handle() (hypervisor: fetch into the cache (the first boot only), define,
 *    start), job end -> Running in status (the job's result back through the hub and the
 *    controller), apply -> Running, and Running -> the marker in the console log (the guest's boot
 *    under TCG, the log polled every 50 ms). Then it is deleted: delete -> gone from the API, and
 *    virsh and the storage dir are checked to hold nothing of it, before the next is applied.
 * 2. Scale on libvirt's test driver (env LOAM_BENCH_TEST_INSTANCES, default 100; 0 skips it): the
 *    agent on test:///default (libvirt's in-memory driver: real XML validation and domain
 *    bookkeeping, no guests) whose Host reports 512 cpus and 2Ti, all allocatable (the proxy adds these facts; the
 *    machine's own cpus would fit only a few). One /20 Network and N Instances (1 cpu, 256Mi,
 *    one NIC, one kernel URL and sha256: the cache fetches it once), created 32 at a time; then
 *    all deleted. Prints convergence, apply -> Running p50/p99, jobs per Instance and the jobs'
 *    handle() durations.
 *
 * Everything is bounded; this run's domains left on qemu:///system (a failure, a kill) are
 * destroyed and undefined at start and at the end, the temp dir is removed.
 *
 * Env: LOAM_BENCH_BOOTS, LOAM_BENCH_TEST_INSTANCES, LOAM_BENCH_LOG (log level of the plane and the
 * agent, default silent; logs go to stderr).
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import { type Logger, pino } from 'pino';
import { openLibvirtDriver } from '../../agents/libvirt/driver.js';
import type { AgentJob, Driver, DriverEvents, JobOutcome } from '../../agents/runtime/driver.js';
import type { ControlPlane } from '../../controllers/up.js';
import { getCondition } from '../../crds/meta.js';
import type { Instance } from '../../crds/v1alpha1/index.js';
import { bootMarker, buildGuest, findKernel, type Guest } from '../guest.js';
import { ensureLibvirtd, systemUri, virsh } from '../libvirtd.js';
import { group, InstanceWatch, ms, readyHosts, startPlane, until, within } from './common.js';
import { percentile } from './measure.js';

const bootCount = Number(process.env.LOAM_BENCH_BOOTS ?? 3);
const testInstanceCount = Number(process.env.LOAM_BENCH_TEST_INSTANCES ?? 100);
const logLevel = process.env.LOAM_BENCH_LOG ?? 'silent';

/** Bound on libvirtd answering (started here when it does not). */
const libvirtdTimeoutMs = 90_000;
/** Bound on the local agent enrolling and its Host turning Ready. */
const hostTimeoutMs = 60_000;
/** Bound on one real boot reaching Running, and then on its marker. */
const bootRunningTimeoutMs = 120_000;
const markerTimeoutMs = 120_000;
/** Bound on deletions reaching the API as gone. */
const deleteTimeoutMs = 60_000;
/** Bound on all test-driver Instances reaching Running, and on all of them being gone. */
const convergeTimeoutMs = 180_000;
/** Creates (and deletes) in flight at once on the test driver. */
const createConcurrency = 32;

const namespace = 'default';
const bootName = (i: number) => `bench-boot-${i}`;
const bootDomain = (i: number) => `loam.${namespace}.${bootName(i)}`;
const testName = (i: number) => `vm-${String(i).padStart(4, '0')}`;

// --- The driver proxy ----------------------------------------------------------------------------

interface JobTiming {
  type: string;
  /** The Instance's name. */
  name: string;
  start: number;
  end?: number;
  code?: number;
  /** The observed power state in the job's result. */
  state?: string;
  error?: string;
}

/** What the proxy saw of the driver: every job, and when it first reported each Instance running. */
interface DriverRecord {
  jobs: JobTiming[];
  reportedRunning: Map<string, number>;
}

/**
 * `driver` with handle() timed and its reports watched; `facts` are added to the driver's own
 * (they override the host facts the runtime reports). Everything else passes through, so the
 * agent sees the driver's capabilities, metrics and streams as they are.
 */
function recorded(
  driver: Driver,
  facts: Record<string, string> = {},
): { driver: Driver; record: DriverRecord } {
  const record: DriverRecord = { jobs: [], reportedRunning: new Map() };
  const sawRunning = (name: string, observed: unknown) => {
    if (
      (observed as { state?: string } | undefined)?.state === 'running' &&
      !record.reportedRunning.has(name)
    ) {
      record.reportedRunning.set(name, performance.now());
    }
  };
  const handle = async (job: AgentJob, signal: AbortSignal): Promise<JobOutcome> => {
    const timing: JobTiming = { type: job.type, name: job.object.metadata.name, start: performance.now() };
    record.jobs.push(timing);
    try {
      const outcome = await driver.handle(job, signal);
      timing.code = outcome.code;
      timing.state = (outcome.observed as { state?: string } | undefined)?.state;
      return outcome;
    } catch (err) {
      timing.error = (err as Error).message;
      throw err;
    } finally {
      timing.end = performance.now();
    }
  };
  const start = async (events: DriverEvents): Promise<void> =>
    driver.start?.({
      inventoryChanged(update) {
        for (const item of update.upserted ?? []) sawRunning(item.ref?.name ?? '', item.observed);
        events.inventoryChanged(update);
      },
      lifecycle(notice) {
        events.lifecycle(notice);
      },
    });
  const proxy = new Proxy(driver, {
    get(target, property) {
      if (property === 'handle') return handle;
      if (property === 'start') return target.start === undefined ? undefined : start;
      if (property === 'facts') return async () => ({ ...(await target.facts()), ...facts });
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  return { driver: proxy, record };
}

// --- Helpers -------------------------------------------------------------------------------------

/** Serves `files` (path -> bytes) on 127.0.0.1; counts the GETs of each path. */
async function serveFiles(
  files: Record<string, Buffer>,
): Promise<{ server: Server; url: string; gets: Map<string, number> }> {
  const gets = new Map<string, number>();
  const server = createServer((request, response) => {
    const path = request.url ?? '';
    const bytes = files[path];
    gets.set(path, (gets.get(path) ?? 0) + 1);
    if (bytes === undefined) response.writeHead(404).end();
    else response.writeHead(200, { 'content-length': bytes.length }).end(bytes);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, gets };
}

/** The plane with one local libvirt agent driving `driver`, once its Host is Ready. */
async function planeWith(
  dataDir: string,
  driver: Driver,
  close: () => Promise<void>,
): Promise<{ plane: ControlPlane; kubeConfig: KubeConfig; custom: CustomObjectsApi; hostMs: number }> {
  const t0 = performance.now();
  const plane = await startPlane(dataDir, logLevel, [
    { role: 'libvirt', driver, close, metricsAddress: '127.0.0.1:0' },
  ]);
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(plane.kubeconfigPath);
  const custom = kubeConfig.makeApiClient(CustomObjectsApi);
  try {
    await until(async () => (await readyHosts(custom)).length > 0, {
      timeoutMs: hostTimeoutMs,
      intervalMs: 100,
      what: 'the local libvirt agent to enroll and its Host to be Ready',
    });
  } catch (err) {
    await plane.stop();
    throw err;
  }
  return { plane, kubeConfig, custom, hostMs: performance.now() - t0 };
}

/** Whether the Instance's condition Scheduled says it fits no Host (this machine is full). */
function unschedulable(instance: Instance | undefined): boolean {
  const scheduled = getCondition(instance?.status?.conditions, 'Scheduled');
  return scheduled?.status === 'False' && scheduled.reason === 'Unschedulable';
}

/** Destroys and undefines the domains of `names` that qemu:///system has; returns how many. */
async function removeDomains(names: string[]): Promise<number> {
  const listed = await virsh(['list', '--all', '--name']);
  const present = new Set(listed.stdout.split('\n').map((line) => line.trim()));
  const leftovers = names.filter((name) => present.has(name));
  for (const name of leftovers) {
    await virsh(['destroy', name]);
    await virsh(['undefine', name]);
  }
  return leftovers.length;
}

const sorted = (values: number[]) => [...values].sort((a, b) => a - b);
const p50max = (values: number[]) => {
  const s = sorted(values);
  return `p50 ${ms(percentile(s, 50))}   max ${ms(s[s.length - 1] ?? Number.NaN)}`;
};
const seconds = (x: number) => `${(x / 1000).toFixed(1)} s`;

// --- 1. Real boots on qemu:///system ---------------------------------------------------------------

async function realBoots(dir: string, guest: Guest, logger: Logger): Promise<void> {
  const domains = Array.from({ length: bootCount }, (_, i) => bootDomain(i));
  const t0 = performance.now();
  const { started } = await ensureLibvirtd(libvirtdTimeoutMs);
  const libvirtdMs = performance.now() - t0;
  // An earlier run that was killed may have left its domains: they would stand in the way.
  const stale = await removeDomains(domains);
  const files = await serveFiles({ '/vmlinuz': guest.kernel.bytes, '/initrd.gz': guest.initrd.bytes });
  const storageDir = join(dir, 'boot-storage');
  let plane: ControlPlane | undefined;
  let watch: InstanceWatch | undefined;
  try {
    const opened = await openLibvirtDriver({ uri: systemUri, storageDir, logger });
    const { driver, record } = recorded(opened.driver);
    const system = await planeWith(join(dir, 'boot-plane'), driver, opened.close);
    plane = system.plane;
    const { kubeConfig, custom } = system;
    console.log(
      `\n1. real boots: ${bootCount} direct-kernel Instances on ${systemUri}, one at a time\n` +
        `libvirtd ${started ? `started here, answering after ${seconds(libvirtdMs)}` : 'already running'}` +
        `${stale > 0 ? `; ${stale} domains of an earlier run removed` : ''}; ` +
        `plane up and the local agent's Host Ready in ${seconds(system.hostMs)}; ` +
        `domain type ${(await opened.driver.facts()).domainType}\n` +
        `guest: ${findKernel()} ` +
        `(${(guest.kernel.bytes.length / 2 ** 20).toFixed(1)} MiB) + busybox initramfs ` +
        `(${(guest.initrd.bytes.length / 2 ** 20).toFixed(1)} MiB), served on ${files.url}; 1 cpu, 256Mi, no NIC\n`,
    );
    const observer = new InstanceWatch(kubeConfig, namespace, bootCount);
    watch = observer;
    await observer.start();

    interface Boot {
      name: string;
      applied: number;
      jobStart: number;
      jobEnd: number;
      /** The job's end or the driver's first report of the domain running, whichever came first. */
      domainRunning: number;
      running: number;
      marker: number;
      /** Delete sent -> watch event DELETED. */
      deleteMs: number;
    }
    const boots: Boot[] = [];
    const header =
      `  ${'Instance'.padEnd(13)} ${'apply->job'.padStart(10)} ${'job->dom'.padStart(9)} ${'dom->Run'.padStart(9)} ` +
      `${'apply->Run'.padStart(10)} ${'Run->mark'.padStart(9)} ${'apply->mark'.padStart(11)} ${'delete'.padStart(9)}`;
    console.log(
      'per boot: apply->job = create sent -> handle() starts at the agent (control plane); job->dom =\n' +
        "handle() starts -> the domain runs: handle() returns, or the driver's poll reports it running, whichever\n" +
        'is first (hypervisor: fetch, define, start; the kernel and initrd are fetched into the cache by the\n' +
        'first boot only); dom->Run = the domain runs -> watch event with phase Running (the report back\n' +
        `through hub and controller); Run->mark = Running -> ${bootMarker} in the console log (the guest's\n` +
        'boot under TCG); delete = delete sent -> watch event DELETED (then virsh and the storage dir are\n' +
        `checked); each is deleted before the next is applied (this Host's ${availableParallelism()} cpus bound how many fit)`,
    );
    console.log(header);
    for (let i = 0; i < bootCount; i++) {
      const name = bootName(i);
      const applied = performance.now();
      await custom.createNamespacedCustomObject({
        ...group,
        namespace,
        plural: 'instances',
        body: {
          apiVersion: 'loam.dev/v1alpha1',
          kind: 'Instance',
          metadata: { name, namespace },
          spec: {
            cpus: 1,
            memory: '256Mi',
            kernel: {
              url: `${files.url}/vmlinuz`,
              sha256: guest.kernel.sha256,
              initrd: { url: `${files.url}/initrd.gz`, sha256: guest.initrd.sha256 },
              cmdline: guest.cmdline,
            },
          },
        },
      });
      await until(() => observer.running.has(name) || unschedulable(observer.latest.get(name)), {
        timeoutMs: bootRunningTimeoutMs,
        intervalMs: 10,
        what: () =>
          `${name} to be Running (status: ${JSON.stringify(observer.latest.get(name)?.status ?? null)}; ` +
          `jobs: ${JSON.stringify(record.jobs.filter((job) => job.name === name))})`,
      });
      if (!observer.running.has(name)) {
        throw new Error(`${name} cannot be scheduled: ${JSON.stringify(observer.latest.get(name)?.status)}`);
      }
      const uid = observer.latest.get(name)?.metadata.uid ?? '';
      const consoleDir = join(storageDir, 'instances', uid);
      const consoleLog = join(consoleDir, 'console.log');
      let logged = '';
      await until(
        () => {
          logged = existsSync(consoleLog) ? readFileSync(consoleLog, 'utf8') : '';
          return logged.includes(bootMarker);
        },
        {
          timeoutMs: markerTimeoutMs,
          intervalMs: 50,
          what: () => `${bootMarker} in ${consoleLog} (it ends: ${JSON.stringify(logged.slice(-1000))})`,
        },
      );
      const marker = performance.now();
      const job = record.jobs.find(
        (j) => j.name === name && j.type === 'instance.apply' && j.state === 'running',
      );
      if (job?.end === undefined) {
        throw new Error(
          `no instance.apply job of ${name} ended with the domain running: ${JSON.stringify(record.jobs)}`,
        );
      }
      // Deleted before the next: gone from the API, from libvirt and from the storage dir.
      const deleting = performance.now();
      await custom.deleteNamespacedCustomObject({ ...group, namespace, plural: 'instances', name });
      await until(() => observer.deleted.has(name), {
        timeoutMs: deleteTimeoutMs,
        intervalMs: 10,
        what: () => `${name} to be deleted (status: ${JSON.stringify(observer.latest.get(name)?.status)})`,
      });
      const listed = await virsh(['list', '--all', '--name']);
      if (listed.code !== 0) throw new Error(`virsh list: ${listed.stderr}`);
      if (listed.stdout.split('\n').includes(bootDomain(i)) || existsSync(consoleDir)) {
        throw new Error(
          `${name} is deleted, yet virsh still lists ${bootDomain(i)} or ${consoleDir} remains`,
        );
      }
      const boot: Boot = {
        name,
        applied,
        jobStart: (record.jobs.find((j) => j.name === name && j.type === 'instance.apply') as JobTiming)
          .start,
        jobEnd: job.end,
        domainRunning: Math.min(job.end, record.reportedRunning.get(name) ?? Number.POSITIVE_INFINITY),
        running: observer.running.get(name) as number,
        marker,
        deleteMs: (observer.deleted.get(name) as number) - deleting,
      };
      boots.push(boot);
      console.log(
        `  ${name.padEnd(13)} ${ms(boot.jobStart - applied).padStart(10)} ${ms(boot.domainRunning - boot.jobStart)} ` +
          `${ms(boot.running - boot.domainRunning)} ${ms(boot.running - applied).padStart(10)} ` +
          `${ms(marker - boot.running)} ${ms(marker - applied).padStart(11)} ${ms(boot.deleteMs)}`,
      );
    }
    const split = (f: (b: Boot) => number) => p50max(boots.map(f));
    console.log(
      `\napply -> Running, ${bootCount} boots (p50 and max of each split):\n` +
        `  control plane, apply -> job at the agent      ${split((b) => b.jobStart - b.applied)}\n` +
        `  hypervisor, job -> domain running            ${split((b) => b.domainRunning - b.jobStart)}\n` +
        `  control plane, domain running -> Running      ${split((b) => b.running - b.domainRunning)}\n` +
        `  total, apply -> Running                       ${split((b) => b.running - b.applied)}\n` +
        `  guest, Running -> ${bootMarker} on the console   ${split((b) => b.marker - b.running)}\n` +
        `  total, apply -> ${bootMarker}                    ${split((b) => b.marker - b.applied)}\n` +
        `  delete -> gone from the API                   ${split((b) => b.deleteMs)}; ` +
        'virsh lists none of their domains and their storage dirs are gone',
    );
    const polledFirst = boots.filter((b) => b.domainRunning < b.jobEnd).length;
    console.log(
      `  (handle() itself lasted ${split((b) => b.jobEnd - b.jobStart)}; the driver's poll, every 2 s, ` +
        `reported the domain running before handle() returned in ${polledFirst} of ${bootCount} boots)`,
    );
    console.log(
      `  kernel and initrd fetched over HTTP ${files.gets.get('/vmlinuz') ?? 0} and ${files.gets.get('/initrd.gz') ?? 0} times`,
    );
  } finally {
    watch?.stop();
    await plane?.stop();
    files.server.close();
    const removed = await removeDomains(domains);
    if (removed > 0) console.log(`note: ${removed} domains of this run were left on ${systemUri}: removed`);
  }
}

// --- 2. Scale on libvirt's test driver ------------------------------------------------------------

async function testDriverScale(dir: string, kernel: Buffer, logger: Logger): Promise<void> {
  const count = testInstanceCount;
  const files = await serveFiles({ '/kernel': kernel });
  const kernelSha256 = createHash('sha256').update(kernel).digest('hex');
  let plane: ControlPlane | undefined;
  let watch: InstanceWatch | undefined;
  try {
    const opened = await openLibvirtDriver({
      uri: 'test:///default',
      storageDir: join(dir, 'test-storage'),
      logger,
    });
    const { driver, record } = recorded(opened.driver, {
      cpus: '512',
      memory: '2Ti',
      allocatableCpus: '512',
      allocatableMemory: '2Ti',
    });
    const system = await planeWith(join(dir, 'test-plane'), driver, opened.close);
    plane = system.plane;
    const { kubeConfig, custom } = system;
    console.log(
      `\n2. ${count} Instances on libvirt's test driver (test:///default) through the whole system\n` +
        `plane up and the local agent's Host Ready in ${seconds(system.hostMs)}; the Host reports 512 cpus and 2Ti; ` +
        `Instances: 1 cpu, 256Mi, one NIC on a /20 Network, kernel ${(kernel.length / 2 ** 20).toFixed(1)} MiB ` +
        `from ${files.url} (one sha256), created ${createConcurrency} at a time`,
    );
    await custom.createNamespacedCustomObject({
      ...group,
      namespace,
      plural: 'networks',
      body: {
        apiVersion: 'loam.dev/v1alpha1',
        kind: 'Network',
        metadata: { name: 'bench', namespace },
        spec: { cidr: '10.64.0.0/20', dhcp: { rangeStart: '10.64.15.240', rangeEnd: '10.64.15.250' } },
      },
    });
    const observer = new InstanceWatch(kubeConfig, namespace, count);
    watch = observer;
    await observer.start();
    const names = Array.from({ length: count }, (_, i) => testName(i));
    const created = new Map<string, number>();
    const allRunning = observer.untilAllRunning();
    allRunning.catch(() => {});
    const t0 = performance.now();
    await inParallel(names, async (name) => {
      created.set(name, performance.now());
      await custom.createNamespacedCustomObject({
        ...group,
        namespace,
        plural: 'instances',
        body: {
          apiVersion: 'loam.dev/v1alpha1',
          kind: 'Instance',
          metadata: { name, namespace },
          spec: {
            cpus: 1,
            memory: '256Mi',
            kernel: { url: `${files.url}/kernel`, sha256: kernelSha256, cmdline: 'console=ttyS0' },
            networks: [{ name: 'bench' }],
          },
        },
      });
    });
    const createdMs = performance.now() - t0;
    try {
      await within(allRunning, convergeTimeoutMs, `${count} Instances to be Running`);
    } catch (err) {
      throw new Error(
        `${(err as Error).message}: ${observer.running.size} Running; the others by phase: ${observer.stuck(names)}`,
      );
    }
    const convergedMs = Math.max(...observer.running.values()) - t0;
    const latencies = sorted(
      names.map((name) => (observer.running.get(name) as number) - (created.get(name) as number)),
    );
    const applyJobs = record.jobs.filter((job) => job.type === 'instance.apply');
    console.log(
      `convergence: ${count} created in ${seconds(createdMs)}, all Running ${seconds(convergedMs)} after the first create ` +
        `(${(count / (convergedMs / 1000)).toFixed(1)} Instances/s)\n` +
        `apply -> Running (create sent -> watch event Running): p50 ${ms(percentile(latencies, 50))}   ` +
        `p99 ${ms(percentile(latencies, 99))}   max ${ms(latencies[latencies.length - 1] as number)}`,
    );

    const deleting = new Map<string, number>();
    const t1 = performance.now();
    await inParallel(names, async (name) => {
      deleting.set(name, performance.now());
      await custom.deleteNamespacedCustomObject({ ...group, namespace, plural: 'instances', name });
    });
    await until(() => observer.deleted.size >= count, {
      timeoutMs: convergeTimeoutMs,
      intervalMs: 10,
      what: () => `${count} Instances to be deleted (${observer.deleted.size} are)`,
    });
    const deletedMs = Math.max(...observer.deleted.values()) - t1;
    const deleteLatencies = sorted(
      names.map((name) => (observer.deleted.get(name) as number) - (deleting.get(name) as number)),
    );
    console.log(
      `deletion: all ${count} gone from the API ${seconds(deletedMs)} after the first delete; ` +
        `delete -> gone p50 ${ms(percentile(deleteLatencies, 50))}   p99 ${ms(percentile(deleteLatencies, 99))}`,
    );

    const jobs = record.jobs;
    const failed = jobs.filter((job) => job.error !== undefined || job.code !== 0);
    const applies = new Map<string, number>();
    for (const job of applyJobs) applies.set(job.name, (applies.get(job.name) ?? 0) + 1);
    const reapplied = [...applies.values()].filter((n) => n > 1).length;
    const byType = new Map<string, JobTiming[]>();
    for (const job of jobs) byType.set(job.type, [...(byType.get(job.type) ?? []), job]);
    console.log(
      `jobs at the agent: ${jobs.length}, ${(jobs.length / count).toFixed(2)} per Instance ` +
        `(${applyJobs.length} until all were Running, ${reapplied} Instances got more than one apply; ${failed.length} failed${
          failed[0]
            ? `, e.g. ${failed[0].type} of ${failed[0].name}: ${failed[0].error ?? `code ${failed[0].code}`}`
            : ''
        }); the kernel fetched over HTTP ${files.gets.get('/kernel') ?? 0} time(s)`,
    );
    console.log(`the agent's job duration (driver handle()), by type:`);
    for (const [type, list] of [...byType].sort(([a], [b]) => a.localeCompare(b))) {
      const durations = sorted(list.map((job) => (job.end ?? Number.NaN) - job.start));
      console.log(
        `  ${type.padEnd(16)} ${String(list.length).padStart(4)} jobs, ${(list.length / count).toFixed(2)} per Instance   ` +
          `p50 ${ms(percentile(durations, 50))}   p90 ${ms(percentile(durations, 90))}   ` +
          `p99 ${ms(percentile(durations, 99))}   max ${ms(durations[durations.length - 1] as number)}`,
      );
    }
  } finally {
    watch?.stop();
    await plane?.stop();
    files.server.close();
  }
}

/** Runs `op` on every item, `createConcurrency` at a time. */
async function inParallel<T>(items: T[], op: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(createConcurrency, items.length) }, async () => {
      while (next < items.length) await op(items[next++] as T);
    }),
  );
}

// --- The run -------------------------------------------------------------------------------------

async function main(): Promise<void> {
  if (!(bootCount >= 0 && testInstanceCount >= 0 && Number.isInteger(bootCount + testInstanceCount))) {
    throw new Error('LOAM_BENCH_BOOTS and LOAM_BENCH_TEST_INSTANCES must be whole numbers >= 0');
  }
  const started = performance.now();
  const dir = mkdtempSync(join(tmpdir(), 'loam-bench-libvirt-'));
  // QEMU runs as libvirt-qemu: it must enter the storage dirs below (mkdtemp makes this one 0700).
  chmodSync(dir, 0o755);
  try {
    const logger = pino({ level: logLevel }, pino.destination(2));
    console.log(
      `loam libvirt agent benchmark (${availableParallelism()} cores, load average at start ${loadavg()[0]?.toFixed(2)})\n` +
        'plane: loam up (API server on embedded sqlite, hub, controllers) in this process on 127.0.0.1, with a local libvirt\n' +
        'agent (openLibvirtDriver) in this process; its driver is wrapped to time handle() and see its reports',
    );
    const guest = bootCount > 0 ? await buildGuest(join(dir, 'guest')) : undefined;
    if (guest !== undefined) await realBoots(dir, guest, logger);
    if (testInstanceCount > 0) {
      await testDriverScale(dir, guest?.kernel.bytes ?? randomBytes(8 * 2 ** 20), logger);
    }
    console.log(`\ndone in ${seconds(performance.now() - started)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
