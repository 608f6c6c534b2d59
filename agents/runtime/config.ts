/**
 * An agent's configuration: flags win over LOAM_AGENT_* environment variables, which win over a
 * YAML or JSON file (--config), which wins over defaults. One table names every setting, so the
 * flag, the variable and the file key cannot drift apart, and every error names the setting the
 * way the user wrote it (`--ca-pin`, `LOAM_AGENT_CA_PIN` or `caPin in FILE`).
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { isAbsolute } from 'node:path';
import YAML from 'yaml';
import { z } from 'zod';
import type { AgentRole } from '../../controllers/pki/certificates.js';
import { LoamError } from '../../crds/errors.js';
import { dnsLabel, hostPort, networkHost } from '../../crds/formats.js';
import { parseQuantity } from '../../crds/quantity.js';

export const logLevels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/**
 * Fixed local ports, one per role, so Prometheus has a stable target and a libvirt agent and a
 * network agent can share a machine (as under `loam up`). Port 0 picks a free port.
 */
export const defaultMetricsAddress: Record<AgentRole, string> = {
  libvirt: '127.0.0.1:9470',
  network: '127.0.0.1:9471',
};

/**
 * Every setting: the flag's value name, help and fixed default (the name's depends on the host,
 * the metrics address's on the role), and the roles it belongs to when not all. The flag and
 * variable names derive from the key.
 */
export const agentSettings = {
  server: { value: 'host:port', help: "the control plane's agent hub" },
  token: { value: 'token', help: 'bootstrap token for the first start (loam token create)' },
  caPin: { value: 'sha256:hex', help: "hash of the control plane CA's public key, checked before enrolling" },
  dataDir: { value: 'dir', help: 'where the agent keeps its identity (key, certificate, CA)' },
  name: { value: 'name', help: "this agent's name, a DNS label (default: the hostname's first label)" },
  metricsAddress: { value: 'host:port', help: 'local address of /metrics and /healthz; port 0 picks one' },
  logLevel: { value: 'level', help: `log level: ${logLevels.join(', ')}`, default: 'info' },
  renewAt: {
    value: 'fraction',
    help: 'renew the certificate at this fraction of its lifetime',
    default: 0.8,
  },
  backoffInitial: { value: 'seconds', help: 'first reconnect delay', default: 0.5 },
  backoffMax: { value: 'seconds', help: 'longest reconnect delay', default: 30 },
  libvirtUri: {
    value: 'uri',
    help: "libvirt connection URI (test:///default is libvirt's built-in test driver: no VMs run)",
    default: 'qemu:///system',
    roles: ['libvirt'],
  },
  storageDir: {
    value: 'dir',
    help: 'where instance disks, console logs and the image cache go',
    default: '/var/lib/loam-libvirt',
    roles: ['libvirt'],
  },
  // As kubelet's --system-reserved: the host OS, libvirtd, QEMU's own overhead and this agent
  // need memory that overcommitting would take from the guests; vCPUs share cores, so none are
  // kept by default (a whole CPU would be half of a small host).
  reservedCpus: {
    value: 'n',
    help: 'cpus the host keeps for itself: Instances are scheduled against its cpus minus these',
    default: 0,
    roles: ['libvirt'],
  },
  reservedMemory: {
    value: 'quantity',
    help: 'memory the host keeps for itself (host OS, libvirtd, QEMU overhead): Instances are scheduled against its memory minus this',
    default: '512Mi',
    roles: ['libvirt'],
  },
  stateDir: {
    value: 'dir',
    help: 'where the Networks served, their WireGuard keys and the nftables, dnsmasq and WireGuard files go',
    default: '/var/lib/loam/network',
    roles: ['network'],
  },
  driver: {
    value: 'linux|openwrt',
    help: 'how Networks are made real: linux (iproute2, nftables, dnsmasq, WireGuard on this machine) or openwrt (UCI, see --uci-transport)',
    default: 'linux',
    roles: ['network'],
  },
  uciTransport: {
    value: 'rpcd|local',
    help: "openwrt: how UCI is reached: rpcd (the router's ubus JSON-RPC at --rpcd-url; the default) or local (the uci command, when the agent runs on the router)",
    roles: ['network'],
  },
  rpcdUrl: {
    value: 'url',
    help: "openwrt: the router's ubus JSON-RPC endpoint, e.g. https://192.168.1.1/ubus",
    roles: ['network'],
  },
  rpcdUser: { value: 'user', help: 'openwrt: the rpcd login', default: 'root', roles: ['network'] },
  rpcdPasswordFile: {
    value: 'file',
    help: "openwrt: file holding the rpcd login's password (read at each login, never logged)",
    roles: ['network'],
  },
  rpcdCaFile: {
    value: 'file',
    help: "openwrt: PEM CA certificate trusted for an https --rpcd-url (uhttpd's self-signed one)",
    roles: ['network'],
  },
  wan: {
    value: 'device',
    help: 'the WAN device egress is masqueraded out of (default eth0); openwrt: the WAN firewall zone (default wan)',
    roles: ['network'],
  },
  trunk: {
    value: 'device',
    help: 'the parent device of VLAN segments (vlan Networks only)',
    roles: ['network', 'libvirt'],
  },
  vxlanPort: {
    value: 'port',
    help: 'UDP port of VXLAN segments',
    default: 4789,
    roles: ['network', 'libvirt'],
  },
  vxlanLocal: {
    value: 'address',
    help: 'source address of VXLAN segments (default: the kernel chooses)',
    roles: ['network', 'libvirt'],
  },
  vxlanUplink: { value: 'device', help: 'underlay device of VXLAN segments', roles: ['network', 'libvirt'] },
  vxlanGroup: {
    value: 'address',
    help: 'multicast group VXLAN segments flood through, instead of copies to --vxlan-remotes',
    roles: ['network', 'libvirt'],
  },
  vxlanRemotes: {
    value: 'addresses',
    help: "comma-separated VXLAN endpoints broadcasts are copied to: a router's hypervisors; a hypervisor's router and other hypervisors",
    roles: ['network', 'libvirt'],
  },
  wireguardEndpoint: {
    value: 'host',
    help: "public name or address WireGuard clients dial, reported with each Network's port",
    roles: ['network'],
  },
  resyncInterval: {
    value: 'seconds',
    help: 'linux: how often the router is checked against the Networks it serves, and repaired',
    default: 60,
    roles: ['network'],
  },
} as const satisfies Record<
  string,
  { value: string; help: string; default?: string | number; roles?: readonly AgentRole[] }
