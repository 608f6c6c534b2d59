/**
 * A router model as a plan for a plain Linux router: iproute2 links and addresses, one nftables
 * table owned by Loam, a dnsmasq per Network and a WireGuard config per WireGuard server. Pure:
 * the linux driver applies it (only what differs), `loam render` prints it.
 *
 * Per Network: a bridge carrying the gateway address, its segment device as a bridge port (a
 * VXLAN device, flooding to each hypervisor endpoint through an all-zero FDB entry, or to a
 * multicast group; or a VLAN sub-interface of the trunk), and a WireGuard device whose peers'
 * extra allowedIPs are routed to it.
 *
 * `table inet loam` is replaced in one `nft -f` transaction (declare, delete, define), so there
 * is never a moment without it. It lets a Network's devices reach the router only at that
 * Network's own addresses and only for DHCP, DNS, ping and WireGuard; forwards between a
 * Network's bridge and its WireGuard peers, and from the bridge to the WAN when egress is allowed
 * (masqueraded); and drops every other forward from or to a Loam device, so tenants never reach
 * each other or the router's other networks.
 *
 * The WireGuard config is in `wg syncconf` form without a PrivateKey: the key is made on the
 * router, kept in privateKeyFile, and never leaves it.
 */

import { netmask, prefixLength } from '../../controllers/network/allocate.js';
import { dnsmasqDuration, type NetworkModel, type RouterModel, type RouterSettings } from './model.js';

export interface LinuxLink {
  name: string;
  kind: 'bridge' | 'vxlan' | 'vlan' | 'wireguard';
  /** What follows `ip link add name <name>`. */
  args: string[];
  master?: string;
  /** Addresses (CIDR form) on the link. */
  addresses: string[];
  /** Prefixes routed out of the link. */
  routes: string[];
  /** VXLAN endpoints that broadcast and unknown traffic is copied to. */
  flood: string[];
  /** The link's alias (ifalias), where it records whose it is. */
  alias?: string;
}

export interface PlanFile {
  path: string;
  content: string;
}

export interface LinuxPlan {
  sysctls: Record<string, string>;
  /** In creation order: each bridge before its ports. */
  links: LinuxLink[];
  nftables: PlanFile;
  dnsmasq: { network: string; config: PlanFile; pidFile: string }[];
  wireguard: { device: string; config: PlanFile; privateKeyFile: string }[];
}

export function planLinux(model: RouterModel): LinuxPlan {
  const { settings, networks } = model;
  return {
    // Routing between the Networks' bridges, their WireGuard peers and the WAN.
    sysctls: { 'net.ipv4.ip_forward': '1' },
    links: networks.flatMap((network) => networkLinks(network, settings)),
    nftables: { path: `${settings.stateDir}/loam.nft`, content: nftRuleset(model) },
    dnsmasq: networks.map((network) => ({
      network: `${network.namespace}/${network.name}`,
      config: {
        path: `${settings.stateDir}/dnsmasq-${network.id}.conf`,
        content: dnsmasqConfig(network, settings),
      },
      pidFile: dnsmasqPidFile(network, settings),
    })),
    wireguard: networks.flatMap((network) => {
      const { wireguard } = network;
      if (!wireguard) return [];
      const privateKeyFile = `${settings.stateDir}/wireguard-${network.id}.key`;
      return [
        {
          device: network.names.wireguard,
          config: {
            path: `${settings.stateDir}/wireguard-${network.id}.conf`,
            content: wireguardConfig(network, wireguard, privateKeyFile),
          },
          privateKeyFile,
        },
      ];
    }),
  };
}

