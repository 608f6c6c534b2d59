/**
 * The desired state of one router: every Network placed on it, with the segment, gateway, DHCP
 * pool, static leases and WireGuard peers that controllers/network/allocate.ts decides, and the
 * names of the devices and sections that carry them. Plain sorted JSON with every default
 * resolved, so both renderers (uci.ts, linux-plan.ts) are pure functions of it and a job can carry it.
 *
 * Names: everything of a Network is named after a 6-character base32 hash of namespace/name
 * (`loam_k3x9fa`), which keeps the longest device name (`loam_k3x9fa_br`, 14 characters) inside
 * Linux's 15-character limit and the zone name inside OpenWrt's 11, does not change when the
 * segment does, and starts with `loam_` so nothing of the user's can be mistaken for Loam's.
 */

import { createHash } from 'node:crypto';
import {
  AllocationError,
  type AllocationProblem,
  allocateLeases,
  allocateNetwork,
  allocatePeers,
  inCreationOrder,
  type Lease,
  type NetworkAllocation,
  objectKey,
  type PlacedNetwork,
  type Route,
  type Segment,
} from '../../controllers/network/allocate.js';
import { parseDuration } from '../../crds/formats.js';
import type { Instance, Network, Router, RouterSpec, WireGuardPeer } from '../../crds/v1alpha1/index.js';

export type RouterDriver = RouterSpec['driver'];

/** What the router itself knows and the API does not: its uplinks and where it keeps files. */
export interface RouterSettings {
  /** linux: the WAN device egress is masqueraded out of; openwrt: the WAN firewall zone. */
  wan: string;
  /**
   * Where VLAN segments reach the hypervisors. linux: the parent device of the VLAN
   * sub-interfaces; openwrt: the port of Loam's VLAN-filtering trunk bridge. Needed only for vlan
   * Networks.
   */
  trunk?: string;
  vxlan: {
    /** The UDP port of VXLAN (IANA: 4789). */
    port: number;
    /** The tunnel's source address; the kernel (OpenWrt: the wan address) chooses when omitted. */
    local?: string;
    /** linux: the underlay device; openwrt: the underlay logical interface (tunlink). */
    uplink?: string;
    /** A multicast group to flood through, instead of a copy to each of `remotes`. */
    group?: string;
    /** The hypervisors' VXLAN endpoints that broadcast and unknown traffic is copied to. */
    remotes: string[];
  };
  /** linux: where dnsmasq, WireGuard and nftables files, leases, pids and keys live. */
  stateDir: string;
}

export function defaultRouterSettings(driver: RouterDriver): RouterSettings {
  return {
    wan: driver === 'openwrt' ? 'wan' : 'eth0',
    vxlan: { port: 4789, remotes: [] },
    stateDir: '/var/lib/loam/network',
  };
}

export interface NetworkNames {
  /** openwrt: the logical interface, its firewall zone and DHCP pool. */
  interface: string;
  /** The bridge the segment, the gateway address and (on the router) nothing else join. */
  bridge: string;
  /** The VXLAN device or VLAN sub-interface (openwrt: the bridge-vlan section). */
  segment: string;
  wireguard: string;
}

export interface WireguardPeerModel {
  peer: string;
  publicKey: string;
  address: string;
  allowedIPs: string[];
}

export interface NetworkModel {
  namespace: string;
  name: string;
  /** The hash of namespace/name that all names below are built from. */
  id: string;
  names: NetworkNames;
  segment: Segment;
  cidr: string;
  gateway: string;
  egress: boolean;
  /** What DHCP announces as DNS: spec.dns, else the gateway (the router's dnsmasq). */
  dns: string[];
  dhcp?: { start: string; end: string; leaseSeconds: number; leases: Lease[] };
  wireguard?: { port: number; address: string; cidr: string; peers: WireguardPeerModel[] };
}

export interface RouterModel {
  router: string;
  driver: RouterDriver;
  settings: RouterSettings;
  /** Sorted by namespace/name. */
  networks: NetworkModel[];
}

export interface RouterModelInput {
  router: Router;
  /** The Networks placed on this router. */
  networks: readonly Network[];
  /** Instances and peers of any Network; those of other routers are ignored. */
  instances: readonly Instance[];
  peers: readonly WireGuardPeer[];
  settings: RouterSettings;
  /**
   * Static leases and WireGuard peers the controller already allocated, by namespace/name of
   * their Network: taken as they are instead of being allocated from `instances` and `peers`
   * (a router agent gets them in network.apply and has neither).
   */
  allocated?: ReadonlyMap<string, { leases: readonly Lease[]; peers: readonly WireguardPeerModel[] }>;
}

export interface RouterModelResult {
  model: RouterModel;
  /** Objects left out because they cannot be served as they are; the rest is still served. */
  problems: AllocationProblem[];
  /** Things a person reviewing the result should know that are not errors. */
  notes: string[];
}

/**
 * Allocates what is missing and assembles the router's model. Networks already allocated on this
 * router go first, then the oldest: when two collide, the newcomer is the one refused.
 */
