/**
 * The libvirt agent's Driver: turns instance.apply and instance.delete jobs into files on this
 * host (cached kernels and images, qcow2 disks and the cloud-init seed ISO under
 * `<storageDir>/instances/<uid>/`) and domains (DomainJobs), and reports the Loam domains it
 * finds as ObservedInstances, at connect (inventory) and when they change (polling).
 * network.attach and network.detach make and remove the host's bridge of a Network (host-network.ts).
 */

import { randomBytes } from 'node:crypto';
import { access, mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { status } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { PowerJobObject } from '../../controllers/apiserver/power.js';
import type { InstanceJobObject, ObservedInstance } from '../../controllers/instance/reconcile.js';
import type { NetworkJobObject } from '../../controllers/network/reconcile.js';
import { isLoamError, LoamError } from '../../crds/errors.js';
import { actionSubresources } from '../../crds/kind.js';
import { parseQuantity } from '../../crds/quantity.js';
import { type Instance, instanceKind } from '../../crds/v1alpha1/instance.js';
import { validateObject } from '../../crds/validate.js';
import { type CommandFailed, commandError, runCommand } from '../runtime/command.js';
import type {
  AgentJob,
  Driver,
  DriverEvents,
  InventoryItem,
  JobOutcome,
  ResourceRef,
  StreamRequest,
} from '../runtime/driver.js';
import { hostCapacity } from '../runtime/driver.js';
import { ArtifactCache } from './artifacts.js';
import { Consoles } from './console.js';
import { type DomainFacts, type DomainInputs, type DomainType, parseDomainXml } from './domain-xml.js';
import { bridgeName, type HostNetworkSettings, HostNetworks } from './host-network.js';
import {
  type DomainEvent,
  type DomainStatus,
  type Hypervisor,
  type PollBaseline,
  pollEvents,
} from './hypervisor.js';
import { DomainJobs, type ObservedDomain } from './jobs.js';
import { type PreflightCondition, preflight, recheck } from './preflight.js';
import { type AllocatableFacts, allocatableFacts, defaultReserved, type Reserved } from './reserved.js';
import { buildSeedIso, seedFiles } from './seed.js';
import {
  type InstanceMetric,
  type InstanceSamples,
  instanceMetricDefinitions,
  instanceMetrics,
  statsGroups,
} from './stats.js';
import { Virsh } from './virsh.js';

/** A file fetched by URL into a local cache and checked against its sha256; resolves to its path. */
export interface ArtifactFetcher {
  fetch(artifact: { url: string; sha256: string }, signal?: AbortSignal): Promise<string>;
}

export interface LibvirtDriverOptions {
  hypervisor: Hypervisor;
  /** Instance files go under `<storageDir>/instances/<uid>/`. */
  storageDir: string;
  artifacts: ArtifactFetcher;
  /** From the preflight probe: kvm when KVM is usable, qemu (TCG) otherwise. */
  domainType: DomainType;
  logger: Logger;
  /** How often the domains are polled for changes made behind the agent's back. */
  eventPollMs?: number;
  /** How long a Halted Instance's guest gets to power off before it is destroyed. */
  shutdownTimeoutMs?: number;
  /** The host's bridges for network.attach and network.detach; without, those jobs are refused. */
  networks?: HostNetworks;
  /** The preflight checks worth repeating (recheck), reported as the Host's conditions. */
  checks?: () => Promise<PreflightCondition[]>;
  /** Reported with the facts (reserved.ts); without, the Host's allocatable is its capacity. */
  allocatable?: AllocatableFacts;
}

const qemuImgTimeoutMs = 60_000;
// Well inside Prometheus's default 10 s scrape timeout.
const statsTimeoutMs = 5_000;

// The uid names a directory under storageDir: nothing in it may climb out.
const safeUid = /^[0-9a-z-]{1,64}$/;

export class LibvirtDriver implements Driver {
  readonly capabilities: readonly string[];
  private readonly hypervisor: Hypervisor;
  private readonly jobs: DomainJobs;
  private readonly storageDir: string;
  private readonly artifacts: ArtifactFetcher;
  private readonly domainType: DomainType;
  private readonly logger: Logger;
  private readonly eventPollMs: number;
  private readonly networks: HostNetworks | undefined;
  private readonly checks: (() => Promise<PreflightCondition[]>) | undefined;
  private readonly allocatable: AllocatableFacts | undefined;
  /** Domain name -> Instance, for the domains seen so far: a removed domain can no longer be asked. */
  private readonly refs = new Map<string, ResourceRef>();
  /** The domains last listed, reported while libvirt does not answer. */
  private lastDomains: InventoryItem[] = [];
  private watcher?: { abort: AbortController; done: Promise<void> };
  private readonly consoles: Consoles;

  constructor(options: LibvirtDriverOptions) {
    this.hypervisor = options.hypervisor;
    this.consoles = new Consoles({ hypervisor: options.hypervisor, logger: options.logger });
    this.jobs = new DomainJobs(options.hypervisor, { shutdownTimeoutMs: options.shutdownTimeoutMs });
    this.storageDir = options.storageDir;
    this.artifacts = options.artifacts;
    this.domainType = options.domainType;
    this.logger = options.logger;
    this.eventPollMs = options.eventPollMs ?? 2_000;
    this.networks = options.networks;
    this.checks = options.checks;
    this.allocatable = options.allocatable;
    this.capabilities = [
      options.domainType === 'kvm' ? 'kvm' : 'tcg',
      ...(this.networks?.capabilities ?? []),
    ];
  }

  /** Without libvirtVersion while libvirt does not answer: the Host's LibvirtReachable says why. */
  async facts(): Promise<Record<string, string>> {
    const version = await this.hypervisor.version().catch((err: unknown) => {
      if (isLoamError(err, 'Unavailable')) return undefined;
      throw err;
    });
    return {
      ...(version ? { libvirtVersion: version.library } : {}),
      domainType: this.domainType,
      ...this.allocatable,
    };
  }

  /**
   * While libvirt does not answer, the domains last listed: the agent still connects, and its
   * Host, not Ready, says why (conditions), so nothing is decided on a list that may be stale.
   */
  async inventory(): Promise<InventoryItem[]> {
    try {
      this.lastDomains = (await this.jobs.inventory())
        .filter(({ status }) => !startingUp(status))
        .map(({ status, facts }) => this.item(status, facts));
    } catch (err) {
      if (!isLoamError(err, 'Unavailable')) throw err;
      this.logger.warn({ err }, 'libvirt does not answer; reporting the domains last listed');
    }
    return [...this.lastDomains, ...((await this.networks?.inventory()) ?? [])];
  }

  async conditions(): Promise<PreflightCondition[]> {
    return (await this.checks?.()) ?? [];
  }

  async handle(job: AgentJob, signal: AbortSignal): Promise<JobOutcome> {
    switch (job.type) {
      case 'instance.apply':
        return { code: status.OK, observed: await this.apply(jobObject(job), signal) };
      case 'instance.delete':
        return { code: status.OK, observed: await this.delete(jobObject(job)) };
      case 'instance.power':
        return { code: status.OK, observed: await this.power(powerJobObject(job)) };
      case 'network.attach':
        return { code: status.OK, observed: await this.hostNetworks(job).attach(networkJobObject(job)) };
      case 'network.detach':
        return { code: status.OK, observed: await this.hostNetworks(job).detach(networkJobObject(job)) };
      default:
        throw new LoamError('MethodNotAllowed', `the libvirt agent does not run ${job.type} jobs`);
    }
  }

  private hostNetworks(job: AgentJob): HostNetworks {
    if (this.networks) return this.networks;
    throw new LoamError(
      'MethodNotAllowed',
      `this libvirt agent makes no host bridges, so it does not run ${job.type} jobs`,
    );
  }

  /** The serial console of an Instance this agent runs (console.ts); no other kind of stream. */
  openStream(request: StreamRequest): Duplex | undefined {
    return request.kind === 'console' ? this.consoles.open(request.resource) : undefined;
  }

  async start(events: DriverEvents): Promise<void> {
    const abort = new AbortController();
    this.watcher = { abort, done: this.watch(events, abort.signal) };
  }

  async stop(): Promise<void> {
    this.watcher?.abort.abort();
    await this.watcher?.done;
  }

  /**
   * The per-Instance metrics (stats.ts) of the Loam domains seen so far (inventory and polling),
   * from one domstats call per scrape. When libvirt does not answer in time they are left empty.
   */
  registerMetrics(registry: Registry): void {
    let scrape: Promise<InstanceSamples | undefined> | undefined;
    // The registry collects every metric at once: they share one call.
    const samples = () => {
      scrape ??= this.instanceSamples().finally(() => {
        scrape = undefined;
      });
      return scrape;
    };
    const labelNames = ['namespace', 'name'] as const;
    for (const [name, { type, help }] of Object.entries(instanceMetricDefinitions)) {
      const metric = name as InstanceMetric;
      if (type === 'counter') {
        new Counter({
          name,
          help,
          labelNames,
          registers: [registry],
          async collect() {
            const rows = (await samples())?.[metric] ?? [];
            this.reset();
            for (const { labels, value } of rows) this.inc(labels, value);
          },
        });
      } else {
        new Gauge({
          name,
          help,
          labelNames,
          registers: [registry],
          async collect() {
            const rows = (await samples())?.[metric] ?? [];
            this.reset();
            for (const { labels, value } of rows) this.set(labels, value);
          },
        });
      }
    }
  }

  private async instanceSamples(): Promise<InstanceSamples | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new LoamError('Unavailable', `domstats did not answer within ${statsTimeoutMs} ms`)),
        statsTimeoutMs,
      );
    });
    try {
      const stats = await Promise.race([this.hypervisor.domstats([], statsGroups), late]);
      return instanceMetrics(stats, this.refs);
    } catch (err) {
      this.logger.debug({ err }, 'no domain stats; instance metrics left empty');
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  }

  private async apply(object: InstanceJobObject, signal: AbortSignal): Promise<ObservedInstance> {
    const instance = validateObject(instanceKind, object);
    const uid = checkedUid(instance);
    const { spec } = instance;
    const dir = join(this.storageDir, 'instances', uid);
    const interfaces = await this.interfaces(instance, object);
    // Before any download: a cloudInit the agent cannot serve is refused up front.
    const seed =
      spec.cloudInit === undefined
        ? undefined
        : seedFiles(instance, { interfaces: object.status.interfaces, networks: object.networks });
    const inputs: DomainInputs = {
      domainType: this.domainType,
      interfaces,
      dataDisks: [],
      consoleLog: join(dir, 'console.log'),
    };
    if (spec.kernel !== undefined) {
      const { initrd } = spec.kernel;
      inputs.kernel = {
        path: await this.fetch('spec.kernel', spec.kernel, signal),
        initrd: initrd === undefined ? undefined : await this.fetch('spec.kernel.initrd', initrd, signal),
      };
    }
    const base = spec.image === undefined ? undefined : await this.fetch('spec.image', spec.image, signal);
    await mkdir(dir, { recursive: true });
    if (base !== undefined) inputs.rootDisk = await this.rootDisk(instance, base, dir, signal);
    for (const [index, disk] of (spec.disks ?? []).entries()) {
      // Prefixed, so a data disk named "root" cannot be the root disk.
      const path = join(dir, `disk-${disk.name}.qcow2`);
      await createIfMissing(path, signal, (tmp) => [
        'create',
        '-f',
        'qcow2',
        tmp,
        diskBytes(`spec.disks[${index}].size`, disk.size),
      ]);
      inputs.dataDisks.push({ name: disk.name, path });
    }
    // Only image boots have it (the schema refuses cloudInit with a kernel): a directly booted
    // kernel gets its configuration on spec.kernel.cmdline.
    if (seed !== undefined) inputs.seedIso = await buildSeedIso(dir, seed, signal);
    const result = await this.jobs.apply(instance, inputs);
    this.logger.info(
      { instance: `${instance.metadata.namespace}/${instance.metadata.name}`, actions: result.actions },
      'applied',
    );
    return observedOf(result.observed);
  }

  /** Per spec.networks entry: the bridge of its Network on this host and the MAC in status. */
  private async interfaces(
    instance: Instance,
    object: InstanceJobObject,
  ): Promise<DomainInputs['interfaces']> {
    const namespace = instance.metadata.namespace ?? 'default';
    const nics: DomainInputs['interfaces'] = [];
    for (const [index, { name }] of (instance.spec.networks ?? []).entries()) {
      const mac = object.status?.interfaces?.find((nic) => nic.network === name)?.mac;
      if (mac === undefined) {
        throw new LoamError(
          'Invalid',
          `spec.networks[${index}]: no MAC for Network ${name} in status.interfaces (the job carries no placement for it)`,
        );
      }
      const bridge = bridgeName(namespace, name);
      // The test driver makes no devices, so there is nothing to check against.
      if (!this.hypervisor.uri.startsWith('test:') && !(await exists(`/sys/class/net/${bridge}/bridge`))) {
        // network.attach makes it, sent at the same time as this job: retried until it is there.
        throw new LoamError(
          'Unavailable',
          `spec.networks[${index}]: Network ${namespace}/${name} has no bridge ${bridge} on this host yet (network.attach makes it)`,
        );
      }
      nics.push({ network: name, bridge, mac });
    }
    return nics;
  }

  /** The instance's qcow2 overlay on `base`, grown to spec.rootDisk.size; made only once. */
  private async rootDisk(
    instance: Instance,
    base: string,
    dir: string,
    signal: AbortSignal,
  ): Promise<string> {
    const path = join(dir, 'root.qcow2');
    if (await exists(path)) return path;
    const info = JSON.parse(await qemuImg(['info', '--output=json', base], signal)) as {
      format: string;
      'virtual-size': number;
    };
    const size = instance.spec.rootDisk?.size;
    const grown = size === undefined ? [] : [diskBytes('spec.rootDisk.size', size)];
    if (grown[0] !== undefined && BigInt(grown[0]) < BigInt(info['virtual-size'])) {
      throw new LoamError(
        'Invalid',
        `spec.rootDisk.size: ${size} is smaller than the image's ${info['virtual-size']} bytes; disks only grow`,
      );
    }
    await createIfMissing(path, signal, (tmp) => [
      'create',
      '-f',
      'qcow2',
      '-F',
      info.format,
      '-b',
      base,
      tmp,
      ...grown,
    ]);
    return path;
  }

  /** The artifact's local path; a failure names the field it came from. */
  private async fetch(
    field: string,
    artifact: { url: string; sha256: string },
    signal: AbortSignal,
  ): Promise<string> {
    try {
      return await this.artifacts.fetch(artifact, signal);
    } catch (err) {
      if (!isLoamError(err)) throw err;
      throw new LoamError(err.code, `${field}: ${err.message}`, { cause: err, causes: err.causes });
    }
  }

  private async delete(object: InstanceJobObject): Promise<ObservedInstance> {
    const uid = checkedUid(object);
    const { actions } = await this.jobs.delete(uid);
    await rm(join(this.storageDir, 'instances', uid), { recursive: true, force: true });
    this.logger.info(
      { instance: `${object.metadata.namespace}/${object.metadata.name}`, actions },
      'deleted',
    );
    return { state: 'absent', deleted: true };
  }

  /** A power action a person asked for (the API server's instances/{start,stop,reboot,reset}). */
  private async power({ metadata, action }: PowerJobObject): Promise<ObservedInstance> {
    const result = await this.jobs.power(checkedUid({ metadata }), action);
    this.logger.info(
      { instance: `${metadata.namespace}/${metadata.name}`, action, actions: result.actions },
      'power',
    );
    return observedOf(result.observed);
  }

  private item(status: DomainStatus, facts: DomainFacts): InventoryItem {
    const identity = facts.identity;
    if (identity === undefined) throw new Error(`domain ${facts.name} has no Loam identity`);
    const ref = { kind: 'Instance', namespace: identity.namespace, name: identity.name, uid: identity.uid };
    this.refs.set(status.name, ref);
    return { ref, observed: observedOf({ status, defined: facts }) };
  }

  /**
   * Reports changes until `signal` aborts. When libvirt does not answer, polling starts over from
   * the last change reported: the one that failed is reported again, not taken for the new
   * baseline (a stop missed so would leave the Instance Running for good). A change that cannot
   * be reported for another reason (a domain whose XML does not parse) is logged and passed over,
   * so it never holds back the others.
   */
  private async watch(events: DriverEvents, signal: AbortSignal): Promise<void> {
    const baseline: PollBaseline = {};
    while (!signal.aborted) {
      try {
        const polled = pollEvents(() => this.hypervisor.list(), this.eventPollMs, signal, baseline);
        for await (const event of polled) {
          try {
            await this.report(event, events);
          } catch (err) {
            if (isLoamError(err, 'Unavailable')) throw err;
            this.logger.warn(
              { err, domain: event.name },
              'cannot report a change of this domain; passed over',
            );
          }
        }
      } catch (err) {
        this.logger.warn({ err }, 'watching domains failed; polling again');
        await sleep(this.eventPollMs, undefined, { signal }).catch(() => undefined);
      }
    }
  }

  private async report({ name, status, previous }: DomainEvent, events: DriverEvents): Promise<void> {
    if (status === undefined) {
      const ref = this.refs.get(name);
      if (ref === undefined) return; // not a Loam domain, or one gone before it was ever seen
      this.refs.delete(name);
      events.inventoryChanged({ removed: [ref] });
      return;
    }
    if (startingUp(status)) return; // the next poll reports where it settles
    let facts: DomainFacts;
    let current: DomainStatus;
    try {
      facts = parseDomainXml(await this.hypervisor.dumpxml(name, { inactive: true }));
      // The listed state may be older than a job that ran meanwhile (virsh calls wait their
      // turn): report the state as it is now, so a stale "stopped" never follows a job's "running".
      current = await this.hypervisor.state(name);
    } catch (err) {
      if (isLoamError(err, 'NotFound')) return; // gone again: the next poll reports it
      throw err;
    }
    if (facts.identity === undefined || startingUp(current)) return;
    const item = this.item(current, facts);
    events.inventoryChanged({ upserted: [item] });
    const notice = lifecycleOf(current, previous);
    if (notice !== undefined) {
      events.lifecycle({ resource: item.ref, ...notice, message: `domain ${name} ${notice.message}` });
    }
  }
}

