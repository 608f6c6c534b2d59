/**
 * What the Network controller decides for a Network placed on a Router: its segment, gateway,
 * DHCP pool, the static leases of the Instances attached to it and the tunnel addresses of its
 * WireGuard peers. Pure (everything in, nothing read or written), so the controller, the network
 * agent's model and `loam render` all decide the same way.
 *
 * The rules:
 * - Segment: spec.segment (it must lie in the router's pool for its type), else the one the
 *   controller recorded in status on this router, else the lowest free id of the router's vxlan
 *   pool (its vlan pool when it has no vxlan pool). Never one another Network on the router uses.
 * - Gateway: spec.gateway, else the first host address of the cidr.
 * - DHCP pool: spec.dhcp.rangeStart-rangeEnd, else the upper half of the subnet without the
 *   broadcast address (10.0.0.128-10.0.0.254 for a /24), so the lower half is left for
 *   addresses the control plane hands out. A gateway inside it splits it; the larger side is used.
 * - Instance addresses: spec.networks[].address, else the address the controller recorded in
 *   status, else the lowest free host address outside the DHCP pool. A fixed address may be
 *   anywhere in the subnet except the gateway: dnsmasq never leases a reserved address to anyone else.
 * - MACs: spec.networks[].mac, else the recorded one, else 52:54:00 (QEMU's prefix) followed by
 *   three bytes of a SHA-256 of the Instance uid (namespace/name without one) and the Network name,
 *   rehashed on the rare collision inside the Network.
 * - WireGuard: the server takes the first host address of spec.wireguard.cidr; a peer takes
 *   spec.address, else its recorded status.address, else the lowest free address of that cidr.
 *
 * Claims that are given (spec) are honoured before remembered ones (status) and those before new
 * ones, each group in creation order, so an explicit address always wins over an allocated one.
 */

import { createHash } from 'node:crypto';
import ipaddr from 'ipaddr.js';
import { cidrsOverlap, ipv4ToNumber, isHostAddressIn } from '../../crds/ip.js';
import type { SegmentType } from '../../crds/v1alpha1/common.js';
import type { Instance, Network, Router, WireGuardPeer } from '../../crds/v1alpha1/index.js';

export interface Segment {
  type: SegmentType;
  id: number;
}

/** A Network the router already serves, as far as another Network must stay clear of it. */
export interface PlacedNetwork {
  /** namespace/name, for messages. */
  key: string;
  cidr: string;
  segment: Segment;
  wireguard?: { cidr: string; port: number };
}

export interface NetworkAllocation {
  segment: Segment;
  gateway: string;
  /** The dynamic DHCP pool; absent when DHCP is disabled. */
  dhcpPool?: { start: string; end: string };
  /** The router's side of the WireGuard server; absent without an enabled spec.wireguard. */
  wireguard?: { address: string; port: number; cidr: string };
}

/** Why one object cannot be served, with the field a person has to change. */
export interface AllocationProblem {
  /** `Kind namespace/name`. */
  object: string;
  field: string;
  message: string;
}

/** A Network that cannot be allocated; `field` is the spec field to change. */
export class AllocationError extends Error {
  constructor(
    readonly field: string,
    readonly detail: string,
  ) {
    super(`${field}: ${detail}`);
    this.name = 'AllocationError';
  }
}

/** What these functions need of an object's metadata (names are optional in the schema for generateName). */
interface Named {
  metadata: { name?: string; namespace?: string; creationTimestamp?: string | null };
}

/** `namespace/name`, or the name of a cluster-scoped object. */
export function objectKey(obj: Named): string {
  const { namespace, name = '' } = obj.metadata;
  return namespace === undefined ? name : `${namespace}/${name}`;
}

/**
 * The segment, gateway, DHCP pool and WireGuard server of `network` on `router`, next to the
 * Networks already `placed` there. Throws AllocationError when the Network collides with one of
 * them (cidr, segment, WireGuard port) or does not fit the router's pool.
 */
export function allocateNetwork(
  network: Network,
  router: Router,
  placed: readonly PlacedNetwork[],
): NetworkAllocation {
  const { spec } = network;
  const clash = overlap(spec.cidr, placed);
  if (clash)
    throw new AllocationError(
      'spec.cidr',
      `${spec.cidr} overlaps ${clash} on router ${router.metadata.name}`,
    );
  const addressing = networkAddressing(network);
  const wireguard = allocateWireguardServer(network, router, placed);
  return {
    segment: allocateSegment(network, router, placed),
    ...addressing,
    ...(wireguard ? { wireguard } : {}),
  };
}

