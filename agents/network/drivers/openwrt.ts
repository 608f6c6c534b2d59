/**
 * The network agent's driver for an OpenWrt router. It reaches the router's UCI through a
 * UciTransport: rpcd's ubus JSON-RPC over HTTPS (rpcd-transport.ts), the way LuCI applies a change
 * with rollback and confirm, or the router's own `uci` command when the agent runs on the router
 * (local-transport.ts), which keeps the previous configuration and restores it itself.
 *
 * Every job renders the whole router from all Networks served (kept in stateDir, shared with the
 * linux driver through served.ts) and sends only the difference to the router's `loam_` sections
 * of network, dhcp and firewall (uciBatch); the user's own sections are never sent. Nothing to
 * change means nothing is staged or applied.
 *
 * WireGuard: `private_key` of a Network's WireGuard interface is router-owned (routerOwnedOptions)
 * and read from the router's config. When it has none, the agent makes one and sets it, so the key
 * passes through the agent process: run the agent on the router, or on a machine trusted with the
 * key. Only the public key is reported; the key is never logged or stored in stateDir.
 *
 * Metrics (metrics.ts, the linux driver's too) read the WireGuard peers and DHCP leases from the
 * router through the transport; DHCP leases count for the Network whose cidr holds their address,
 * since one dnsmasq serves them all.
 */

import { status } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { NetworkJobObject } from '../../../controllers/network/reconcile.js';
import { generateKeyPair, publicKeyOf } from '../../../controllers/wireguardpeer/client-config.js';
import { errorCodes, isLoamError, LoamError } from '../../../crds/errors.js';
import type {
  AgentCondition,
  AgentJob,
  Driver,
  DriverEvents,
  InventoryItem,
  JobOutcome,
} from '../../runtime/driver.js';
import type { RouterModel, RouterSettings } from '../model.js';
import { type RenderedUci, renderUci, uciBatch, uciConfigNames } from '../uci.js';
import type { UciCommand, UciSection } from '../uci-format.js';
import type { WireguardPeerStats } from '../wireguard-stats.js';
import { leasesByNetwork, RouterMetrics } from './metrics.js';
import { admit, JobQueue, keyOf, observedOf, refOf, ServedStore, servedModel } from './served.js';

/** How the driver reaches a router's UCI, and what it reads for the metrics. */
export interface UciTransport {
  /** The sections of a config as the router has them (anonymous ones without a name). */
  get(config: string, signal?: AbortSignal): Promise<UciSection[]>;
  /**
   * Makes the changes of `batch` live, to be undone (by the router, or by the transport itself)
   * unless confirmed within the rollback timeout; throws, with the previous configuration back,
   * when they cannot be.
   */
  apply(
    batch: readonly UciCommand[],
    options: { rollbackTimeoutS: number },
    signal?: AbortSignal,
  ): Promise<void>;
  /** Checks that the router still answers after the apply, then confirms it. */
  confirm(signal?: AbortSignal): Promise<void>;
  /** Undoes the pending apply at once. */
  rollback(signal?: AbortSignal): Promise<void>;
  /** What the router says of itself (release, model); empty when it does not say. */
  board(signal?: AbortSignal): Promise<Record<string, string>>;
  /** Whether the router's network, dhcp and firewall configs can be read this way (uciReachable). */
  check(signal?: AbortSignal): Promise<AgentCondition>;
  /** The peers of the router's WireGuard interfaces, as `wg show all dump` has them. */
  wireguardPeers(signal?: AbortSignal): Promise<WireguardPeerStats[]>;
  /** The addresses of the router's active DHCPv4 leases. */
  activeLeases(signal?: AbortSignal): Promise<string[]>;
}

/** Facts from what `ubus call system board` answers: the OpenWrt release and the device model. */
export function boardFacts(data: Record<string, unknown> | undefined): Record<string, string> {
  const release = (data?.release ?? {}) as Record<string, unknown>;
  return {
    ...(typeof release.version === 'string' ? { openwrtVersion: release.version } : {}),
    ...(typeof data?.model === 'string' ? { model: data.model } : {}),
  };
}