/** The controller sends InstanceJobObjects; apply validates what it uses, delete needs only the uid. */
function jobObject(job: AgentJob): InstanceJobObject {
  return job.object as unknown as InstanceJobObject;
}

function powerJobObject(job: AgentJob): PowerJobObject {
  const object = job.object as Partial<PowerJobObject>;
  const action = actionSubresources.find((known) => known === object.action);
  if (action === undefined) {
    throw new LoamError(
      'Invalid',
      `action ${JSON.stringify(object.action)} is not one of ${actionSubresources.join(', ')}`,
    );
  }
  return { metadata: object.metadata ?? {}, action };
}

/** The controller sends NetworkJobObjects; the host needs their name, uid and segment. */
function networkJobObject(job: AgentJob): NetworkJobObject {
  const object = job.object as unknown as NetworkJobObject;
  checkedUid(object);
  return object;
}

function checkedUid(object: { metadata: { uid?: string } }): string {
  const uid = object.metadata.uid ?? '';
  if (!safeUid.test(uid)) {
    throw new LoamError('Invalid', `metadata.uid ${JSON.stringify(uid)} is not a UUID`);
  }
  return uid;
}

/** What the controller reads of a domain; absent when there is none. */
function observedOf(domain: ObservedDomain | undefined): ObservedInstance {
  if (domain === undefined) return { state: 'absent' };
  const { defined } = domain;
  return {
    state: powerState(domain.status),
    generation: defined.identity?.generation,
    interfaces: defined.interfaces.map(({ mac }) => ({ mac })),
  };
}