>;

export type SettingKey = keyof typeof agentSettings;
export const settingKeys = Object.keys(agentSettings) as SettingKey[];

/** The settings a `role` agent has. */
export function settingKeysFor(role: AgentRole): SettingKey[] {
  return settingKeys.filter((key) => {
    const setting = agentSettings[key];
    return !('roles' in setting) || (setting.roles as readonly AgentRole[]).includes(role);
  });
}

export const configFileEnv = 'LOAM_AGENT_CONFIG';

/** The default a `role` agent shows in its help; the name's, which depends on the host, is not here. */
export function defaultFor(key: SettingKey, role: AgentRole): string | number | undefined {
  if (key === 'metricsAddress') return defaultMetricsAddress[role];
  const setting = agentSettings[key];
  return 'default' in setting ? setting.default : undefined;
}

export function flagName(key: string): string {
  return `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

export function envName(key: string): string {
  return `LOAM_AGENT_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
}

export interface AgentConfig {
  role: AgentRole;
  /** The hub, HOST:PORT. */
  server: string;
  /** Needed only to enroll: a later start uses the identity in dataDir. */
  token?: string;
  caPin?: string;
  dataDir: string;
  name: string;
  /** HOST:PORT; port 0 picks a free port. */
  metricsAddress: string;
  logLevel: (typeof logLevels)[number];
  renewAt: number;
  backoff: { initialMs: number; maxMs: number };
  /** libvirt agents only. */
  libvirtUri?: string;
  /** libvirt agents only; absolute. */
  storageDir?: string;
  /** libvirt agents only: what the host keeps for itself (cpus, a quantity). */
  reservedCpus?: number;
  reservedMemory?: string;
  /** Network agents only, as the rest below. */
  driver?: 'linux' | 'openwrt';
  /** openwrt only; rpcd when undefined. */
  uciTransport?: 'rpcd' | 'local';
  rpcdUrl?: string;
  rpcdUser?: string;
  rpcdPasswordFile?: string;
  rpcdCaFile?: string;
  /** Absolute. */
  stateDir?: string;
  wan?: string;
  trunk?: string;
  vxlanPort?: number;
  vxlanLocal?: string;
  vxlanUplink?: string;
  vxlanGroup?: string;
  vxlanRemotes?: string[];
  wireguardEndpoint?: string;
  resyncInterval?: number;
}

/** "host:port" or "[v6]:port" split; undefined when it is neither. */
export function splitHostPort(value: string): { host: string; port: number } | undefined {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value);
  if (!match) return undefined;
  return { host: match[1] ?? match[2] ?? '', port: Number(match[3]) };
}

function listenAddress() {
  return z.string().refine((value) => {
    const parts = splitHostPort(value);
    return (
      parts !== undefined &&
      parts.port <= 65535 &&
      (value.startsWith('[') ? isIP(parts.host) === 6 : networkHost().safeParse(parts.host).success)
    );
  }, 'must be host:port with an IP address or name and a port from 0 to 65535 (0 picks a free port)');
}

