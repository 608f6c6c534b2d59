/**
 * A router model as OpenWrt configuration: sections of /etc/config/network (netifd), dhcp
 * (dnsmasq) and firewall (fw4). Every section is named `loam_...`, which is how Loam tells its
 * sections from the user's: only those are ever replaced or removed.
 *
 * Per Network (`loam_<id>` below):
 * - network: a bridge `device` (`loam_<id>_br`) holding the segment: a `proto vxlan` interface
 *   (netifd names its device after the section, `loam_<id>_vx`) with a `vxlan_peer` per
 *   hypervisor endpoint, or a `bridge-vlan` on Loam's VLAN-filtering trunk bridge `loam_trunk`,
 *   whose `loam_trunk.<vid>` device joins the Network's bridge; the gateway `interface` (static);
 *   the WireGuard `interface` (`proto wireguard`; the router adds `private_key` itself) and a
 *   `wireguard_<interface>` section per peer.
 * - dhcp: the pool (start and limit count from the network address) and a `host` per static lease.
 * - firewall: a `zone` for the gateway and WireGuard interfaces (peers and instances of one
 *   Network may talk; nothing forwards between zones without a `forwarding`, and Loam adds none
 *   between tenants), `rule`s letting the zone reach the router's DHCP, DNS and ping only, a
 *   `rule` opening the WireGuard port from the WAN zone, and for egress a `forwarding` to the WAN
 *   zone with a `nat` masquerade of the Network's cidr. Isolation also relies on the stock
 *   `defaults` forward policy (REJECT), which is the user's section and left alone.
 * Once per router: the trunk bridge when there are vlan Networks, and a `rule` letting VXLAN in
 * from the hypervisors' endpoints only.
 */

import ipaddr from 'ipaddr.js';
import { netmask, prefixLength } from '../../controllers/network/allocate.js';
import { ipv4ToNumber } from '../../crds/ip.js';
import { dnsmasqDuration, type NetworkModel, type RouterModel, type RouterSettings } from './model.js';
import { diffUci, mergeUci, type UciCommand, type UciSection, type UciValue } from './uci-format.js';

export const uciConfigNames = ['network', 'dhcp', 'firewall'] as const;
export type UciConfigName = (typeof uciConfigNames)[number];
export type RenderedUci = Record<UciConfigName, UciSection[]>;

export function ownedByLoam(section: UciSection): boolean {
  return section.name?.startsWith('loam_') ?? false;
}

/** Options the router sets on Loam's sections itself and renders never contain. */
export const routerOwnedOptions = ['private_key'];

const trunkBridge = 'loam_trunk';

export function renderUci(model: RouterModel): RenderedUci {
  const { settings, networks } = model;
  const rendered: RenderedUci = { network: [], dhcp: [], firewall: [] };
  if (settings.trunk !== undefined && networks.some((n) => n.segment.type === 'vlan')) {
    rendered.network.push(
      section('device', trunkBridge, { name: trunkBridge, type: 'bridge', ports: [settings.trunk] }),
    );
  }
  const { remotes, port } = settings.vxlan;
  if (remotes.length > 0 && networks.some((n) => n.segment.type === 'vxlan')) {
    rendered.firewall.push(
      section('rule', 'loam_vxlan', {
        name: 'Loam: VXLAN from the hypervisors',
        src: '*',
        src_ip: remotes,
        proto: 'udp',
        dest_port: String(port),
        target: 'ACCEPT',
      }),
    );
  }
  for (const network of networks) {
    rendered.network.push(...networkSections(network, settings));
    rendered.dhcp.push(...dhcpSections(network));
    rendered.firewall.push(...firewallSections(network, settings));
  }
  return rendered;
}

/** The `uci batch` commands that turn the Loam sections of `existing` (none when omitted) into `desired`. */
export function uciBatch(desired: RenderedUci, existing: Partial<RenderedUci> = {}): UciCommand[] {
  return uciConfigNames.flatMap((name) =>
    diffUci(name, existing[name] ?? [], desired[name], ownedByLoam, routerOwnedOptions),
  );
}

/** The config file `text` (e.g. /etc/config/network) with its Loam sections replaced by `desired`. */
export function mergeUciFile(text: string, desired: readonly UciSection[]): string {
  return mergeUci(text, desired, ownedByLoam, routerOwnedOptions);
}