/**
 * A domain libvirt is still starting shows as paused (reason starting-up): not running yet, and
 * it may still fail (a kernel QEMU cannot open), so it is not reported until it settles.
 */
function startingUp({ state, reason }: DomainStatus): boolean {
  return state === 'paused' && reason === 'starting-up';
}

function powerState({ state, reason }: DomainStatus): ObservedInstance['state'] {
  if (state === 'crashed' || (state === 'shutoff' && reason === 'crashed')) return 'crashed';
  return state === 'shutoff' ? 'stopped' : 'running';
}

/** Started, Stopped or Crashed when the power state changed; nothing for other changes. */
function lifecycleOf(
  status: DomainStatus,
  previous: DomainStatus | undefined,
): { type: 'Normal' | 'Warning'; reason: string; message: string } | undefined {
  const now = powerState(status);
  if (previous !== undefined && powerState(previous) === now) return undefined;
  const why = status.reason === 'unknown' ? '' : ` (${status.reason})`;
  switch (now) {
    case 'running':
      return { type: 'Normal', reason: 'Started', message: `started${why}` };
    case 'stopped':
      return previous === undefined
        ? undefined // defined, never started
        : { type: 'Normal', reason: 'Stopped', message: `stopped${why}` };
    case 'crashed':
      return { type: 'Warning', reason: 'Crashed', message: `crashed${why}` };
  }
}