/** What Instance addresses depend on: the gateway and the DHCP pool, which need no Router. */
export type NetworkAddressing = Pick<NetworkAllocation, 'gateway' | 'dhcpPool'>;

/** The gateway and DHCP pool of `network`. Throws AllocationError when they do not fit together. */
export function networkAddressing(network: Network): NetworkAddressing {
  const gateway = network.spec.gateway ?? firstHost(network.spec.cidr);
  const dhcpPool = network.spec.dhcp.enabled ? allocateDhcpPool(network, gateway) : undefined;
  return { gateway, ...(dhcpPool ? { dhcpPool } : {}) };
}

/** `<prefix> of Network <key>` for the first prefix of a placed Network (its cidr or WireGuard cidr) that `cidr` overlaps. */
function overlap(cidr: string, placed: readonly PlacedNetwork[]): string | undefined {
  for (const other of placed) {
    const prefixes = [other.cidr, ...(other.wireguard ? [other.wireguard.cidr] : [])];
    const clash = prefixes.find((prefix) => cidrsOverlap(cidr, prefix));
    if (clash !== undefined) return `${clash} of Network ${other.key}`;
  }
  return undefined;
}

function allocateSegment(network: Network, router: Router, placed: readonly PlacedNetwork[]): Segment {
  const routerName = router.metadata.name;
  const pool = router.spec.segmentPool;
  const chosen = network.spec.segment;
  const recorded = network.status?.router === routerName ? network.status?.segment : undefined;
  const owner = (segment: Segment) =>
    placed.find((other) => other.segment.type === segment.type && other.segment.id === segment.id);

  if (chosen) {
    const range = pool[chosen.type];
    if (!range) {
      throw new AllocationError(
        'spec.segment.type',
        `router ${routerName} has no ${chosen.type} segment pool`,
      );
    }
    if (chosen.id < range.start || chosen.id > range.end) {
      throw new AllocationError(
        'spec.segment.id',
        `${chosen.id} is outside router ${routerName}'s ${chosen.type} pool ${range.start}-${range.end}`,
      );
    }
  }
  const wanted = chosen ?? recorded;
  if (wanted) {
    const other = owner(wanted);
    if (other) {
      throw new AllocationError(
        chosen ? 'spec.segment.id' : 'status.segment.id',
        `${wanted.type} ${wanted.id} is already used by Network ${other.key} on router ${routerName}`,
      );
    }
    return { type: wanted.type, id: wanted.id };
  }

  const type: SegmentType | undefined = pool.vxlan ? 'vxlan' : pool.vlan ? 'vlan' : undefined;
  const range = type && pool[type];
  if (!type || !range) {
    throw new AllocationError(
      'spec.segment',
      `router ${routerName} has no segment pool to allocate from; set spec.segment`,
    );
  }
  const used = new Set(
    placed.filter((other) => other.segment.type === type).map((other) => other.segment.id),
  );
  for (let id = range.start; id <= range.end; id++) {
    if (!used.has(id)) return { type, id };
  }
  throw new AllocationError(
    'spec.segment',
    `router ${routerName}'s ${type} pool ${range.start}-${range.end} is exhausted`,
  );
}

function allocateDhcpPool(network: Network, gateway: string): { start: string; end: string } {
  const { cidr, dhcp } = network.spec;
  const gatewayNumber = ipv4ToNumber(gateway);
  if (dhcp.rangeStart !== undefined && dhcp.rangeEnd !== undefined) {
    // The schema refuses a chosen gateway inside the range; only a defaulted one can land there.
    if (gatewayNumber >= ipv4ToNumber(dhcp.rangeStart) && gatewayNumber <= ipv4ToNumber(dhcp.rangeEnd)) {
      throw new AllocationError(
        'spec.gateway',
        `the default gateway ${gateway} (the first host address) is inside the DHCP range ${dhcp.rangeStart}-${dhcp.rangeEnd}; set spec.gateway`,
      );
    }
    return { start: dhcp.rangeStart, end: dhcp.rangeEnd };
  }
  const { network: base, broadcast } = bounds(cidr);
  const upper: [number, number] = [base + (broadcast - base + 1) / 2, broadcast - 1];
  const sides: [number, number][] =
    gatewayNumber < upper[0] || gatewayNumber > upper[1]
      ? [upper]
      : [
          [upper[0], gatewayNumber - 1],
          [gatewayNumber + 1, upper[1]],
        ];
  const [start, end] = sides.reduce((a, b) => (b[1] - b[0] > a[1] - a[0] ? b : a));
  if (end < start) {
    throw new AllocationError(
      'spec.dhcp',
      `${cidr} has no room for a DHCP pool beside the gateway ${gateway}; set spec.dhcp.rangeStart and rangeEnd, or disable DHCP`,
    );
  }
  return { start: addressOf(start), end: addressOf(end) };
}