/**
 * The Router's condition UciReachable, required: True when the router's configs can be read,
 * else why not (`reason`, e.g. UciCommandMissing) and what to do (`message`).
 */
export function uciReachable(how: string, problem?: { reason: string; message: string }): AgentCondition {
  return {
    type: 'UciReachable',
    required: true,
    ...(problem
      ? { status: 'False', ...problem }
      : {
          status: 'True',
          reason: 'UciAnswers',
          message: `${how} reads the router's network, dhcp and firewall configs`,
        }),
  };
}

/** How long one read for the metrics or the conditions may take. */
const readTimeoutMs = 10_000;

export interface OpenWrtRouterDriverOptions {
  settings: RouterSettings;
  transport: UciTransport;
  /** The host WireGuard clients dial; reported with each Network's port unless spec.wireguard.endpoint says. */
  wireguardEndpoint?: string;
  /** How long the router waits for the confirm before it restores the previous config (LuCI: 90 s). */
  rollbackTimeoutS?: number;
  logger?: Logger;
}

export class OpenWrtRouterDriver implements Driver {
  readonly capabilities: readonly string[];
  private readonly settings: RouterSettings;
  private readonly transport: UciTransport;
  private readonly rollbackTimeoutS: number;
  private readonly store: ServedStore;
  private readonly queue = new JobQueue();
  private readonly metrics: RouterMetrics;
  private events: DriverEvents | undefined;

  constructor(private readonly options: OpenWrtRouterDriverOptions) {
    this.settings = options.settings;
    this.transport = options.transport;
    this.rollbackTimeoutS = options.rollbackTimeoutS ?? 30;
    this.store = new ServedStore(this.settings.stateDir);
    this.metrics = new RouterMetrics(options.logger);
    this.capabilities = ['vxlan', ...(this.settings.trunk === undefined ? [] : ['vlan']), 'wireguard'];
  }

  async facts(): Promise<Record<string, string>> {
    const board = await this.transport.board(AbortSignal.timeout(readTimeoutMs)).catch(() => ({}));
    return { driver: 'openwrt', ...board };
  }

  registerMetrics(registry: Registry): void {
    this.metrics.register(registry, {
      networks: () => this.store.load(),
      model: (networks) => servedModel(networks, this.settings, 'openwrt'),
      activeLeases: async (networks) =>
        leasesByNetwork(networks, await this.transport.activeLeases(AbortSignal.timeout(readTimeoutMs))),
      wireguardPeers: () => this.transport.wireguardPeers(AbortSignal.timeout(readTimeoutMs)),
    });
  }

  /** Whether the router's UCI answers: a Router that cannot be configured is not Ready. */
  async conditions(): Promise<AgentCondition[]> {
    return [await this.transport.check(AbortSignal.timeout(readTimeoutMs))];
  }

  /** Serves the stored Networks again, repairing what changed on the router while the agent was away. */
  async start(events: DriverEvents): Promise<void> {
    this.events = events;
    const [reachable] = await this.conditions();
    if (reachable?.status !== 'True') this.options.logger?.warn({ condition: reachable }, reachable?.message);
    await this.queue.run(async () => {
      const networks = await this.store.load();
      if (networks.size === 0) return;
      try {
        await this.converge(servedModel(networks, this.settings, 'openwrt'));
      } catch (err) {
        this.options.logger?.error(
          { err: (err as Error).message },
          'could not restore the stored Networks; the next job retries',
        );
      }
    });
  }

  async inventory(): Promise<InventoryItem[]> {
    const networks = await this.store.load();
    return [...networks.values()].map(({ object, observed }) => ({ ref: refOf(object), observed }));
  }