/** A quantity as whole bytes, rounded up to the 512-byte sectors qcow2 sizes are made of. */
function diskBytes(field: string, quantity: string | number): string {
  const bytes = parseQuantity(quantity);
  if (bytes <= 0n) throw new LoamError('Invalid', `${field}: ${quantity} is not a disk size`);
  return String(((bytes + 511n) / 512n) * 512n);
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Runs `qemu-img <args(tmp)>` to make `path` unless it exists. The file appears under its name
 * only when complete, so an interrupted create is redone rather than taken for a disk.
 */
async function createIfMissing(
  path: string,
  signal: AbortSignal,
  args: (tmp: string) => string[],
): Promise<void> {
  if (await exists(path)) return;
  const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await qemuImg(args(tmp), signal);
    await rename(tmp, path);
  } finally {
    await rm(tmp, { force: true });
  }
}

function qemuImg(args: string[], signal: AbortSignal): Promise<string> {
  return runCommand(['qemu-img', ...args], { timeoutMs: qemuImgTimeoutMs, signal }).catch(
    (err: CommandFailed) => {
      if (err.failure === 'missing') {
        throw new LoamError('Unavailable', 'qemu-img is not on PATH; install it (Debian: qemu-utils)');
      }
      throw commandError(err);
    },
  );
}