export function buildRouterModel(input: RouterModelInput): RouterModelResult {
  const { router, settings } = input;
  const problems: AllocationProblem[] = [];
  const notes: string[] = [];
  const placed: PlacedNetwork[] = [];
  const accepted: { network: Network; allocation: NetworkAllocation; id: string }[] = [];
  const idOwners = new Map<string, string>();

  for (const network of placementOrder(input.networks, router)) {
    const key = objectKey(network);
    try {
      const allocation = allocateNetwork(network, router, placed);
      if (allocation.segment.type === 'vlan' && settings.trunk === undefined) {
        throw new AllocationError(
          'spec.segment',
          `router ${router.metadata.name} has no VLAN trunk configured; use a vxlan segment`,
        );
      }
      const id = networkId(network);
      const owner = idOwners.get(id);
      if (owner !== undefined) {
        throw new AllocationError(
          'metadata.name',
          `its router names (loam_${id}) collide with those of Network ${owner}; rename one of them`,
        );
      }
      idOwners.set(id, key);
      placed.push({
        key,
        cidr: network.spec.cidr,
        segment: allocation.segment,
        ...(allocation.wireguard ? { wireguard: allocation.wireguard } : {}),
      });
      accepted.push({ network, allocation, id });
    } catch (err) {
      if (!(err instanceof AllocationError)) throw err;
      problems.push({ object: `Network ${key}`, field: err.field, message: err.detail });
    }
  }

  const routes: Route[] = placed.flatMap((p) => [
    { cidr: p.cidr, owner: `Network ${p.key}` },
    ...(p.wireguard ? [{ cidr: p.wireguard.cidr, owner: `the WireGuard server of Network ${p.key}` }] : []),
  ]);
  const networks = accepted.map(({ network, allocation, id }): NetworkModel => {
    const given = input.allocated?.get(objectKey(network));
    const leases = given
      ? { leases: [...given.leases], problems: [] }
      : allocateLeases(network, allocation, input.instances);
    const peers = given
      ? { peers: [...given.peers], problems: [] }
      : allocatePeers(network, allocation, input.peers, routes);
    problems.push(...leases.problems, ...peers.problems);
    const peerModels: WireguardPeerModel[] = [];
    for (const peer of peers.peers) {
      const owner = `WireGuardPeer ${network.metadata.namespace}/${peer.peer}`;
      routes.push(...peer.allowedIPs.slice(1).map((cidr) => ({ cidr, owner })));
      if (peer.publicKey === undefined) {
        notes.push(
          `${owner}: no public key yet; the controller generates a key pair when it is applied, and the router gets the peer then`,
        );
      } else peerModels.push({ ...peer, publicKey: peer.publicKey });
    }
    const { spec } = network;
    return {
      namespace: network.metadata.namespace ?? '',
      name: network.metadata.name ?? '',
      id,
      names: networkNames(id, allocation.segment),
      segment: allocation.segment,
      cidr: spec.cidr,
      gateway: allocation.gateway,
      egress: spec.egress,
      dns: spec.dns ?? [allocation.gateway],
      ...(allocation.dhcpPool
        ? {
            dhcp: {
              ...allocation.dhcpPool,
              leaseSeconds: parseDuration(spec.dhcp.leaseTime),
              leases: leases.leases,
            },
          }
        : {}),
      ...(allocation.wireguard ? { wireguard: { ...allocation.wireguard, peers: peerModels } } : {}),
    };
  });

  networks.sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`));
  return {
    model: { router: router.metadata.name ?? '', driver: router.spec.driver, settings, networks },
    problems,
    notes,
  };
}

function placementOrder(networks: readonly Network[], router: Router): Network[] {
  const recorded = (network: Network) =>
    network.status?.router === router.metadata.name && network.status?.segment !== undefined;
  return inCreationOrder(networks).sort((a, b) => Number(recorded(b)) - Number(recorded(a)));
}

const base32 = 'abcdefghijklmnopqrstuvwxyz234567';

/** Six base32 characters (30 bits) of SHA-256(namespace/name). */
export function networkId(network: Network): string {
  let bits = createHash('sha256').update(objectKey(network)).digest().readUInt32BE(0) >>> 2;
  let id = '';
  for (let i = 0; i < 6; i++, bits >>>= 5) id = base32[bits & 31] + id;
  return id;
}

export function networkNames(id: string, segment: Segment): NetworkNames {
  const base = `loam_${id}`;
  return {
    interface: base,
    bridge: `${base}_br`,
    segment: `${base}_${segment.type === 'vxlan' ? 'vx' : 'vl'}`,
    wireguard: `${base}_wg`,
  };
}

const durationUnits: [string, number][] = [
  ['d', 86400],
  ['h', 3600],
  ['m', 60],
];

/** A lease time as dnsmasq (and OpenWrt's leasetime) reads it: the largest unit that divides it exactly. */
export function dnsmasqDuration(seconds: number): string {
  const unit = durationUnits.find(([, size]) => seconds % size === 0);
  return unit ? `${seconds / unit[1]}${unit[0]}` : String(seconds);
}