/** The commands that apply `plan` to a router that has none of it yet, in order. */
export function planCommands(plan: LinuxPlan): string[][] {
  const commands = Object.entries(plan.sysctls).map(([key, value]) => ['sysctl', '-w', `${key}=${value}`]);
  for (const link of plan.links) {
    commands.push(['ip', 'link', 'add', 'name', link.name, ...link.args]);
    if (link.master) commands.push(['ip', 'link', 'set', link.name, 'master', link.master]);
    for (const remote of link.flood) {
      commands.push(['bridge', 'fdb', 'append', '00:00:00:00:00:00', 'dev', link.name, 'dst', remote]);
    }
    const wireguard = plan.wireguard.find((w) => w.device === link.name);
    if (wireguard) {
      commands.push(
        ['wg', 'syncconf', link.name, wireguard.config.path],
        ['wg', 'set', link.name, 'private-key', wireguard.privateKeyFile],
      );
    }
    for (const address of link.addresses)
      commands.push(['ip', 'address', 'replace', address, 'dev', link.name]);
    commands.push(['ip', 'link', 'set', link.name, 'up']);
    for (const route of link.routes) commands.push(['ip', 'route', 'replace', route, 'dev', link.name]);
  }
  commands.push(['nft', '-f', plan.nftables.path]);
  for (const { config } of plan.dnsmasq) commands.push(['dnsmasq', `--conf-file=${config.path}`]);
  return commands;
}

function link(
  name: string,
  kind: LinuxLink['kind'],
  args: string[],
  more: Partial<LinuxLink> = {},
): LinuxLink {
  return { name, kind, args, addresses: [], routes: [], flood: [], ...more };
}

/**
 * A Network's bridge and its segment device as a bridge port: a VXLAN device flooding to each of
 * `remotes` through an all-zero FDB entry (or to a multicast group), or a VLAN sub-interface of
 * the trunk. The router puts the gateway on the bridge; a hypervisor only its Instances' taps.
 */
export function segmentLinks(
  names: Pick<NetworkModel['names'], 'bridge' | 'segment'>,
  segment: NetworkModel['segment'],
  settings: Pick<RouterSettings, 'trunk' | 'vxlan'>,
): [bridge: LinuxLink, segment: LinuxLink] {
  const { port, local, uplink, group, remotes } = settings.vxlan;
  const segmentLink =
    segment.type === 'vxlan'
      ? link(
          names.segment,
          'vxlan',
          [
            'type',
            'vxlan',
            'id',
            String(segment.id),
            'dstport',
            String(port),
            ...(local ? ['local', local] : []),
            ...(uplink ? ['dev', uplink] : []),
            ...(group ? ['group', group] : []),
          ],
          { master: names.bridge, flood: group ? [] : remotes },
        )
      : link(
          names.segment,
          'vlan',
          ['link', settings.trunk ?? '', 'type', 'vlan', 'id', String(segment.id)],
          {
            master: names.bridge,
          },
        );
  return [link(names.bridge, 'bridge', ['type', 'bridge']), segmentLink];
}

function networkLinks(network: NetworkModel, settings: RouterSettings): LinuxLink[] {
  const { names, segment, wireguard } = network;
  const [bridge, segmentLink] = segmentLinks(names, segment, settings);
  return [
    { ...bridge, addresses: [`${network.gateway}/${prefixLength(network.cidr)}`] },
    segmentLink,
    ...(wireguard
      ? [
          link(names.wireguard, 'wireguard', ['type', 'wireguard'], {
            addresses: [`${wireguard.address}/${prefixLength(wireguard.cidr)}`],
            routes: wireguard.peers.flatMap((peer) => peer.allowedIPs.slice(1)),
          }),
        ]
      : []),
  ];
}

/** `"a"`, or `{ "a", "b" }`: an nftables value or anonymous set. */
function nftSet(items: readonly (string | number)[]): string {
  return items.length === 1 ? String(items[0]) : `{ ${items.join(', ')} }`;
}

function quoted(name: string): string {
  return `"${name}"`;
}

