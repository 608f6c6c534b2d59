/**
 * The network agent's driver for a plain Linux router: iproute2, nftables, dnsmasq and WireGuard
 * (the kernel's, else wireguard-go).
 *
 * The Networks it serves are the network.apply objects it accepted, kept in stateDir so a
 * restarted agent serves (and reports) them again (served.ts, shared with the openwrt driver).
 * Every job plans the whole router from all of them (buildRouterModel, planLinux) and converges
 * the machine to the plan: it reads what is there and runs a command only for what differs, so
 * applying twice changes nothing and a hand-deleted table, link or dnsmasq comes back. It removes
 * only what it made: links named after the Networks it serves or served (loam_<id>_*), and the
 * dnsmasq processes whose pid files it keeps; a wireguard-go process ends with its link.
 *
 * A failed step converges back to the Networks served before the job and answers UNAVAILABLE with
 * the failing command's message; a Network the router cannot serve next to the others (overlapping
 * CIDRs, a segment taken) is refused INVALID_ARGUMENT before anything changes. Jobs run one at a
 * time: each plans the whole router.
 *
 * The router's WireGuard private key of each Network is made here, kept in stateDir (0600) and
 * never leaves the machine; only its public key is reported.
 */

import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { status } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { NetworkJobObject, ObservedNetwork } from '../../../controllers/network/reconcile.js';
import { generateKeyPair, publicKeyOf } from '../../../controllers/wireguardpeer/client-config.js';
import type { Network } from '../../../crds/v1alpha1/index.js';
import { CommandFailed, runCommand } from '../../runtime/command.js';
import type {
  AgentCondition,
  AgentJob,
  Driver,
  DriverEvents,
  InventoryItem,
  JobOutcome,
} from '../../runtime/driver.js';
import { type IpLink, Links } from '../links.js';
import { type LinuxLink, type LinuxPlan, planLinux } from '../linux-plan.js';
import { type NetworkModel, networkId, type RouterModel, type RouterSettings } from '../model.js';
import { countActiveLeases, parseWireguardDump } from '../wireguard-stats.js';
import { RouterMetrics } from './metrics.js';
import {
  admit,
  JobQueue,
  keyOf,
  observedOf,
  refOf,
  type ServedMap,
  ServedStore,
  servedModel,
} from './served.js';

export interface LinuxRouterDriverOptions {
  settings: RouterSettings;
  /** The host WireGuard clients dial; reported with each Network's port unless spec.wireguard.endpoint says. */
  wireguardEndpoint?: string;
  /** What actually runs for a command, e.g. `['ip', 'netns', 'exec', NS, ...argv]`; the command itself by default. */
  exec?: (argv: string[]) => string[];
  /** How long one command may take. */
  commandTimeoutMs?: number;
  /** How often the machine is converged to the served Networks again, repairing drift; 60 s by default. */
  resyncMs?: number;
  /** The userspace WireGuard, used where the kernel has none; `wireguard-go` by default. */
  wireguardGo?: string;
  logger?: Logger;
}

const ownedLink = /^loam_([a-z2-7]{6})_/;

export class LinuxRouterDriver implements Driver {
  readonly capabilities = ['vxlan', 'wireguard'];
  private readonly settings: RouterSettings;
  private readonly wrap: (argv: string[]) => string[];
  private readonly timeoutMs: number;
  private readonly store: ServedStore;
  private readonly links = new Links((argv) => this.run(argv));
  /** The stored Networks once loaded, by namespace/name; read as they are by the metrics. */
  private networks: ServedMap = new Map();
  private readonly queue = new JobQueue();
  private events: DriverEvents | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  /** Whether `ip link add type wireguard` works; learnt from the first WireGuard link. */
  private kernelWireguard: boolean | undefined;
  /** wg and a WireGuard (kernel or wireguard-go) were found: they are not looked for again. */
  private wireguardFound = false;
  private readonly metrics: RouterMetrics;

  constructor(private readonly options: LinuxRouterDriverOptions) {
    this.settings = options.settings;
    this.wrap = options.exec ?? ((argv) => argv);
    this.timeoutMs = options.commandTimeoutMs ?? 30_000;
    this.store = new ServedStore(this.settings.stateDir);
    this.metrics = new RouterMetrics(options.logger);
  }

