/**
 * A hypervisor's side of the Networks: per Network its Instances attach to, a bridge their taps
 * join and the Network's segment as a port of it — a VXLAN device towards the router and the
 * other hosts (copies to each of the configured remotes, or a multicast group), or a VLAN
 * sub-interface of the trunk — made by network.attach and removed by network.detach. The bridge
 * carries no address: the host only switches the Network's frames, the router serves it.
 *
 * Each bridge records whose it is in its alias (`loam:NAMESPACE/NAME uid=UID`), so a restarted
 * agent reports the Networks attached from the machine itself. Names are the router's
 * (`loam_<id>_br`, `loam_<id>_vx`), so `loam up` on one machine, whose local router already
 * makes them, shares the router's bridge instead (sharedWithRouter).
 */
import type { Logger } from 'pino';
import type { NetworkJobObject, ObservedSegment } from '../../controllers/network/reconcile.js';
import { LoamError } from '../../crds/errors.js';
import type { Network } from '../../crds/v1alpha1/index.js';
import { type IpLink, Links } from '../network/links.js';
import { segmentLinks } from '../network/linux-plan.js';
import { networkId, networkNames, type RouterSettings } from '../network/model.js';
import { type CommandFailed, commandError, runCommand } from '../runtime/command.js';
import type { InventoryItem, ResourceRef } from '../runtime/driver.js';

/** What the host knows and the API does not: where its segments go. */
export type HostNetworkSettings = Pick<RouterSettings, 'trunk' | 'vxlan'>;

export interface HostNetworksOptions {
  settings: HostNetworkSettings;
  /**
   * The network agent on this same machine makes the bridges (`loam up` all in one): attach only
   * waits for the router's bridge, detach leaves it, and nothing is reported.
   */
  sharedWithRouter?: boolean;
  /** What actually runs for a command, e.g. `['ip', 'netns', 'exec', NS, ...argv]`; the command itself by default. */
  exec?: (argv: string[]) => string[];
  /** How long one command may take. */
  commandTimeoutMs?: number;
  logger: Logger;
}

const aliasPattern = /^loam:([a-z0-9-]+)\/([a-z0-9.-]+) uid=(\S+)$/;
const ownedLink = /^loam_([a-z2-7]{6})_/;

export class HostNetworks {
  readonly capabilities: readonly string[];
  private readonly links = new Links((argv) => this.run(argv));
  private readonly timeoutMs: number;

  constructor(private readonly options: HostNetworksOptions) {
    this.timeoutMs = options.commandTimeoutMs ?? 30_000;
    this.capabilities = ['vxlan', ...(options.settings.trunk ? ['vlan'] : [])];
  }

  /** Makes (or repairs) the Network's bridge and segment; answers the segment it is on. */
  async attach(object: NetworkJobObject): Promise<ObservedSegment> {
    const { segment } = object.status;
    const id = networkId(object as unknown as Network);
    const names = networkNames(id, segment);
    const found = await this.links.list();
    if (this.options.sharedWithRouter) {
      if (!found.has(names.bridge)) {
        throw new LoamError(
          'Unavailable',
          `waiting for the network agent on this machine to make bridge ${names.bridge} of Network ${keyOf(object)}`,
        );
      }
      return { segment };
    }
    if (segment.type === 'vlan' && !this.options.settings.trunk) {
      throw new LoamError(
        'Invalid',
        `Network ${keyOf(object)} is on VLAN ${segment.id}, and this host has no --trunk device for VLAN segments`,
      );
    }
    const [bridge, port] = segmentLinks(names, segment, this.options.settings);
    const wanted = [{ ...bridge, alias: aliasOf(object) }, port];
    // A segment of the other type, from before the Network moved.
    for (const name of found.keys()) {
      if (ownedLink.exec(name)?.[1] === id && !wanted.some((link) => link.name === name)) {
        await this.run(['ip', 'link', 'delete', name]);
      }
    }
    for (const link of wanted) await this.links.ensure(link, found.get(link.name));
    this.options.logger.info({ network: keyOf(object), bridge: names.bridge, segment }, 'network attached');
    return { segment };
  }

  /** Removes the Network's bridge and segment; a Network never attached is fine. */
  async detach(object: NetworkJobObject): Promise<{ deleted: true }> {
    if (this.options.sharedWithRouter) return { deleted: true };
    const id = networkId(object as unknown as Network);
    for (const name of (await this.links.list()).keys()) {
      if (ownedLink.exec(name)?.[1] === id) await this.run(['ip', 'link', 'delete', name]);
    }
    this.options.logger.info({ network: keyOf(object) }, 'network detached');
    return { deleted: true };
  }

  /** The Networks whose bridges this agent made, with the segment of each. */
  async inventory(): Promise<InventoryItem[]> {
    if (this.options.sharedWithRouter) return [];
    const links = await this.links.list();
    return [...links.values()].flatMap((link) => {
      const match = aliasPattern.exec(link.ifalias ?? '');
      if (!match || link.linkinfo?.info_kind !== 'bridge') return [];
      const [, namespace = '', name = '', uid = ''] = match;
      const segment = segmentOf(links, link.ifname);
      const ref: ResourceRef = { kind: 'Network', namespace, name, uid };
      return segment ? [{ ref, observed: { segment } satisfies ObservedSegment }] : [];
    });
  }

  private run(argv: string[]): Promise<string> {
    const wrapped = this.options.exec?.(argv) ?? argv;
    return runCommand(wrapped, { timeoutMs: this.timeoutMs, shownAs: argv }).catch((err: CommandFailed) => {
      throw commandError(err);
    });
  }
}

function keyOf(object: NetworkJobObject): string {
  return `${object.metadata.namespace}/${object.metadata.name}`;
}

function aliasOf(object: NetworkJobObject): string {
  return `loam:${keyOf(object)} uid=${object.metadata.uid}`;
}

/** The segment of the bridge's VXLAN or VLAN port, as ip reports it. */
function segmentOf(
  links: ReadonlyMap<string, IpLink>,
  bridge: string,
): ObservedSegment['segment'] | undefined {
  for (const link of links.values()) {
    const kind = link.linkinfo?.info_kind;
    const id = Number(link.linkinfo?.info_data?.id);
    if (link.master === bridge && (kind === 'vxlan' || kind === 'vlan') && Number.isInteger(id)) {
      return { type: kind, id };
    }
  }
  return undefined;
}

/**
 * The bridge of Network `namespace/name` on a host, which its Instances' NICs join: named as the
 * network agent names its bridge, so a host that is also the router shares it.
 */
export function bridgeName(namespace: string, name: string): string {
  const id = networkId({ metadata: { namespace, name } } as Network);
  return networkNames(id, { type: 'vxlan', id: 0 }).bridge;
}
