/**
 * A TEST DOUBLE of OpenWrt's rpcd as uhttpd serves it (ubus JSON-RPC on POST /ubus), on
 * 127.0.0.1, behaving as DESIGN.md §8 records the real ubusd + rpcd + uhttpd stack does:
 * - JSON-RPC 2.0 `call` with params `[session, object, method, args]`; the answer's result is
 *   `[status]` or `[status, data]` with ubus's status codes (0 ok, 2 invalid argument, 4 not
 *   found, 5 no data, 6 permission denied, 7 timeout).
 * - `session login` with the null session (32 zeros) answers `[0, {ubus_rpc_session, timeout,
 *   acls, …}]`, a wrong user or password `[6]`. Any other call without a live session is the
 *   JSON-RPC error -32002 Access denied.
 * - `uci get/set/add/delete` work on the session's staged changes (`uci changes` lists them);
 *   the "files" change only through `uci apply` or `uci commit`.
 * - `uci apply {rollback: true, timeout: N}` writes the session's changes to the files and starts
 *   a rollback timer; `confirm` stops it (`[5]` when nothing is pending). Without a confirm within
 *   N seconds the files are restored and the changes are the session's pending edits again; `uci
 *   rollback` does that at once. While an apply is pending, `commit` and another rollback apply
 *   answer `[6]`; apply with nothing staged (e.g. after a commit) answers `[5]`.
 * - `luci.wireguard getWgInstances` answers `wg show all dump` (wireguardDump) as LuCI's ucode
 *   backend does: per interface its public key, port and fwmark, and its peers with every dump
 *   field as a string, named after the description of their wireguard_<interface> section.
 * - `luci-rpc getDHCPLeases {family}` reads dnsmasq's lease file (dhcpLeases) as rpcd-mod-luci
 *   does: per lease its seconds left in `expires` (0 once expired, false if it never expires), its
 *   MAC in capitals as `macaddr`, `ipaddr`, and `hostname` and `duid` unless `*`.
 * The files are UCI text, parsed and written with uci-format.ts as libuci would (a commit rewrites
 * the whole file). Sections are addressed by name only: anonymous ones are listed by `uci get`
 * under libuci's generated `cfgXXXXXX` names but cannot be changed through the double.
 */

import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  applyBatch,
  parseUci,
  serializeUci,
  type UciCommand,
  type UciSection,
} from '../../../agents/network/uci-format.js';

export const nullSession = '0'.repeat(32);

/** One call the double answered (logins included). */
export interface RecordedCall {
  session: string;
  object: string;
  method: string;
  args: Record<string, unknown>;
}

interface Session {
  user: string;
  /** Staged changes by config, as `uci batch` commands. */
  changes: Map<string, UciCommand[]>;
}

interface PendingApply {
  session: string;
  /** The files and the staged changes as they were before the apply. */
  files: Map<string, string>;
  changes: Map<string, UciCommand[]>;
  timer: NodeJS.Timeout;
}

type Result = [number] | [number, unknown];

class RpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

export interface RpcdDoubleOptions {
  /** user → password */
  users: Record<string, string>;
  /** config name → UCI text, e.g. stock /etc/config/network. */
  files: Record<string, string>;
}

/**
 * Emits 'rollback' (with 'timeout' or 'requested') when an apply is undone, and 'confirm' when one
 * is confirmed.
 */
export class RpcdDouble extends EventEmitter {
  readonly files: Map<string, string>;
  readonly calls: RecordedCall[] = [];
  /** When true, every connection is dropped before it is answered: the router is lost. */
  unreachable = false;
  /** When true, the router is lost right after the next successful `uci apply` answered. */
  loseAfterApply = false;
  /** What `wg show all dump` prints on the router. */
  wireguardDump = '';
  /** The content of dnsmasq's lease file on the router. */
  dhcpLeases = '';
  private readonly users: Record<string, string>;
  private readonly sessions = new Map<string, Session>();
  private pending: PendingApply | undefined;
  private readonly server: Server;

  constructor(options: RpcdDoubleOptions) {
    super();
    this.users = options.users;
    this.files = new Map(Object.entries(options.files));
    this.server = createServer((req, res) => this.serve(req, res));
  }