function allocateWireguardServer(
  network: Network,
  router: Router,
  placed: readonly PlacedNetwork[],
): NetworkAllocation['wireguard'] {
  const wireguard = network.spec.wireguard;
  if (!wireguard?.enabled) return undefined;
  const sharing = placed.find((other) => other.wireguard?.port === wireguard.port);
  if (sharing) {
    throw new AllocationError(
      'spec.wireguard.port',
      `UDP port ${wireguard.port} is already used by the WireGuard server of Network ${sharing.key} on router ${router.metadata.name}`,
    );
  }
  const clash = overlap(wireguard.cidr, placed);
  if (clash) {
    throw new AllocationError(
      'spec.wireguard.cidr',
      `${wireguard.cidr} overlaps ${clash} on router ${router.metadata.name}`,
    );
  }
  return { address: firstHost(wireguard.cidr), port: wireguard.port, cidr: wireguard.cidr };
}

// --- addresses of Instances and peers -----------------------------------------------------------

/** A static DHCP lease: what dnsmasq hands the Instance's NIC on this Network. */
export interface Lease {
  /** The Instance name, also the DHCP hostname (a DNS label, unique in the namespace). */
  instance: string;
  mac: string;
  address: string;
}

/** An address and/or MAC on a Network that another Instance (namespace/name) holds. */
export interface LeaseReservation {
  instance: string;
  address?: string;
  mac?: string;
}

/**
 * Static leases for every Instance attached to `network` (same namespace, spec.networks naming
 * it). `reserved` holds addresses allocated elsewhere (bare, or with the Instance and MAC that
 * hold them) that must not be handed out again. An Instance whose address or MAC cannot be
 * honoured gets a problem and no lease; the others keep theirs.
 */
export function allocateLeases(
  network: Network,
  allocation: NetworkAddressing,
  instances: readonly Instance[],
  reserved: Iterable<string | LeaseReservation> = [],
): { leases: Lease[]; problems: AllocationProblem[] } {
  const { cidr } = network.spec;
  const attached = inCreationOrder(instances).flatMap((instance) => {
    if (instance.metadata.namespace !== network.metadata.namespace) return [];
    const index = (instance.spec.networks ?? []).findIndex((n) => n.name === network.metadata.name);
    const attachment = instance.spec.networks?.[index];
    if (!attachment) return [];
    const recorded = instance.status?.interfaces?.find((i) => i.network === network.metadata.name);
    return [{ instance, field: `spec.networks[${index}]`, attachment, recorded }];
  });

  const book = new AddressBook(cidr);
  book.claim(allocation.gateway, 'the gateway');
  const macs = new Map<string, string>();
  for (const held of reserved) {
    if (typeof held === 'string') book.claim(held, 'another allocation');
    else {
      if (held.address !== undefined) book.claim(held.address, `Instance ${held.instance}`);
      if (held.mac !== undefined) macs.set(held.mac, held.instance);
    }
  }
  const pool = allocation.dhcpPool;
  const { assigned, problems } = assignAddresses(
    book,
    attached.map(({ instance, field, attachment, recorded }) => ({
      object: `Instance ${objectKey(instance)}`,
      field: `${field}.address`,
      given: attachment.address,
      remembered: recorded?.ipAddress,
    })),
    pool && {
      start: ipv4ToNumber(pool.start),
      end: ipv4ToNumber(pool.end),
      description: `outside the DHCP pool ${pool.start}-${pool.end}`,
    },
  );

  const leases: Lease[] = [];
  const order = (a: (typeof attached)[number]) =>
    a.attachment.mac !== undefined ? 0 : a.recorded?.mac !== undefined ? 1 : 2;
  for (const entry of [...attached].sort((a, b) => order(a) - order(b))) {
    const object = `Instance ${objectKey(entry.instance)}`;
    const address = assigned.get(object);
    if (address === undefined) continue;
    const given = entry.attachment.mac;
    if (given !== undefined && macs.has(given)) {
      problems.push({
        object,
        field: `${entry.field}.mac`,
        message: `${given} is already used on Network ${objectKey(network)} by Instance ${macs.get(given)}`,
      });
      continue;
    }
    let mac = given ?? entry.recorded?.mac;
    for (let attempt = 0; mac === undefined || macs.has(mac); attempt++) {
      mac = instanceMac(entry.instance, network.metadata.name ?? '', attempt);
    }
    macs.set(mac, objectKey(entry.instance));
    leases.push({ instance: entry.instance.metadata.name ?? '', mac, address });
  }
  return { leases: byAddress(leases), problems };
}