function device() {
  // What Linux accepts as an interface name.
  return z
    .string()
    .regex(/^[^\s/:]{1,15}$/, 'must be a network device name: 1 to 15 characters, no blanks, / or :')
    .optional();
}

function ipv4(message = 'must be an IPv4 address') {
  return z.string().refine((value) => isIP(value) === 4, message);
}

function reservedQuantity(value: string): boolean {
  try {
    return parseQuantity(value) >= 0n;
  } catch {
    return false;
  }
}

function seconds() {
  return z.coerce.number({ error: 'must be a number of seconds' }).positive('must be more than 0 seconds');
}

const schema = z
  .object({
    server: hostPort(),
    token: z
      .string()
      .regex(
        /^[a-z0-9]{6}\.[a-z0-9]{16}$/,
        'must be a bootstrap token [a-z0-9]{6}.[a-z0-9]{16}, as loam token create prints',
      )
      .optional(),
    caPin: z
      .string()
      .regex(
        /^sha256:[0-9a-f]{64}$/,
        "must be 'sha256:' and 64 lower-case hex digits, as loam token create prints",
      )
      .optional(),
    dataDir: z.string().min(1, 'must not be empty'),
    name: dnsLabel(),
    metricsAddress: listenAddress(),
    logLevel: z.enum(logLevels, { error: `must be one of ${logLevels.join(', ')}` }),
    renewAt: z.coerce
      .number({ error: 'must be a number' })
      .gt(0, 'must be between 0 and 1, exclusive')
      .lt(1, 'must be between 0 and 1, exclusive'),
    backoffInitial: seconds(),
    backoffMax: seconds(),
    libvirtUri: z
      .string()
      .regex(
        /^[a-z][a-z0-9+.-]*:\/\//,
        'must be a libvirt connection URI such as qemu:///system or test:///default',
      )
      .optional(),
    // Its paths go into domain XML, where libvirt takes only absolute ones.
    storageDir: z.string().refine(isAbsolute, 'must be an absolute path').optional(),
    reservedCpus: z.coerce
      .number({ error: 'must be a whole number of cpus' })
      .int('must be a whole number of cpus')
      .min(0, 'must not be negative')
      .optional(),
    // A number in the file, a string in a flag or variable: kept as a quantity string.
    reservedMemory: z
      .union([z.string(), z.number()])
      .transform(String)
      .refine(reservedQuantity, 'must be a quantity of 0 or more, such as 512Mi or 1Gi')
      .optional(),
    driver: z.enum(['linux', 'openwrt'], { error: 'must be linux or openwrt' }).optional(),
    uciTransport: z.enum(['rpcd', 'local'], { error: 'must be rpcd or local' }).optional(),
    rpcdUrl: z
      .string()
      .refine((value) => {
        try {
          return ['http:', 'https:'].includes(new URL(value).protocol);
        } catch {
          return false;
        }
      }, 'must be an http:// or https:// URL, e.g. https://192.168.1.1/ubus')
      .optional(),
    rpcdUser: z.string().min(1, 'must not be empty').optional(),
    rpcdPasswordFile: z.string().min(1, 'must not be empty').optional(),
    rpcdCaFile: z.string().min(1, 'must not be empty').optional(),
    // nft, dnsmasq and wg run with other working directories.
    stateDir: z.string().refine(isAbsolute, 'must be an absolute path').optional(),
    wan: device(),
    trunk: device(),
    vxlanPort: z.coerce
      .number({ error: 'must be a port number' })
      .int('must be a port number')
      .min(1, 'must be a port from 1 to 65535')
      .max(65535, 'must be a port from 1 to 65535')
      .optional(),
    vxlanLocal: ipv4().optional(),
    vxlanUplink: device(),
    vxlanGroup: ipv4()
      .refine(
        (value) => Number(value.split('.')[0]) >= 224 && Number(value.split('.')[0]) <= 239,
        'must be an IPv4 multicast address (224.0.0.0/4)',
      )
      .optional(),
    // A list in the file, comma-separated in a flag or variable.
    vxlanRemotes: z
      .union([
        z.string().transform((value) =>
          value
            .split(',')
            .map((item) => item.trim())
            .filter(Boolean),
        ),
        z.array(z.string()),
      ])
      .pipe(z.array(ipv4('must be IPv4 addresses, comma-separated')))
      .optional(),
    wireguardEndpoint: networkHost().optional(),
    resyncInterval: seconds().optional(),
  })
  .refine((c) => c.backoffMax >= c.backoffInitial, {
    path: ['backoffMax'],
    message: 'must not be less than backoffInitial',
  })
  .superRefine((c, ctx) => {
    if (c.driver !== 'openwrt' || c.uciTransport === 'local') return;
    for (const key of ['rpcdUrl', 'rpcdPasswordFile'] as const) {
      if (c[key] === undefined) ctx.addIssue({ code: 'custom', path: [key], message: 'required by openwrt' });
    }
  });