  /** Listens on 127.0.0.1, a free port; resolves to the /ubus URL. */
  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/ubus`;
  }

  async close(): Promise<void> {
    if (this.pending) clearTimeout(this.pending.timer);
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** The sections of a config file as they are now. */
  sections(config: string): UciSection[] {
    return parseUci(this.files.get(config) ?? '');
  }

  /** The changes `session` has staged, by config. */
  staged(session: string): Record<string, UciCommand[]> {
    return Object.fromEntries(this.sessions.get(session)?.changes ?? []);
  }

  /** Calls that change something: staging, apply, commit, confirm, rollback. */
  writes(): RecordedCall[] {
    const reads = ['login', 'get', 'changes', 'board', 'getWgInstances', 'getDHCPLeases'];
    return this.calls.filter((call) => !reads.includes(call.method));
  }

  private serve(req: IncomingMessage, res: ServerResponse): void {
    if (this.unreachable) {
      req.socket.destroy();
      return;
    }
    if (req.method !== 'POST' || req.url !== '/ubus') {
      res.writeHead(404).end();
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      let id: unknown = null;
      let body: unknown;
      try {
        const request = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
          id?: unknown;
          method?: unknown;
          params?: unknown;
        };
        id = request.id ?? null;
        body = { jsonrpc: '2.0', id, result: this.call(request.method, request.params) };
      } catch (err) {
        if (!(err instanceof RpcError)) throw err;
        body = { jsonrpc: '2.0', id, error: { code: err.code, message: err.message } };
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      if (this.loseAfterApply && this.calls.at(-1)?.method === 'apply') {
        const last = (body as { result?: Result }).result;
        if (last?.[0] === 0) this.unreachable = true;
      }
    });
  }

  private call(method: unknown, params: unknown): Result {
    if (method !== 'call') throw new RpcError(-32601, 'Method not found');
    if (!Array.isArray(params) || params.length !== 4) throw new RpcError(-32602, 'Invalid params');
    const [sid, object, name, args] = params as [string, string, string, Record<string, unknown>];
    this.calls.push({ session: sid, object, method: name, args });
    if (object === 'session' && name === 'login' && sid === nullSession) return this.login(args);
    const session = this.sessions.get(sid);
    if (!session) throw new RpcError(-32002, 'Access denied');
    if (object === 'system' && name === 'board') {
      return [0, { hostname: 'OpenWrt', model: 'Loam test double', release: { version: '23.05.5' } }];
    }
    if (object === 'luci.wireguard' && name === 'getWgInstances') return [0, this.wgInstances()];
    if (object === 'luci-rpc' && name === 'getDHCPLeases') return this.leases(args);
    if (object !== 'uci') throw new RpcError(-32000, 'Object not found');
    switch (name) {
      case 'get':
        return this.get(session, args);
      case 'set':
        return this.set(session, args);
      case 'add':
        return this.add(session, args);
      case 'delete':
        return this.remove(session, args);
      case 'changes':
        return this.changes(session, args);
      case 'commit':
        return this.commit(session, args);
      case 'apply':
        return this.apply(sid, session, args);
      case 'confirm':
        return this.confirm(sid);
      case 'rollback':
        return this.rollback(sid, 'requested');
      default:
        throw new RpcError(-32601, 'Method not found');
    }
  }

  private login(args: Record<string, unknown>): Result {
    const { username, password } = args;
    if (
      typeof username !== 'string' ||
      this.users[username] === undefined ||
      this.users[username] !== password
    ) {
      return [6];
    }
    const id = createHash('md5').update(`${username}${Math.random()}`).digest('hex');
    this.sessions.set(id, { user: username, changes: new Map() });
    return [
      0,
      {
        ubus_rpc_session: id,
        timeout: 300,
        expires: 300,
        acls: {
          'access-group': { uci: ['read', 'write'] },
          ubus: { '*': ['*'] },
          uci: { '*': ['read', 'write'] },
        },
        data: { username },
      },
    ];
  }

  /** The config as `session` sees it: the file with its staged changes. */
  private view(session: Session, config: string): UciSection[] | undefined {
    const text = this.files.get(config);
    if (text === undefined) return undefined;
    const changes = session.changes.get(config) ?? [];
    return applyBatch({ [config]: parseUci(text) }, changes)[config];
  }

  private get(session: Session, args: Record<string, unknown>): Result {
    const { config, section, option } = args;
    if (typeof config !== 'string') return [2];
    const sections = this.view(session, config);
    if (!sections) return [4];
    const values = Object.fromEntries(sections.map((s, index) => [nameOf(s, index), ubusSection(s, index)]));
    if (section === undefined) return [0, { values }];
    const found = values[section as string];
    if (!found) return [4];
    if (option === undefined) return [0, { values: found }];
    const value = found[option as string];
    return value === undefined ? [4] : [0, { value }];
  }

  private stage(session: Session, config: string, commands: UciCommand[]): Result {
    const sections = this.view(session, config);
    if (!sections) return [4];
    try {
      applyBatch({ [config]: sections }, commands);
    } catch {
      return [4];
    }
    session.changes.set(config, [...(session.changes.get(config) ?? []), ...commands]);
    return [0];
  }

  private set(session: Session, args: Record<string, unknown>): Result {
    const { config, section, values } = args;
    if (typeof config !== 'string' || typeof section !== 'string' || !isRecord(values)) return [2];
    const current = this.view(session, config)?.find((s) => s.name === section);
    if (!current) return [4];
    const commands = optionCommands(config, section, values, current);
    return commands ? this.stage(session, config, commands) : [2];
  }

  private add(session: Session, args: Record<string, unknown>): Result {
    const { config, type, name, values } = args;
    if (typeof config !== 'string' || typeof type !== 'string' || typeof name !== 'string') return [2];
    if (!/^[A-Za-z0-9_]+$/.test(name) || (values !== undefined && !isRecord(values))) return [2];
    const commands: UciCommand[] = [{ verb: 'set', config, section: name, value: type }];
    const more = optionCommands(config, name, (values ?? {}) as Record<string, unknown>, undefined);
    if (!more) return [2];
    const result = this.stage(session, config, [...commands, ...more]);
    return result[0] === 0 ? [0, { section: name }] : result;
  }

  private remove(session: Session, args: Record<string, unknown>): Result {
    const { config, section, option, options } = args;
    if (typeof config !== 'string' || typeof section !== 'string') return [2];
    const names = option !== undefined ? [option] : Array.isArray(options) ? options : undefined;
    if (names && !names.every((n) => typeof n === 'string')) return [2];
    const commands: UciCommand[] = names
      ? (names as string[]).map((o) => ({ verb: 'delete', config, section, option: o }))
      : [{ verb: 'delete', config, section }];
    return this.stage(session, config, commands);
  }

  private changes(session: Session, args: Record<string, unknown>): Result {
    const listed = (config: string) => (session.changes.get(config) ?? []).map(deltaEntry);
    if (typeof args.config === 'string') return [0, { changes: listed(args.config) }];
    const configs = [...session.changes.keys()].filter((c) => (session.changes.get(c) ?? []).length > 0);
    return [0, { changes: Object.fromEntries(configs.map((c) => [c, listed(c)])) }];
  }

  private commit(session: Session, args: Record<string, unknown>): Result {
    if (this.pending) return [6];
    if (typeof args.config !== 'string') return [2];
    this.write(session, [args.config]);
    return [0];
  }

  private apply(sid: string, session: Session, args: Record<string, unknown>): Result {
    const rollback = args.rollback === true;
    if (this.pending && rollback) return [6];
    const configs = [...session.changes.keys()].filter((c) => (session.changes.get(c) ?? []).length > 0);
    if (configs.length === 0) return [5];
    const files = new Map(configs.map((c) => [c, this.files.get(c) ?? '']));
    const changes = new Map(configs.map((c) => [c, [...(session.changes.get(c) ?? [])]]));
    this.write(session, configs);
    if (rollback) {
      const timeout = typeof args.timeout === 'number' ? args.timeout : 30;
      const timer = setTimeout(() => this.rollback(sid, 'timeout'), timeout * 1000);
      this.pending = { session: sid, files, changes, timer };
    }
    return [0];
  }

  private confirm(sid: string): Result {
    if (!this.pending) return [5];
    if (this.pending.session !== sid) return [6];
    clearTimeout(this.pending.timer);
    this.pending = undefined;
    this.emit('confirm');
    return [0];
  }

  private rollback(sid: string, why: 'timeout' | 'requested'): Result {
    const pending = this.pending;
    if (!pending) return [5];
    if (pending.session !== sid) return [6];
    clearTimeout(pending.timer);
    this.pending = undefined;
    for (const [config, text] of pending.files) this.files.set(config, text);
    const session = this.sessions.get(sid);
    if (session) for (const [config, changes] of pending.changes) session.changes.set(config, changes);
    this.emit('rollback', why);
    return [0];
  }

  private wgInstances(): Record<string, unknown> {
    const data: Record<string, { peers: Record<string, unknown>[]; [field: string]: unknown }> = {};
    let last: string | undefined;
    for (const line of this.wireguardDump.split('\n').filter(Boolean)) {
      const record = line.split('\t');
      const device = record[0] ?? '';
      if (device !== last) {
        last = device;
        data[device] = {
          name: device,
          public_key: record[2],
          listen_port: record[3],
          fwmark: record[4],
          peers: [],
        };
        continue;
      }
      const described = this.sections('network').find(
        (s) => s.type === `wireguard_${device}` && s.options.public_key === record[1],
      );
      data[device]?.peers.push({
        name: described?.options.description,
        public_key: record[1],
        endpoint: record[3],
        allowed_ips: record[3] !== '(none)' && record[4] ? record[4].split(',') : [],
        latest_handshake: record[5],
        transfer_rx: record[6],
        transfer_tx: record[7],
        persistent_keepalive: record[8],
      });
    }
    return data;
  }

  private leases(args: Record<string, unknown>): Result {
    const family = args.family ?? 0;
    if (family !== 0 && family !== 4 && family !== 6) return [2];
    const now = Math.floor(Date.now() / 1000);
    const v4: Record<string, unknown>[] = [];
    const v6: Record<string, unknown>[] = [];
    for (const line of this.dhcpLeases.split('\n')) {
      const [expiry = '', mac = '', address = '', hostname, duid] = line.trim().split(/\s+/);
      if (!/^\d+$/.test(expiry) || hostname === undefined || duid === undefined) continue;
      const n = Number(expiry);
      const lease = {
        expires: n > now ? n - now : n > 0 ? 0 : false,
        ...(hostname === '*' ? {} : { hostname }),
        ...(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(mac) ? { macaddr: mac.toUpperCase() } : {}),
        ...(duid === '*' ? {} : { duid }),
      };
      if (address.includes(':')) v6.push({ ...lease, ip6addr: address, ip6addrs: [address] });
      else v4.push({ ...lease, ipaddr: address });
    }
    return [
      0,
      {
        ...(family !== 6 ? { dhcp_leases: v4 } : {}),
        ...(family !== 4 ? { dhcp6_leases: v6 } : {}),
      },
    ];
  }

  /** Writes `configs` as the session sees them, as libuci's commit does, and clears their changes. */
  private write(session: Session, configs: string[]): void {
    for (const config of configs) {
      const sections = this.view(session, config);
      if (sections) this.files.set(config, serializeUci(sections));
      session.changes.delete(config);
    }
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** `uci set` values as batch commands: a string sets an option, an array replaces a list. */
function optionCommands(
  config: string,
  section: string,
  values: Record<string, unknown>,
  current: UciSection | undefined,
): UciCommand[] | undefined {
  const commands: UciCommand[] = [];
  for (const [option, value] of Object.entries(values)) {
    if (!/^[A-Za-z0-9_]+$/.test(option)) return undefined;
    if (typeof value === 'string') {
      commands.push({ verb: 'set', config, section, option, value });
    } else if (Array.isArray(value) && value.every((v) => typeof v === 'string')) {
      if (current?.options[option] !== undefined) commands.push({ verb: 'delete', config, section, option });
      commands.push(
        ...value.map((v: string) => ({ verb: 'add_list' as const, config, section, option, value: v })),
      );
    } else return undefined;
  }
  return commands;
}

/** libuci's name of an anonymous section: cfg, its index and a hash of its type. */
function nameOf(section: UciSection, index: number): string {
  if (section.name !== undefined) return section.name;
  const hash = createHash('sha1').update(section.type).digest('hex').slice(0, 4);
  return `cfg${index.toString(16).padStart(2, '0')}${hash}`;
}

function ubusSection(section: UciSection, index: number): Record<string, unknown> {
  return {
    '.anonymous': section.name === undefined,
    '.type': section.type,
    '.name': nameOf(section, index),
    '.index': index,
    ...section.options,
  };
}

/** A staged change as `uci changes` lists it (libuci's delta commands). */
function deltaEntry(command: UciCommand): string[] {
  const option = command.option === undefined ? [] : [command.option];
  if (command.verb === 'delete') return ['remove', command.section, ...option];
  if (command.verb === 'add_list') return ['list-add', command.section, command.option, command.value];
  return ['set', command.section, ...option, command.value];
}