function networkSections(network: NetworkModel, settings: RouterSettings): UciSection[] {
  const { names, segment } = network;
  const sections = [
    section('device', names.bridge, {
      name: names.bridge,
      type: 'bridge',
      // Created even before the segment's device exists.
      bridge_empty: '1',
      ports: [segment.type === 'vxlan' ? names.segment : `${trunkBridge}.${segment.id}`],
    }),
  ];
  if (segment.type === 'vxlan') {
    const { port, local, group, uplink, remotes } = settings.vxlan;
    sections.push(
      section('interface', names.segment, {
        proto: 'vxlan',
        vid: String(segment.id),
        port: String(port),
        ipaddr: local,
        peeraddr: group,
        tunlink: uplink,
      }),
      ...remotes.map((remote) =>
        section('vxlan_peer', `${names.segment}_${remote.replaceAll('.', '_')}`, {
          vxlan: names.segment,
          dst: remote,
        }),
      ),
    );
  } else {
    sections.push(
      section('bridge-vlan', names.segment, {
        device: trunkBridge,
        vlan: String(segment.id),
        ports: [`${settings.trunk}:t`],
      }),
    );
  }
  sections.push(
    section('interface', names.interface, {
      device: names.bridge,
      proto: 'static',
      ipaddr: network.gateway,
      netmask: netmask(network.cidr),
    }),
  );
  const { wireguard } = network;
  if (wireguard) {
    sections.push(
      section('interface', names.wireguard, {
        proto: 'wireguard',
        listen_port: String(wireguard.port),
        addresses: [`${wireguard.address}/${prefixLength(wireguard.cidr)}`],
      }),
      ...wireguard.peers.map((peer) =>
        section(`wireguard_${names.wireguard}`, `${names.wireguard}_${sectionName(peer.peer)}`, {
          description: `${network.namespace}/${peer.peer}`,
          public_key: peer.publicKey,
          allowed_ips: peer.allowedIPs,
          route_allowed_ips: '1',
        }),
      ),
    );
  }
  return sections;
}

function dhcpSections(network: NetworkModel): UciSection[] {
  const { dhcp, names } = network;
  if (!dhcp) return [];
  const base = ipv4ToNumber(ipaddr.IPv4.networkAddressFromCIDR(network.cidr).toString());
  const start = ipv4ToNumber(dhcp.start);
  return [
    section('dhcp', names.interface, {
      interface: names.interface,
      start: String(start - base),
      limit: String(ipv4ToNumber(dhcp.end) - start + 1),
      leasetime: dnsmasqDuration(dhcp.leaseSeconds),
      // Serve even when another DHCP server answers on the segment: Loam's leases are the truth.
      force: '1',
      dhcp_option: [`6,${network.dns.join(',')}`],
    }),
    ...dhcp.leases.map((lease) =>
      section('host', `${names.interface}_${sectionName(lease.instance)}`, {
        name: lease.instance,
        mac: lease.mac,
        ip: lease.address,
      }),
    ),
  ];
}

function firewallSections(network: NetworkModel, settings: RouterSettings): UciSection[] {
  const { names, wireguard } = network;
  const zone = names.interface;
  const label = `Loam ${network.namespace}/${network.name}`;
  const sections = [
    section('zone', zone, {
      name: zone,
      network: [names.interface, ...(wireguard ? [names.wireguard] : [])],
      input: 'REJECT',
      output: 'ACCEPT',
      // Within the zone only: between the Network's bridge and its WireGuard peers.
      forward: 'ACCEPT',
    }),
    section('rule', `${zone}_dhcp`, {
      name: `${label}: DHCP`,
      src: zone,
      family: 'ipv4',
      proto: 'udp',
      dest_port: '67',
      target: 'ACCEPT',
    }),
    section('rule', `${zone}_dns`, {
      name: `${label}: DNS`,
      src: zone,
      proto: ['tcp', 'udp'],
      dest_port: '53',
      target: 'ACCEPT',
    }),
    section('rule', `${zone}_ping`, {
      name: `${label}: ping`,
      src: zone,
      family: 'ipv4',
      proto: 'icmp',
      icmp_type: 'echo-request',
      target: 'ACCEPT',
    }),
  ];
  if (wireguard) {
    sections.push(
      section('rule', `${zone}_wg`, {
        name: `${label}: WireGuard`,
        src: settings.wan,
        proto: 'udp',
        dest_port: String(wireguard.port),
        target: 'ACCEPT',
      }),
    );
  }
  if (network.egress) {
    sections.push(
      section('forwarding', `${zone}_egress`, { name: `${label}: egress`, src: zone, dest: settings.wan }),
      section('nat', `${zone}_masq`, {
        name: `${label}: masquerade`,
        src: settings.wan,
        src_ip: network.cidr,
        target: 'MASQUERADE',
      }),
    );
  }
  return sections;
}

function section(type: string, name: string, options: Record<string, UciValue | undefined>): UciSection {
  return {
    type,
    name,
    options: Object.fromEntries(
      Object.entries(options).filter((entry): entry is [string, UciValue] => entry[1] !== undefined),
    ),
  };
}

/** An object name (a DNS label) as part of a section name, which takes `_` but not `-`. */
function sectionName(name: string): string {
  return name.replaceAll('-', '_');
}