export interface ConfigSources {
  /** Flags as commander parsed them (camelCase keys); only flags the user gave. */
  flags: Partial<Record<SettingKey, string>>;
  env: Record<string, string | undefined>;
  file?: { path: string; text: string };
  hostname: string;
}

type Origin = { kind: 'flag' | 'env' | 'default' } | { kind: 'file'; path: string };

function label(key: SettingKey, origin: Origin | undefined, raw: unknown): string {
  switch (origin?.kind) {
    case 'env':
      return envName(key);
    case 'file':
      return `${key} in ${origin.path}`;
    case 'default':
      return `${flagName(key)} (defaulted to ${JSON.stringify(raw)})`;
    default:
      return flagName(key);
  }
}

function invalid(problems: string[]): LoamError {
  return new LoamError('Invalid', `invalid agent configuration: ${problems.join('; ')}`);
}

function parseFile(
  file: { path: string; text: string },
  keys: readonly SettingKey[],
): Record<string, unknown> {
  let values: unknown;
  try {
    values = YAML.parse(file.text);
  } catch (err) {
    throw invalid([`${file.path}: not YAML or JSON: ${(err as Error).message.split('\n')[0]}`]);
  }
  if (values === null || values === undefined) return {};
  if (typeof values !== 'object' || Array.isArray(values)) {
    throw invalid([`${file.path}: must be a mapping of settings (${keys.join(', ')})`]);
  }
  const unknown = Object.keys(values).filter((key) => !(keys as string[]).includes(key));
  if (unknown.length > 0) {
    throw invalid(
      unknown.map((key) => `${key} in ${file.path}: unknown setting (known: ${keys.join(', ')})`),
    );
  }
  return values as Record<string, unknown>;
}

/** The configuration of a `role` agent from its sources; a LoamError naming each bad setting. */
export function resolveAgentConfig(role: AgentRole, sources: ConfigSources): AgentConfig {
  const keys = settingKeysFor(role);
  const fileValues = sources.file ? parseFile(sources.file, keys) : {};
  // Hostnames are often FQDNs or mixed case; an agent's name is one lower-case label.
  const defaultName = sources.hostname.split('.')[0]?.toLowerCase();
  const raw: Record<string, unknown> = {};
  const origins = new Map<SettingKey, Origin>();
  for (const key of keys) {
    const env = sources.env[envName(key)];
    const candidates: [unknown, Origin][] = [
      [sources.flags[key], { kind: 'flag' }],
      [env === '' ? undefined : env, { kind: 'env' }],
      [fileValues[key], { kind: 'file', path: sources.file?.path ?? '' }],
      [key === 'name' ? defaultName : defaultFor(key, role), { kind: 'default' }],
    ];
    const found = candidates.find(([value]) => value !== undefined);
    if (found) {
      raw[key] = found[0];
      origins.set(key, found[1]);
    }
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    throw invalid(
      parsed.error.issues.map((issue) => {
        const key = issue.path[0] as SettingKey;
        if (raw[key] === undefined) {
          const by = raw.driver === 'openwrt' && key.startsWith('rpcd') ? ' with --driver openwrt' : '';
          return `${flagName(key)} is required${by} (or ${envName(key)}, or ${key} in the --config file)`;
        }
        return `${label(key, origins.get(key), raw[key])}: ${issue.message}`;
      }),
    );
  }
  const { backoffInitial, backoffMax, ...rest } = parsed.data;
  return {
    role,
    ...rest,
    backoff: { initialMs: Math.round(backoffInitial * 1000), maxMs: Math.round(backoffMax * 1000) },
  };
}

/** The configuration from this process's flags and environment, and the --config file they name. */
export function loadAgentConfig(
  role: AgentRole,
  flags: Partial<Record<SettingKey | 'config', string>>,
  env: Record<string, string | undefined> = process.env,
): AgentConfig {
  const path = flags.config ?? (env[configFileEnv] || undefined);
  let file: ConfigSources['file'];
  if (path !== undefined) {
    try {
      file = { path, text: readFileSync(path, 'utf8') };
    } catch (err) {
      throw invalid([
        `--config: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      ]);
    }
  }
  return resolveAgentConfig(role, { flags, env, ...(file ? { file } : {}), hostname: hostname() });
}
