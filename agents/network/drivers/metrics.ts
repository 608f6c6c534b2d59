/**
 * The metrics both router drivers export, under the same names and labels: per Network served its
 * applied generation and its static and active DHCP leases; per WireGuard peer its latest handshake
 * and transfer; and how network.apply and network.delete jobs ended. Each driver says where the
 * router's own numbers come from (RouterStatsSource). Everything is read when scraped, and what
 * several metrics need is read once per scrape.
 */

import { status } from '@grpc/grpc-js';
import ipaddr from 'ipaddr.js';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { JobOutcome } from '../../runtime/driver.js';
import type { NetworkModel, RouterModel } from '../model.js';
import type { WireguardPeerStats } from '../wireguard-stats.js';
import type { ServedMap } from './served.js';

/** Where a driver's metrics come from. Leases or peers that cannot be read are left out of that scrape. */
export interface RouterStatsSource {
  /** The Networks served now. */
  networks(): Promise<ServedMap>;
  /** Their model, as the driver builds it. */
  model(networks: ServedMap): RouterModel;
  /** Active DHCP leases by Network id, for `networks` (those with DHCP); a missing id counts 0. */
  activeLeases(networks: readonly NetworkModel[]): Promise<Map<string, number>>;
  /** The peers of the router's WireGuard interfaces as it sees them, Loam's among others. */
  wireguardPeers(): Promise<WireguardPeerStats[]>;
}

/** How a network.apply or network.delete job ended: refused is INVALID_ARGUMENT, failed any other error. */
type ApplyResult = 'ok' | 'refused' | 'failed';

/** A WireGuard peer of a served Network, labelled for the metrics. */
interface PeerRow {
  labels: { namespace: string; network: string; peer: string };
  stats: WireguardPeerStats;
}

/** How many of `addresses` fall in each Network's cidr, by Network id: leases of a router-wide table. */
export function leasesByNetwork(
  networks: readonly NetworkModel[],
  addresses: readonly string[],
): Map<string, number> {
  const parsed = addresses
    .filter((a) => ipaddr.IPv4.isValidFourPartDecimal(a))
    .map((a) => ipaddr.IPv4.parse(a));
  return new Map(
    networks.map((network) => {
      const cidr = ipaddr.IPv4.parseCIDR(network.cidr);
      return [network.id, parsed.filter((address) => address.match(cidr)).length];
    }),
  );
}

/** `read` shared by the metrics of one scrape: a call while one is under way gets its promise. */
function perScrape<T>(read: () => Promise<T>): () => Promise<T> {
  let running: Promise<T> | undefined;
  return () => {
    running ??= read().finally(() => {
      running = undefined;
    });
    return running;
  };
}

export class RouterMetrics {
  /** Counted from the start; register adds them to the agent's registry. */
  private readonly applies = new Counter<'result'>({
    name: 'loam_router_apply_total',
    help: 'network.apply and network.delete jobs finished, by result: ok, refused (INVALID_ARGUMENT: the Network cannot be served as it is) or failed.',
    labelNames: ['result'],
    registers: [],
  });
  private readonly lastApply = new Gauge<'result'>({
    name: 'loam_router_last_apply_timestamp_seconds',
    help: 'When the latest network.apply or network.delete job with each result finished, in seconds since the Unix epoch.',
    labelNames: ['result'],
    registers: [],
  });

  constructor(private readonly logger?: Logger) {
    for (const result of ['ok', 'refused', 'failed'] satisfies ApplyResult[]) this.applies.inc({ result }, 0);
  }

  /** `job`, counted in loam_router_apply_total and loam_router_last_apply_timestamp_seconds when it ends. */
  async counted(job: Promise<JobOutcome>): Promise<JobOutcome> {
    let result: ApplyResult = 'failed';
    try {
      const outcome = await job;
      if (outcome.code === status.OK) result = 'ok';
      else if (outcome.code === status.INVALID_ARGUMENT) result = 'refused';
      return outcome;
    } finally {
      this.applies.inc({ result });
      this.lastApply.set({ result }, Date.now() / 1000);
    }
  }