/**
 * The libvirt driver for `uri`, with its artifact cache under `storageDir`/cache. libvirt's test
 * driver keeps its state in the client, so it needs one long-lived virsh (session mode); it runs
 * no guests, so there is nothing to probe. `close` ends virsh once the agent has stopped.
 */
export async function openLibvirtDriver(options: {
  uri: string;
  storageDir: string;
  logger: Logger;
  /** Where the host's Network segments go; sharedWithRouter when the local router makes the bridges. */
  network?: { settings: HostNetworkSettings; sharedWithRouter?: boolean };
  /** What the host keeps for itself; the settings' defaults when not given (as under `loam up`). */
  reserved?: Reserved;
}): Promise<{ driver: LibvirtDriver; close: () => Promise<void> }> {
  const { uri, storageDir, logger, network } = options;
  // Before anything is opened: a reservation that leaves nothing fails the start at once.
  const allocatable = allocatableFacts(hostCapacity(), options.reserved ?? defaultReserved);
  const testDriver = uri.startsWith('test:');
  const hypervisor = new Virsh({ uri, session: testDriver });
  let domainType: DomainType = 'qemu';
  let checks: (() => Promise<PreflightCondition[]>) | undefined;
  if (!testDriver) {
    let checked = await preflight({ hypervisor, storageDir });
    domainType = checked.domainType;
    for (const condition of checked.conditions) {
      if (condition.status !== 'True') logger.warn({ preflight: condition }, condition.message);
    }
    // Each Hello and heartbeat checks again what can change; the probes keep their answers.
    checks = async () => {
      checked = await recheck(checked, { hypervisor, storageDir });
      return checked.conditions;
    };
  }
  const artifacts = new ArtifactCache({ dir: join(storageDir, 'cache'), logger });
  const networks = network && new HostNetworks({ ...network, logger });
  const driver = new LibvirtDriver({
    hypervisor,
    storageDir,
    artifacts,
    domainType,
    logger,
    allocatable,
    ...(networks ? { networks } : {}),
    ...(checks ? { checks } : {}),
  });
  return { driver, close: () => hypervisor.close() };
}