/**
 * The MAC of an Instance's NIC on a Network when neither spec nor status has one: QEMU's
 * locally administered 52:54:00 prefix and three bytes of a hash, so the same Instance gets the
 * same MAC on every host. `attempt` > 0 rehashes after a collision.
 */
export function instanceMac(instance: Instance, network: string, attempt = 0): string {
  const seed = `${instance.metadata.uid ?? objectKey(instance)}/${network}${attempt > 0 ? `#${attempt}` : ''}`;
  const digest = createHash('sha256').update(seed).digest();
  return ['52', '54', '00', ...[0, 1, 2].map((i) => (digest[i] ?? 0).toString(16).padStart(2, '0'))].join(
    ':',
  );
}

/** The router's side of one WireGuard peer. */
export interface PeerAllocation {
  peer: string;
  /** Absent until the controller has generated the peer's key pair. */
  publicKey?: string;
  address: string;
  /** Routed to the peer: its tunnel address (/32) and spec.allowedIPs. */
  allowedIPs: string[];
}

/** A prefix the router already routes somewhere, with who owns it, for messages. */
export interface Route {
  cidr: string;
  owner: string;
}

/**
 * Tunnel addresses for the WireGuardPeers of `network`. `routes` lists every prefix the router
 * already routes elsewhere (all Networks' cidrs and WireGuard cidrs, other peers' allowedIPs): a
 * peer's extra allowedIPs may overlap none of them, or one tenant's laptop could capture another
 * tenant's traffic.
 */
export function allocatePeers(
  network: Network,
  allocation: NetworkAllocation,
  peers: readonly WireGuardPeer[],
  routes: readonly Route[] = [],
  reserved: Iterable<string> = [],
): { peers: PeerAllocation[]; problems: AllocationProblem[] } {
  const mine = inCreationOrder(peers).filter(
    (peer) =>
      peer.metadata.namespace === network.metadata.namespace && peer.spec.network === network.metadata.name,
  );
  const server = allocation.wireguard;
  if (!server) {
    return {
      peers: [],
      problems: mine.map((peer) => ({
        object: `WireGuardPeer ${objectKey(peer)}`,
        field: 'spec.network',
        message: `Network ${objectKey(network)} has no WireGuard server (spec.wireguard)`,
      })),
    };
  }

  // Routes first, so a peer refused for its allowedIPs takes no tunnel address from the others.
  const problems: AllocationProblem[] = [];
  const taken = [...routes];
  const routable = mine.filter((peer) => {
    const object = `WireGuardPeer ${objectKey(peer)}`;
    const extra = peer.spec.allowedIPs ?? [];
    const clashes = extra.flatMap((cidr, index) => {
      const route = taken.find((t) => cidrsOverlap(cidr, t.cidr));
      return route ? [{ index, cidr, route }] : [];
    });
    for (const { index, cidr, route } of clashes) {
      problems.push({
        object,
        field: `spec.allowedIPs[${index}]`,
        message: `${cidr} overlaps ${route.cidr}, routed to ${route.owner}`,
      });
    }
    if (clashes.length === 0) taken.push(...extra.map((cidr) => ({ cidr, owner: object })));
    return clashes.length === 0;
  });

  const book = new AddressBook(server.cidr);
  book.claim(server.address, 'the WireGuard server');
  for (const address of reserved) book.claim(address, 'another allocation');
  const addresses = assignAddresses(
    book,
    routable.map((peer) => ({
      object: `WireGuardPeer ${objectKey(peer)}`,
      field: 'spec.address',
      given: peer.spec.address,
      remembered: peer.status?.address,
    })),
  );
  problems.push(...addresses.problems);
  const allocations = routable.flatMap((peer): PeerAllocation[] => {
    const address = addresses.assigned.get(`WireGuardPeer ${objectKey(peer)}`);
    if (address === undefined) return [];
    const publicKey = peer.spec.publicKey ?? peer.status?.publicKey;
    return [
      {
        peer: peer.metadata.name ?? '',
        ...(publicKey ? { publicKey } : {}),
        address,
        allowedIPs: [`${address}/32`, ...(peer.spec.allowedIPs ?? [])],
      },
    ];
  });
  return { peers: byAddress(allocations), problems };
}