  register(registry: Registry, source: RouterStatsSource): void {
    const { logger } = this;
    const unread = (what: string) => (err: Error) => {
      logger?.debug({ err: err.message }, `could not read the ${what} for the metrics`);
      return undefined;
    };
    const served = perScrape(async () => {
      const networks = await source.networks();
      return { networks, model: source.model(networks) };
    });
    const leases = perScrape(async () => {
      const withDhcp = (await served()).model.networks.filter((network) => network.dhcp);
      const counts = await source.activeLeases(withDhcp).catch(unread('DHCP leases'));
      return counts && withDhcp.map((network) => ({ network, count: counts.get(network.id) ?? 0 }));
    });
    const peers = perScrape(async () => {
      const servers = wireguardServers((await served()).model);
      if (servers.size === 0) return [];
      return wireguardRows(servers, (await source.wireguardPeers().catch(unread('WireGuard peers'))) ?? []);
    });
    const networkLabels = (network: { namespace?: string; name?: string }) => ({
      namespace: network.namespace ?? '',
      network: network.name ?? '',
    });
    registry.registerMetric(this.applies);
    registry.registerMetric(this.lastApply);
    new Gauge({
      name: 'loam_network_applied_generation',
      help: 'The generation of each Network the router serves.',
      labelNames: ['namespace', 'network'],
      registers: [registry],
      async collect() {
        this.reset();
        for (const { object } of (await served()).networks.values()) {
          this.set(networkLabels(object.metadata), object.metadata.generation);
        }
      },
    });
    new Gauge({
      name: 'loam_network_dhcp_static_leases',
      help: 'Static DHCP leases (reserved addresses of Instances) configured per Network.',
      labelNames: ['namespace', 'network'],
      registers: [registry],
      async collect() {
        this.reset();
        for (const network of (await served()).model.networks) {
          if (network.dhcp) this.set(networkLabels(network), network.dhcp.leases.length);
        }
      },
    });
    new Gauge({
      name: 'loam_network_dhcp_leases',
      help: "Active DHCP leases per Network, as the router's dnsmasq has them.",
      labelNames: ['namespace', 'network'],
      registers: [registry],
      async collect() {
        this.reset();
        for (const { network, count } of (await leases()) ?? []) this.set(networkLabels(network), count);
      },
    });
    const peerLabels = ['namespace', 'network', 'peer'];
    new Gauge({
      name: 'loam_wireguard_peer_latest_handshake_seconds',
      help: "When each WireGuard peer's latest handshake happened, in seconds since the Unix epoch; 0 if never.",
      labelNames: peerLabels,
      registers: [registry],
      async collect() {
        this.reset();
        for (const { labels, stats } of await peers()) this.set(labels, stats.latestHandshake);
      },
    });
    new Counter({
      name: 'loam_wireguard_peer_receive_bytes_total',
      help: 'Bytes the router received from each WireGuard peer.',
      labelNames: peerLabels,
      registers: [registry],
      async collect() {
        this.reset();
        for (const { labels, stats } of await peers()) this.inc(labels, stats.rx);
      },
    });
    new Counter({
      name: 'loam_wireguard_peer_transmit_bytes_total',
      help: 'Bytes the router sent to each WireGuard peer.',
      labelNames: peerLabels,
      registers: [registry],
      async collect() {
        this.reset();
        for (const { labels, stats } of await peers()) this.inc(labels, stats.tx);
      },
    });
  }
}

/** The served Networks' WireGuard servers by interface, with their peers' names by public key. */
type Servers = Map<string, { network: NetworkModel; peers: Map<string, string> }>;

function wireguardServers(model: RouterModel): Servers {
  const servers: Servers = new Map();
  for (const network of model.networks) {
    const peers = network.wireguard?.peers;
    if (peers) {
      servers.set(network.names.wireguard, {
        network,
        peers: new Map(peers.map((peer) => [peer.publicKey, peer.peer])),
      });
    }
  }
  return servers;
}

/** The peers of `servers` among what the router reports, labelled. */
function wireguardRows(servers: Servers, stats: readonly WireguardPeerStats[]): PeerRow[] {
  return stats.flatMap((peerStats) => {
    const server = servers.get(peerStats.interface);
    const peer = server?.peers.get(peerStats.publicKey);
    if (!server || peer === undefined) return [];
    const { namespace, name } = server.network;
    return [{ labels: { namespace, network: name, peer }, stats: peerStats }];
  });
}