  async facts(): Promise<Record<string, string>> {
    const version = async (argv: string[]) => {
      const output = await this.run(argv).catch(() => '');
      return /\bv?(\d+(?:\.\d+)+)/.exec(output)?.[1] ?? 'missing';
    };
    const links = await this.run(['ip', '-j', 'link', 'show']).then(
      (output) => JSON.parse(output) as { ifname: string; link_type?: string }[],
      () => [],
    );
    // The router's own links, not the loopback or those Loam made.
    const interfaces = links
      .filter((link) => link.link_type !== 'loopback' && !ownedLink.test(link.ifname))
      .map((link) => link.ifname);
    return {
      driver: 'linux',
      nftablesVersion: await version(['nft', '--version']),
      dnsmasqVersion: await version(['dnsmasq', '--version']),
      wireguardToolsVersion: await version(['wg', '--version']),
      ...(interfaces.length > 0 ? { interfaces: interfaces.join(',') } : {}),
    };
  }

  /** The metrics both router drivers export (metrics.ts), from dnsmasq's lease files and `wg show all dump`. */
  registerMetrics(registry: Registry): void {
    this.metrics.register(registry, {
      networks: async () => this.networks,
      model: (networks) => this.model(networks),
      activeLeases: async (networks) => {
        const now = Date.now() / 1000;
        const counts = new Map<string, number>();
        for (const network of networks) {
          const leases = await readText(join(this.settings.stateDir, `dnsmasq-${network.id}.leases`));
          counts.set(network.id, countActiveLeases(leases, now));
        }
        return counts;
      },
      wireguardPeers: async () => parseWireguardDump(await this.run(['wg', 'show', 'all', 'dump'])),
    });
  }