interface AddressClaim {
  object: string;
  field: string;
  given?: string;
  remembered?: string;
}

/** A range new addresses stay out of (the DHCP pool), and how to name it in a message. */
interface AvoidedRange {
  start: number;
  end: number;
  description: string;
}

/**
 * Addresses for `claims` from `book`: given ones first (a bad or taken one is a problem), then
 * remembered ones that are still valid and free, then the lowest free address outside `avoid`.
 */
function assignAddresses(
  book: AddressBook,
  claims: readonly AddressClaim[],
  avoid?: AvoidedRange,
): { assigned: Map<string, string>; problems: AllocationProblem[] } {
  const assigned = new Map<string, string>();
  const problems: AllocationProblem[] = [];
  for (const claim of claims) {
    if (claim.given === undefined) continue;
    const problem = book.problemWith(claim.given);
    if (problem) problems.push({ object: claim.object, field: claim.field, message: problem });
    else {
      book.claim(claim.given, claim.object);
      assigned.set(claim.object, claim.given);
    }
  }
  for (const claim of claims) {
    if (claim.given !== undefined || claim.remembered === undefined) continue;
    if (book.problemWith(claim.remembered) === undefined) {
      book.claim(claim.remembered, claim.object);
      assigned.set(claim.object, claim.remembered);
    }
  }
  for (const claim of claims) {
    if (claim.given !== undefined || assigned.has(claim.object)) continue;
    const address = book.nextFree(avoid);
    if (address === undefined) {
      problems.push({
        object: claim.object,
        field: claim.field,
        message: `no free address left in ${book.cidr}${avoid ? ` ${avoid.description}` : ''}`,
      });
      continue;
    }
    book.claim(address, claim.object);
    assigned.set(claim.object, address);
  }
  return { assigned, problems };
}

/** Who holds which host address of one subnet. */
class AddressBook {
  private readonly owners = new Map<number, string>();
  private readonly first: number;
  private readonly last: number;

  constructor(readonly cidr: string) {
    const { network, broadcast } = bounds(cidr);
    this.first = network + 1;
    this.last = broadcast - 1;
  }

  claim(address: string, owner: string): void {
    this.owners.set(ipv4ToNumber(address), owner);
  }

  /** Why `address` cannot be given out, or undefined when it can. */
  problemWith(address: string): string | undefined {
    if (!isHostAddressIn(this.cidr, address)) return `${address} is not a host address in ${this.cidr}`;
    const owner = this.owners.get(ipv4ToNumber(address));
    return owner === undefined ? undefined : `${address} is already used by ${owner}`;
  }

  nextFree(avoid?: AvoidedRange): string | undefined {
    for (let n = this.first; n <= this.last; n++) {
      if (avoid && n >= avoid.start && n <= avoid.end) n = avoid.end;
      else if (!this.owners.has(n)) return addressOf(n);
    }
    return undefined;
  }
}

// --- small helpers ----------------------------------------------------------------------------

export function prefixLength(cidr: string): number {
  return ipaddr.IPv4.parseCIDR(cidr)[1];
}

export function netmask(cidr: string): string {
  return ipaddr.IPv4.subnetMaskFromPrefixLength(prefixLength(cidr)).toString();
}

function firstHost(cidr: string): string {
  return addressOf(bounds(cidr).network + 1);
}

/** The network and broadcast addresses of `cidr`, as numbers. */
function bounds(cidr: string): { network: number; broadcast: number } {
  return {
    network: ipv4ToNumber(ipaddr.IPv4.networkAddressFromCIDR(cidr).toString()),
    broadcast: ipv4ToNumber(ipaddr.IPv4.broadcastAddressFromCIDR(cidr).toString()),
  };
}

function addressOf(n: number): string {
  return ipaddr.fromByteArray([n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]).toString();
}

function byAddress<T extends { address: string }>(items: T[]): T[] {
  return items.sort((a, b) => ipv4ToNumber(a.address) - ipv4ToNumber(b.address));
}

/** Oldest first (the controller allocated them in that order), then by name for a stable tie-break. */
export function inCreationOrder<T extends Named>(objects: readonly T[]): T[] {
  return [...objects].sort(
    (a, b) =>
      (a.metadata.creationTimestamp ?? '').localeCompare(b.metadata.creationTimestamp ?? '') ||
      objectKey(a).localeCompare(objectKey(b)),
  );
}
