/**
 * Converging iproute2 links to a plan (linux-plan.ts's LinuxLink): read what is there, run a
 * command only for what differs, make anew a link of the wrong kind or settings. Shared by the
 * router's linux driver and the libvirt agent's host bridges.
 */
import type { LinuxLink } from './linux-plan.js';

/** Runs one command (through `ip netns exec` or not) and resolves to its stdout. */
export type Run = (argv: string[]) => Promise<string>;

/** What `ip -j -d link show` says of a link. */
export interface IpLink {
  ifname: string;
  flags: string[];
  master?: string;
  link?: string;
  ifalias?: string;
  linkinfo?: { info_kind?: string; info_data?: Record<string, unknown> };
}

/** The all-zero FDB entry of a VXLAN device: broadcast and unknown traffic goes to its dst. */
const floodMac = '00:00:00:00:00:00';

/** Steps a caller adds to a link's convergence. */
export interface LinkHooks {
  /** Makes the link; `ip link add name … <args>` by default. */
  add?(link: LinuxLink): Promise<void>;
  /** Runs after the link exists with its master and flood list, before its addresses. */
  configure?(link: LinuxLink): Promise<void>;
}

export class Links {
  constructor(private readonly run: Run) {}

  async list(): Promise<Map<string, IpLink>> {
    const shown = JSON.parse(await this.run(['ip', '-j', '-d', 'link', 'show'])) as IpLink[];
    return new Map(shown.map((link) => [link.ifname, link]));
  }

  /** Creates or repairs one link (`found` is what list() said of it); true when it had to be created. */
  async ensure(link: LinuxLink, found: IpLink | undefined, hooks: LinkHooks = {}): Promise<boolean> {
    let current = found;
    if (current && !sameLink(link, current)) {
      await this.run(['ip', 'link', 'delete', link.name]);
      current = undefined;
    }
    if (!current) {
      if (hooks.add) await hooks.add(link);
      else await this.run(['ip', 'link', 'add', 'name', link.name, ...link.args]);
    }
    const fresh = current === undefined;
    if (link.master && current?.master !== link.master) {
      await this.run(['ip', 'link', 'set', link.name, 'master', link.master]);
    }
    if (link.alias !== undefined && current?.ifalias !== link.alias) {
      await this.run(['ip', 'link', 'set', link.name, 'alias', link.alias]);
    }
    if (link.kind === 'vxlan') await this.syncFlood(link, fresh);
    await hooks.configure?.(link);
    await this.syncAddresses(link, fresh);
    if (!current?.flags.includes('UP')) await this.run(['ip', 'link', 'set', link.name, 'up']);
    await this.syncRoutes(link, fresh);
    return fresh;
  }

  private async syncFlood(link: LinuxLink, fresh: boolean): Promise<void> {
    const entries = fresh
      ? []
      : (JSON.parse(await this.run(['bridge', '-j', 'fdb', 'show', 'dev', link.name])) as {
          mac: string;
          dst?: string;
        }[]);
    const current = entries.flatMap((e) => (e.mac === floodMac && e.dst ? [e.dst] : []));
    for (const remote of link.flood.filter((r) => !current.includes(r))) {
      await this.run(['bridge', 'fdb', 'append', floodMac, 'dev', link.name, 'dst', remote]);
    }
    for (const remote of current.filter((r) => !link.flood.includes(r))) {
      await this.run(['bridge', 'fdb', 'delete', floodMac, 'dev', link.name, 'dst', remote]);
    }
  }

  private async syncAddresses(link: LinuxLink, fresh: boolean): Promise<void> {
    const shown = fresh
      ? []
      : (JSON.parse(await this.run(['ip', '-j', 'address', 'show', 'dev', link.name])) as {
          addr_info?: { family: string; local: string; prefixlen: number }[];
        }[]);
    const current = shown.flatMap((l) =>
      (l.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`),
    );
    for (const address of link.addresses.filter((a) => !current.includes(a))) {
      await this.run(['ip', 'address', 'replace', address, 'dev', link.name]);
    }
    for (const address of current.filter((a) => !link.addresses.includes(a))) {
      await this.run(['ip', 'address', 'delete', address, 'dev', link.name]);
    }
  }

  private async syncRoutes(link: LinuxLink, fresh: boolean): Promise<void> {
    const shown = fresh
      ? []
      : (JSON.parse(await this.run(['ip', '-j', 'route', 'show', 'dev', link.name])) as {
          dst: string;
          protocol?: string;
        }[]);
    // The kernel's own routes (the prefix of each address) are not Loam's to manage.
    const current = shown
      .filter((r) => r.protocol !== 'kernel')
      .map((r) => (r.dst.includes('/') ? r.dst : `${r.dst}/32`));
    for (const route of link.routes.filter((r) => !current.includes(r))) {
      await this.run(['ip', 'route', 'replace', route, 'dev', link.name]);
    }
    for (const route of current.filter((r) => !link.routes.includes(r))) {
      await this.run(['ip', 'route', 'delete', route, 'dev', link.name]);
    }
  }
}

/** Whether `current` is what `link` asks for; a link that is not is made anew. */
export function sameLink(link: LinuxLink, current: IpLink): boolean {
  const kind = current.linkinfo?.info_kind;
  if (link.kind === 'wireguard') return kind === 'wireguard' || kind === 'tun';
  if (kind !== link.kind) return false;
  const args = new Map<string, string>();
  for (let i = 0; i + 1 < link.args.length; i += 2) args.set(link.args[i] ?? '', link.args[i + 1] ?? '');
  const data = current.linkinfo?.info_data ?? {};
  const same = (field: string, arg: string) =>
    (data[field] === undefined ? undefined : String(data[field])) === args.get(arg);
  if (link.kind === 'vxlan') {
    return (
      same('id', 'id') &&
      same('port', 'dstport') &&
      same('local', 'local') &&
      same('link', 'dev') &&
      same('group', 'group')
    );
  }
  if (link.kind === 'vlan') return same('id', 'id') && current.link === args.get('link');
  return true;
}