  handle(job: AgentJob, signal?: AbortSignal): Promise<JobOutcome> {
    const object = job.object as unknown as NetworkJobObject;
    const run = (work: () => Promise<JobOutcome>) =>
      this.metrics.counted(
        this.queue.run(async () => {
          try {
            return await work();
          } catch (err) {
            if (!isLoamError(err)) throw err;
            return { code: errorCodes[err.code].grpc, message: err.message };
          }
        }),
      );
    if (job.type === 'network.apply') return run(() => this.apply(object, signal));
    if (job.type === 'network.delete') return run(() => this.delete(object, signal));
    return Promise.resolve({
      code: status.UNIMPLEMENTED,
      message: `the network agent does not run ${job.type} jobs`,
    });
  }

  private async apply(object: NetworkJobObject, signal?: AbortSignal): Promise<JobOutcome> {
    const networks = await this.store.load();
    const admitted = admit(networks, object, this.settings);
    if ('code' in admitted) return admitted;
    const { model, network, acceptedAt } = admitted;
    const publicKeys = await this.converge(model, signal);
    const observed = observedOf(object, network, publicKeys.get(network.id), this.options.wireguardEndpoint);
    const item = await this.store.keep(object, observed, acceptedAt);
    this.events?.inventoryChanged({ upserted: [item] });
    return { code: status.OK, observed };
  }

  private async delete(object: NetworkJobObject, signal?: AbortSignal): Promise<JobOutcome> {
    const next = new Map(await this.store.load());
    next.delete(keyOf(object));
    // Also when it is not served (any more): every loam_ section the model lacks goes.
    await this.converge(servedModel(next, this.settings, 'openwrt'), signal);
    await this.store.forget(object);
    this.events?.inventoryChanged({ removed: [refOf(object)] });
    return { code: status.OK, observed: { deleted: true } };
  }

  /**
   * Makes the router's loam_ sections match `model`: applies the difference with rollback and
   * confirms it; when the confirm fails, rolls back (or leaves that to the router's timeout) and
   * throws. Returns the public key of each Network's WireGuard server, by Network id.
   */
  private async converge(model: RouterModel, signal?: AbortSignal): Promise<Map<string, string>> {
    const existing: Partial<RenderedUci> = {};
    for (const config of uciConfigNames) existing[config] = await this.transport.get(config, signal);
    const desired = renderUci(model);
    const publicKeys = new Map<string, string>();
    for (const network of model.networks) {
      if (!network.wireguard) continue;
      const name = network.names.wireguard;
      const found = existing.network?.find((s) => s.name === name && s.type === 'interface');
      let privateKey = found?.options.private_key;
      if (typeof privateKey !== 'string' || privateKey === '') {
        privateKey = generateKeyPair().privateKey;
        const section = desired.network.find((s) => s.name === name);
        if (section) section.options = { ...section.options, private_key: privateKey };
        this.options.logger?.info({ interface: name }, 'made a WireGuard private key for the router');
      }
      try {
        publicKeys.set(network.id, publicKeyOf(privateKey));
      } catch {
        throw new LoamError(
          'Invalid',
          `network.${name}.private_key on the router is not a WireGuard key; delete the option and Loam makes a new one`,
        );
      }
    }
    const batch = uciBatch(desired, existing);
    if (batch.length === 0) return publicKeys;
    // The batch may carry a private key: only its size is logged.
    this.options.logger?.info({ commands: batch.length }, 'applying UCI changes');
    await this.transport.apply(batch, { rollbackTimeoutS: this.rollbackTimeoutS }, signal);
    try {
      await this.transport.confirm(signal);
    } catch (err) {
      // Not bound to the job's deadline: an expired job still undoes its change at once if it can.
      await this.transport.rollback(AbortSignal.timeout(10_000)).catch((again: Error) => {
        this.options.logger?.warn(
          { err: again.message },
          `could not roll back; the router restores the previous configuration within ${this.rollbackTimeoutS} s`,
        );
      });
      throw err;
    }
    return publicKeys;
  }
}