  /**
   * Serves the stored Networks again, repairing whatever changed while the agent was away, and
   * again every resyncMs: a table, link or dnsmasq removed by hand comes back without a job.
   */
  async start(events: DriverEvents): Promise<void> {
    this.events = events;
    await this.resync();
    this.resyncTimer = setInterval(() => void this.resync(), this.options.resyncMs ?? 60_000);
    this.resyncTimer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.resyncTimer);
  }

  private resync(): Promise<void> {
    return this.queue.run(async () => {
      await this.load();
      if (this.networks.size === 0) return;
      try {
        await this.converge(this.model(this.networks), new Set(this.ids(this.networks)));
      } catch (err) {
        this.options.logger?.error(
          { err },
          'could not converge to the stored Networks; retrying at the next resync',
        );
      }
    });
  }

  async inventory(): Promise<InventoryItem[]> {
    await this.load();
    return [...this.networks.values()].map(({ object, observed }) => ({ ref: refOf(object), observed }));
  }

  handle(job: AgentJob): Promise<JobOutcome> {
    const object = job.object as unknown as NetworkJobObject;
    if (job.type === 'network.apply') return this.metrics.counted(this.queue.run(() => this.apply(object)));
    if (job.type === 'network.delete') return this.metrics.counted(this.queue.run(() => this.delete(object)));
    return Promise.resolve({
      code: status.UNIMPLEMENTED,
      message: `the network agent does not run ${job.type} jobs`,
    });
  }

  // --- jobs -------------------------------------------------------------------------------------

  private async apply(object: NetworkJobObject): Promise<JobOutcome> {
    const networks = await this.load();
    const admitted = admit(networks, object, this.settings);
    if ('code' in admitted) return admitted;
    const { next, model, network, acceptedAt } = admitted;
    if (network.wireguard) {
      const unsupported = await this.wireguardUnsupported();
      if (unsupported !== undefined) {
        return {
          code: status.INVALID_ARGUMENT,
          message: `spec.wireguard: this router cannot serve WireGuard: ${unsupported}`,
        };
      }
    }

    await this.ensureKeys(model);
    const failure = await this.transition(model, next);
    if (failure) return failure;
    const observed = observedOf(
      object,
      network,
      await this.publicKey(network),
      this.options.wireguardEndpoint,
    );
    const item = await this.store.keep(object, observed, acceptedAt);
    this.events?.inventoryChanged({ upserted: [item] });
    return { code: status.OK, observed };
  }

  private async delete(object: NetworkJobObject): Promise<JobOutcome> {
    const { namespace, name } = object.metadata ?? {};
    const next = new Map(await this.load());
    next.delete(keyOf(object));
    // Also when it is not served (any more): an earlier delete may have stopped half-way.
    const leftovers = new Set([networkId({ metadata: { namespace, name } } as Network)]);
    const failure = await this.transition(this.model(next), next, leftovers);
    if (failure) return failure;
    await this.store.forget(object);
    this.events?.inventoryChanged({ removed: [refOf(object)] });
    return { code: status.OK, observed: { deleted: true } satisfies ObservedNetwork };
  }

  /**
   * Converges to `model` (the Networks `next`), or back to the Networks served now when a step
   * fails; the failure as the job's answer.
   */
  private async transition(
    model: RouterModel,
    next: ServedMap,
    leftovers: ReadonlySet<string> = new Set(),
  ): Promise<JobOutcome | undefined> {
    const owned = new Set([...this.ids(this.networks), ...this.ids(next), ...leftovers]);
    try {
      await this.converge(model, owned);
      return undefined;
    } catch (err) {
      if (!(err instanceof CommandFailed)) throw err;
      this.options.logger?.warn({ err: err.message }, 'apply failed; restoring the previous configuration');
      try {
        await this.converge(this.model(this.networks), owned);
      } catch (again) {
        this.options.logger?.error(
          { err: (again as Error).message },
          'could not restore the previous configuration',
        );
      }
      return { code: status.UNAVAILABLE, message: err.message };
    }
  }

  /** The public key of `network`'s WireGuard server, from the private key ensureKeys made. */
  private async publicKey(network: NetworkModel): Promise<string | undefined> {
    if (!network.wireguard) return undefined;
    return publicKeyOf((await readText(this.keyFile(network.id))).trim());
  }

  // --- the model --------------------------------------------------------------------------------

  /** The model of Networks the driver already accepted. */
  private model(networks: ServedMap): RouterModel {
    return servedModel(networks, this.settings, 'linux');
  }

  private ids(networks: ServedMap): string[] {
    return [...networks.values()].map(({ object }) => networkId(object as unknown as Network));
  }

  // --- converging -------------------------------------------------------------------------------

  /** Makes the machine match `model`, removing what is left of the Networks `owned` names and it lacks. */
  private async converge(model: RouterModel, owned: ReadonlySet<string>): Promise<void> {
    const plan = planLinux(model);
    const ids = new Set(model.networks.map((network) => network.id));
    const gone = [...owned].filter((id) => !ids.has(id));
    await mkdir(this.settings.stateDir, { recursive: true, mode: 0o700 });

    for (const id of gone) await this.stopDnsmasq(join(this.settings.stateDir, `dnsmasq-${id}.pid`));
    const links = await this.links.list();
    const wanted = new Set(plan.links.map((link) => link.name));
    for (const name of links.keys()) {
      const id = ownedLink.exec(name)?.[1];
      if (id !== undefined && (owned.has(id) || ids.has(id)) && !wanted.has(name)) {
        await this.run(['ip', 'link', 'delete', name]);
        links.delete(name);
      }
    }

    if (model.networks.length > 0) {
      for (const [key, value] of Object.entries(plan.sysctls)) {
        if ((await this.run(['sysctl', '-n', key])).trim() !== value) {
          await this.run(['sysctl', '-w', `${key}=${value}`]);
        }
      }
    }
    const created = new Set<string>();
    for (const link of plan.links) {
      if (await this.ensureLink(link, links.get(link.name), plan, model)) created.add(link.name);
    }
    await this.ensureNftables(plan, model.networks.length > 0);
    for (const [index, network] of model.networks.entries()) {
      const dnsmasq = plan.dnsmasq[index];
      if (dnsmasq) await this.ensureDnsmasq(dnsmasq, created.has(network.names.bridge));
    }
    await this.removeFiles(gone);
  }

  /** Creates or repairs one link, with its WireGuard peers; true when it had to be created. */
  private ensureLink(
    link: LinuxLink,
    found: IpLink | undefined,
    plan: LinuxPlan,
    model: RouterModel,
  ): Promise<boolean> {
    return this.links.ensure(link, found, {
      add: (wanted) => this.addLink(wanted),
      configure: async () => {
        const wireguard = plan.wireguard.find((w) => w.device === link.name);
        const server = model.networks.find((n) => n.names.wireguard === link.name)?.wireguard;
        if (wireguard && server) await this.syncWireguard(wireguard, server);
      },
    });
  }

  /**
   * Why this router cannot serve WireGuard, or undefined when it can: it needs wg, and the
   * kernel's WireGuard or wireguard-go. Once it can, it is not asked again.
   */
  private async wireguardUnsupported(): Promise<string | undefined> {
    if (this.wireguardFound) return undefined;
    const works = (argv: string[]) =>
      this.run(argv).then(
        () => true,
        () => false,
      );
    if (!(await works(['wg', '--version']))) return 'wg is not installed (Debian: wireguard-tools)';
    const userspace = this.options.wireguardGo ?? 'wireguard-go';
    this.wireguardFound =
      this.kernelWireguard === true ||
      (await works(['test', '-d', '/sys/module/wireguard'])) ||
      (await works([userspace, '--version']));
    if (this.wireguardFound) return undefined;
    return `the kernel has no WireGuard and ${userspace} is not installed (Debian: wireguard-go)`;
  }

  /** Whether the router can serve WireGuard, as a condition of its Router (not one it needs to be Ready). */
  async conditions(): Promise<AgentCondition[]> {
    const unsupported = await this.wireguardUnsupported();
    return [
      unsupported === undefined
        ? {
            type: 'WireGuardSupported',
            status: 'True',
            reason: 'WireGuardAvailable',
            message: 'Networks with spec.wireguard can be served',
            required: false,
          }
        : {
            type: 'WireGuardSupported',
            status: 'False',
            reason: 'WireGuardMissing',
            message: `Networks with spec.wireguard are refused: ${unsupported}`,
            required: false,
          },
    ];
  }

  private async addLink(link: LinuxLink): Promise<void> {
    if (link.kind !== 'wireguard') {
      await this.run(['ip', 'link', 'add', 'name', link.name, ...link.args]);
      return;
    }
    if (this.kernelWireguard !== false) {
      try {
        await this.run(['ip', 'link', 'add', 'name', link.name, ...link.args]);
        this.kernelWireguard = true;
        return;
      } catch (err) {
        if (this.kernelWireguard === true) throw err;
        this.kernelWireguard = false;
      }
    }
    // wireguard-go returns once its TUN device and control socket exist, leaving a daemon that
    // ends when the link is deleted. Without LOG_LEVEL it detaches from our stdout and stderr.
    const { LOG_LEVEL: _, ...env } = process.env;
    await this.run([this.options.wireguardGo ?? 'wireguard-go', link.name], { env });
  }

  /**
   * Peers change through `wg syncconf`, which leaves the other peers' sessions alone. It also sets
   * the private key (to none when the config has none), so it reads a copy of the config with the
   * key, as private as the key file and removed at once; the config file itself stays without it.
   */
  private async syncWireguard(
    wireguard: LinuxPlan['wireguard'][number],
    server: NonNullable<NetworkModel['wireguard']>,
  ): Promise<void> {
    const { device, config, privateKeyFile } = wireguard;
    if ((await readText(config.path)) !== config.content) await writeFile(config.path, config.content);
    const [head = '', ...peerLines] = (await this.run(['wg', 'show', device, 'dump'])).trim().split('\n');
    const [privateKey, , listenPort] = head.split('\t');
    const peers = peerLines.map((line) => {
      const fields = line.split('\t');
      return `${fields[0]} ${allowedIPs(fields[3] ?? '')}`;
    });
    const desired = server.peers.map((peer) => `${peer.publicKey} ${allowedIPs(peer.allowedIPs.join(','))}`);
    const key = (await readText(privateKeyFile)).trim();
    if (
      privateKey === key &&
      listenPort === String(server.port) &&
      peers.sort().join('\n') === desired.sort().join('\n')
    ) {
      return;
    }
    const keyed = `${config.path}.keyed`;
    const content = config.content.replace('[Interface]\n', `[Interface]\nPrivateKey = ${key}\n`);
    await writeFile(keyed, content, { mode: 0o600 });
    try {
      await this.run(['wg', 'syncconf', device, keyed]);
    } finally {
      await rm(keyed, { force: true });
    }
  }

  /** Loads the ruleset when the table is missing or the file differs; without Networks, deletes the table. */
  private async ensureNftables(plan: LinuxPlan, wanted: boolean): Promise<void> {
    const { path, content } = plan.nftables;
    const present = await this.run(['nft', 'list', 'table', 'inet', 'loam']).then(
      () => true,
      () => false,
    );
    const current = (await readText(path)) === content;
    if (wanted ? present && current : !present) return;
    await writeFile(path, content);
    await this.run(['nft', '-f', path]);
  }

  /** Starts dnsmasq, or restarts it when its config changed or its bridge was made anew. */
  private async ensureDnsmasq(dnsmasq: LinuxPlan['dnsmasq'][number], bridgeCreated: boolean): Promise<void> {
    const { config, pidFile } = dnsmasq;
    const changed = (await readText(config.path)) !== config.content;
    if (changed) await writeFile(config.path, config.content);
    const pid = await runningPid(pidFile, `--conf-file=${config.path}`);
    if (pid !== undefined && !changed && !bridgeCreated) return;
    if (pid !== undefined) await stopProcess(pid);
    await this.run(['dnsmasq', `--conf-file=${config.path}`]);
  }

  private async stopDnsmasq(pidFile: string): Promise<void> {
    const pid = await runningPid(pidFile, 'dnsmasq');
    if (pid !== undefined) await stopProcess(pid);
  }

  /** The files of Networks no longer served, their WireGuard keys included. */
  private async removeFiles(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    const names = await readdir(this.settings.stateDir);
    const stale = names.filter((name) =>
      ids.some((id) => new RegExp(`^(dnsmasq|wireguard)-${id}\\.`).test(name)),
    );
    await Promise.all(stale.map((name) => rm(join(this.settings.stateDir, name), { force: true })));
  }

  // --- state ------------------------------------------------------------------------------------

  private async load(): Promise<ServedMap> {
    this.networks = await this.store.load();
    return this.networks;
  }

  private keyFile(id: string): string {
    return join(this.settings.stateDir, `wireguard-${id}.key`);
  }

  /** Makes the WireGuard private key of each server that has none yet. */
  private async ensureKeys(model: RouterModel): Promise<void> {
    await mkdir(this.settings.stateDir, { recursive: true, mode: 0o700 });
    for (const network of model.networks) {
      if (!network.wireguard) continue;
      const file = this.keyFile(network.id);
      if ((await readText(file)) !== '') continue;
      await writeFile(file, `${generateKeyPair().privateKey}\n`, { mode: 0o600 });
    }
  }

  // --- commands ---------------------------------------------------------------------------------

  private run(argv: string[], options: { env?: NodeJS.ProcessEnv } = {}): Promise<string> {
    return runCommand(this.wrap(argv), { timeoutMs: this.timeoutMs, shownAs: argv, ...options });
  }
}

/** WireGuard's allowed IPs in a comparable form: sorted, "(none)" empty. */
function allowedIPs(list: string): string {
  return list === '(none)' || list === '' ? '' : list.split(',').sort().join(',');
}

async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw err;
  }
}

/** The live process the pid file names, if its command line contains `marker`. */
async function runningPid(pidFile: string, marker: string): Promise<number | undefined> {
  const pid = Number.parseInt(await readText(pidFile), 10);
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  const cmdline = (await readText(`/proc/${pid}/cmdline`)).split('\0');
  return cmdline.some((arg) => arg.includes(marker)) && (await alive(pid)) ? pid : undefined;
}

/** Running, not a zombie waiting for a parent that does not reap it. */
async function alive(pid: number): Promise<boolean> {
  const stat = await readText(`/proc/${pid}/stat`);
  return stat !== '' && stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
}

/** SIGTERM, then waits (bounded) until it is gone, so its successor can bind the same sockets. */
async function stopProcess(pid: number): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return;
    throw err;
  }
  for (let attempt = 0; attempt < 250; attempt++) {
    if (!(await alive(pid))) return;
    await delay(20);
  }
  throw new CommandFailed(['kill', String(pid)], 'timeout', '', 'still running 5 s after SIGTERM');
}