function nftRuleset(model: RouterModel): string {
  const { networks, settings } = model;
  // Declaring the table first makes the delete succeed on a router that has none yet.
  const replace = ['table inet loam', 'delete table inet loam'];
  if (networks.length === 0) return `${replace.join('\n')}\n`;

  const devices = (network: NetworkModel) => [
    network.names.bridge,
    ...(network.wireguard ? [network.names.wireguard] : []),
  ];
  const all = networks.flatMap(devices).map(quoted);
  const wireguardPorts = networks.flatMap((network) => (network.wireguard ? [network.wireguard.port] : []));
  const egress = networks.filter((network) => network.egress);
  const wan = quoted(settings.wan);
  const chain = (name: string, rules: string[]) => [
    `\tchain ${name} {`,
    ...rules.map((rule) => `\t\t${rule}`),
    '\t}',
  ];

  const chains = [
    chain('input', [
      'type filter hook input priority filter; policy accept;',
      ...(wireguardPorts.length > 0
        ? [`udp dport ${nftSet(wireguardPorts)} accept comment "WireGuard"`]
        : []),
      `iifname ${nftSet(all)} jump from_tenant`,
    ]),
    chain('from_tenant', [
      'ct state established,related accept',
      // Each Network reaches only its own addresses on the router (and DHCP's broadcast): not
      // another tenant's dnsmasq or the router's other addresses, which are local to it as well.
      ...networks.map((network) => {
        const own = [network.gateway, ...(network.wireguard ? [network.wireguard.address] : [])];
        return `iifname ${nftSet(devices(network).map(quoted))} ip daddr != ${nftSet([...own, '255.255.255.255'])} drop`;
      }),
      'udp dport { 53, 67 } accept comment "DNS, DHCP"',
      'tcp dport 53 accept comment "DNS"',
      'icmp type echo-request accept',
      'drop',
    ]),
    chain('forward', [
      'type filter hook forward priority filter; policy accept;',
      'ct state established,related accept',
      ...networks
        .filter((network) => network.wireguard)
        .map((network) => {
          const own = nftSet(devices(network).map(quoted));
          return `iifname ${own} oifname ${own} accept comment "${network.namespace}/${network.name}"`;
        }),
      ...egress.map(
        (network) =>
          `iifname ${quoted(network.names.bridge)} oifname ${wan} accept comment "${network.namespace}/${network.name} egress"`,
      ),
      `iifname ${nftSet(all)} drop`,
      `oifname ${nftSet(all)} drop`,
    ]),
    ...(egress.length > 0
      ? [
          chain('postrouting', [
            'type nat hook postrouting priority srcnat; policy accept;',
            `oifname ${wan} ip saddr ${nftSet(egress.map((network) => network.cidr))} masquerade`,
          ]),
        ]
      : []),
  ];
  const body = chains.flatMap((lines, index) => (index === 0 ? lines : ['', ...lines]));
  return `${[...replace, 'table inet loam {', ...body, '}'].join('\n')}\n`;
}

function dnsmasqPidFile(network: NetworkModel, settings: RouterSettings): string {
  return `${settings.stateDir}/dnsmasq-${network.id}.pid`;
}

function dnsmasqConfig(network: NetworkModel, settings: RouterSettings): string {
  const { dhcp } = network;
  const lines = [
    `# Loam: Network ${network.namespace}/${network.name}. Written by the network agent; edits are overwritten.`,
    `interface=${network.names.bridge}`,
    // Bound to the bridge only (not the loopback dnsmasq adds by default), so this instance
    // coexists with the router's own resolver and the other Networks' dnsmasq.
    'except-interface=lo',
    'bind-interfaces',
    `pid-file=${dnsmasqPidFile(network, settings)}`,
    // Tenants resolve names upstream, never the router's /etc/hosts.
    'no-hosts',
  ];
  if (dhcp) {
    lines.push(
      `dhcp-leasefile=${settings.stateDir}/dnsmasq-${network.id}.leases`,
      'dhcp-authoritative',
      `dhcp-range=${dhcp.start},${dhcp.end},${netmask(network.cidr)},${dnsmasqDuration(dhcp.leaseSeconds)}`,
      `dhcp-option=option:router,${network.gateway}`,
      `dhcp-option=option:dns-server,${network.dns.join(',')}`,
      ...dhcp.leases.map((lease) => `dhcp-host=${lease.mac},${lease.address},${lease.instance}`),
    );
  }
  return `${lines.join('\n')}\n`;
}

function wireguardConfig(
  network: NetworkModel,
  wireguard: NonNullable<NetworkModel['wireguard']>,
  privateKeyFile: string,
): string {
  const lines = [
    `# Loam: WireGuard server of Network ${network.namespace}/${network.name}, for wg syncconf.`,
    `# The private key stays on the router, in ${privateKeyFile}.`,
    '[Interface]',
    `ListenPort = ${wireguard.port}`,
  ];
  for (const peer of wireguard.peers) {
    lines.push(
      '',
      '[Peer]',
      `# ${network.namespace}/${peer.peer}`,
      `PublicKey = ${peer.publicKey}`,
      `AllowedIPs = ${peer.allowedIPs.join(', ')}`,
    );
  }
  return `${lines.join('\n')}\n`;
}
