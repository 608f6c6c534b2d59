/**
 * The openwrt driver's rpcd transport: UCI through rpcd's ubus JSON-RPC (uhttpd's POST /ubus), the
 * way LuCI applies a change: stage it in an rpcd session, `uci apply` with rollback, then `uci
 * confirm` once the router still answers, so a change that cuts the agent off is undone by the
 * router itself when the rollback timeout passes. The metrics read LuCI's own backends:
 * `luci.wireguard getWgInstances` (luci-proto-wireguard) and `luci-rpc getDHCPLeases` (luci-base).
 */

import { readFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { setTimeout as delay } from 'node:timers/promises';
import { type ErrorCode, isLoamError, LoamError } from '../../../crds/errors.js';
import type { AgentCondition } from '../../runtime/driver.js';
import { uciConfigNames } from '../uci.js';
import type { UciCommand, UciSection, UciValue } from '../uci-format.js';
import { parseWireguardDump, type WireguardPeerStats } from '../wireguard-stats.js';
import { boardFacts, type UciTransport, uciReachable } from './openwrt.js';

export interface RpcdTransportOptions {
  /** e.g. https://192.168.1.1/ubus */
  url: string;
  user: string;
  /** Read at each login, never logged. */
  passwordFile: string;
  /** PEM CA certificate(s) trusted for an https url (uhttpd's self-signed certificate). */
  ca?: string;
  /** How long one request may take. */
  requestTimeoutMs?: number;
}

const nullSession = '0'.repeat(32);

/** ubus status codes (libubus's enum ubus_msg_status) as LoamError codes and words. */
const ubusStatus: Record<number, [ErrorCode, string]> = {
  1: ['BadRequest', 'invalid command'],
  2: ['BadRequest', 'invalid argument'],
  3: ['NotFound', 'method not found'],
  4: ['NotFound', 'not found'],
  5: ['NotFound', 'no data'],
  6: ['Forbidden', 'permission denied'],
  7: ['DeadlineExceeded', 'timeout'],
  8: ['BadRequest', 'not supported'],
  9: ['Unavailable', 'unknown error'],
  10: ['Unavailable', 'connection failed'],
};

/** JSON-RPC errors of uhttpd-mod-ubus. */
const rpcErrors: Record<number, ErrorCode> = {
  [-32002]: 'Forbidden',
  [-32000]: 'NotFound',
  [-32601]: 'NotFound',
  [-32602]: 'BadRequest',
};

/** UCI through rpcd's ubus JSON-RPC, as LuCI drives it. */
export class RpcdTransport implements UciTransport {
  private readonly url: URL;
  private readonly timeoutMs: number;
  private id = 0;
  /** The session reads use; never one whose apply failed (it may hold the rolled-back changes). */
  private session: string | undefined;
  /** The session of the apply awaiting its confirm, and that apply's rollback timeout. */
  private applying: string | undefined;
  private rollbackTimeoutS = 0;

  constructor(private readonly options: RpcdTransportOptions) {
    this.url = new URL(options.url);
    if (this.url.protocol !== 'http:' && this.url.protocol !== 'https:') {
      throw new LoamError('Invalid', `rpcd url ${options.url}: must be http:// or https://`);
    }
    this.timeoutMs = options.requestTimeoutMs ?? 15_000;
  }

  async get(config: string, signal?: AbortSignal): Promise<UciSection[]> {
    const data = await this.read('uci', 'get', { config }, signal);
    const values = (data?.values ?? {}) as Record<string, Record<string, unknown>>;
    return Object.values(values)
      .sort((a, b) => Number(a['.index']) - Number(b['.index']))
      .map((raw) => {
        const options: Record<string, UciValue> = {};
        for (const [option, value] of Object.entries(raw)) {
          if (!option.startsWith('.')) options[option] = value as UciValue;
        }
        return {
          type: String(raw['.type']),
          ...(raw['.anonymous'] === true ? {} : { name: String(raw['.name']) }),
          options,
        };
      });
  }

  /** Stages in a fresh session, so nothing left over from an earlier attempt is applied with it. */
  async apply(
    batch: readonly UciCommand[],
    options: { rollbackTimeoutS: number },
    signal?: AbortSignal,
  ): Promise<void> {
    const session = await this.login(signal);
    this.applying = undefined;
    for (const [method, args] of ubusCalls(batch)) await this.call(session, 'uci', method, args, signal);
    try {
      await this.call(session, 'uci', 'apply', { rollback: true, timeout: options.rollbackTimeoutS }, signal);
    } catch (err) {
      if (!isLoamError(err, 'Forbidden') || err instanceof RpcdDenied) throw err;
      throw new LoamError(
        'Unavailable',
        `rpcd at ${this.url.href}: an earlier uci apply still awaits its confirm; the router rolls it back when its timeout passes`,
      );
    }
    this.applying = session;
    this.rollbackTimeoutS = options.rollbackTimeoutS;
  }

  async confirm(signal?: AbortSignal): Promise<void> {
    const session = this.pendingSession('confirm');
    // The router reloads its services on apply; it may take a moment to answer again, but
    // within half the rollback timeout or not at all as far as this apply is concerned.
    const deadline = Date.now() + (this.rollbackTimeoutS * 1000) / 2;
    for (;;) {
      try {
        await this.call(session, 'uci', 'changes', {}, signal);
        break;
      } catch (err) {
        if (!isLoamError(err, 'Unavailable') || Date.now() >= deadline || signal?.aborted) {
          throw new LoamError(
            'Unavailable',
            `lost the router after uci apply (${(err as Error).message}); it restores the previous configuration when the rollback timeout passes`,
            { cause: err },
          );
        }
        await delay(Math.min(500, Math.max(0, deadline - Date.now())));
      }
    }
    try {
      await this.call(session, 'uci', 'confirm', {}, signal);
    } catch (err) {
      if (isLoamError(err, 'NotFound')) {
        throw new LoamError(
          'Unavailable',
          'uci confirm found nothing to confirm: the router already rolled the change back (the rollback timeout passed)',
        );
      }
      throw err;
    }
    this.applying = undefined;
    this.session = session;
  }

  async rollback(signal?: AbortSignal): Promise<void> {
    const session = this.pendingSession('rollback');
    this.applying = undefined;
    await this.call(session, 'uci', 'rollback', {}, signal);
  }

  /** rpcd answers, takes the login, and lets it read the configs Loam changes. */
  async check(signal?: AbortSignal): Promise<AgentCondition> {
    try {
      for (const config of uciConfigNames) await this.get(config, signal);
      return uciReachable(`rpcd at ${this.url.href}`);
    } catch (err) {
      const reasons: Partial<Record<ErrorCode, string>> = {
        Unauthorized: 'RpcdLoginRefused',
        Forbidden: 'RpcdAccessDenied',
        NotFound: 'UciConfigMissing',
      };
      const reason = (isLoamError(err) && reasons[err.code]) || 'RpcdUnreachable';
      return uciReachable(`rpcd at ${this.url.href}`, { reason, message: (err as Error).message });
    }
  }

  async board(signal?: AbortSignal): Promise<Record<string, string>> {
    return boardFacts(await this.read('system', 'board', {}, signal));
  }

  /**
   * From `luci.wireguard getWgInstances`, which answers `wg show all dump` split into fields (as
   * strings) per interface: put back into dump lines, they parse as the dump does.
   */
  async wireguardPeers(signal?: AbortSignal): Promise<WireguardPeerStats[]> {
    const instances = Object.values((await this.read('luci.wireguard', 'getWgInstances', {}, signal)) ?? {});
    const lines = instances.flatMap((instance) => {
      const { name, peers } = (instance ?? {}) as { name?: unknown; peers?: unknown };
      if (typeof name !== 'string' || !Array.isArray(peers)) return [];
      return peers.map((peer: Record<string, unknown>) =>
        [
          name,
          peer.public_key,
          '(none)',
          peer.endpoint,
          Array.isArray(peer.allowed_ips) ? peer.allowed_ips.join(',') : '',
          peer.latest_handshake,
          peer.transfer_rx,
          peer.transfer_tx,
          peer.persistent_keepalive,
        ].join('\t'),
      );
    });
    return parseWireguardDump(lines.join('\n'));
  }

  /**
   * From `luci-rpc getDHCPLeases`, which reads dnsmasq's lease file and answers each lease's
   * seconds left in `expires`: 0 once expired, false for a lease that never expires.
   */
  async activeLeases(signal?: AbortSignal): Promise<string[]> {
    const data = await this.read('luci-rpc', 'getDHCPLeases', { family: 4 }, signal);
    const leases = Array.isArray(data?.dhcp_leases) ? (data.dhcp_leases as Record<string, unknown>[]) : [];
    return leases.flatMap(({ ipaddr, expires }) =>
      typeof ipaddr === 'string' && (expires === false || (typeof expires === 'number' && expires > 0))
        ? [ipaddr]
        : [],
    );
  }

  private pendingSession(what: string): string {
    if (this.applying === undefined) throw new Error(`uci ${what} without a pending apply`);
    return this.applying;
  }

  /** One call in the read session, logging in again once when the session expired. */
  private async read(
    object: string,
    method: string,
    args: Record<string, unknown>,
    signal?: AbortSignal,
  ): Promise<Record<string, unknown> | undefined> {
    if (this.session !== undefined) {
      try {
        return await this.call(this.session, object, method, args, signal);
      } catch (err) {
        if (!(err instanceof RpcdDenied)) throw err;
      }
    }
    this.session = await this.login(signal);
    return this.call(this.session, object, method, args, signal);
  }

  private async login(signal?: AbortSignal): Promise<string> {
    const { user, passwordFile } = this.options;
    let password: string;
    try {
      password = (await readFile(passwordFile, 'utf8')).replace(/\r?\n$/, '');
    } catch (err) {
      throw new LoamError(
        'Unauthorized',
        `cannot read the rpcd password file ${passwordFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      );
    }
    let data: Record<string, unknown> | undefined;
    try {
      data = await this.call(nullSession, 'session', 'login', { username: user, password }, signal);
    } catch (err) {
      if (isLoamError(err, 'Forbidden')) {
        throw new LoamError(
          'Unauthorized',
          `rpcd at ${this.url.href} refused the login of ${user}: wrong user or password (ubus status 6)`,
        );
      }
      throw err;
    }
    const session = data?.ubus_rpc_session;
    if (typeof session !== 'string') {
      throw new LoamError('Unavailable', `rpcd at ${this.url.href} answered session login without a session`);
    }
    return session;
  }

  /** One ubus call; its data, or a LoamError naming the call and what went wrong. */
  private async call(
    session: string,
    object: string,
    method: string,
    args: Record<string, unknown>,
    signal?: AbortSignal,
  ): Promise<Record<string, unknown> | undefined> {
    const what = `${object} ${method}${typeof args.config === 'string' ? ` ${args.config}` : ''}${typeof args.section === 'string' ? `.${args.section}` : ''}`;
    const body = JSON.stringify({
      jsonrpc: '2.0',
      id: ++this.id,
      method: 'call',
      params: [session, object, method, args],
    });
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const text = await this.post(body, signal ? AbortSignal.any([signal, timeout]) : timeout).catch(
      (err: Error) => {
        const reason = timeout.aborted
          ? `no answer within ${this.timeoutMs} ms`
          : signal?.aborted
            ? 'the job deadline passed'
            : err.message;
        throw new LoamError('Unavailable', `rpcd at ${this.url.href}, ${what}: ${reason}`, { cause: err });
      },
    );
    let answer: { result?: unknown; error?: { code?: number; message?: string } };
    try {
      answer = JSON.parse(text);
    } catch {
      throw new LoamError('Unavailable', `rpcd at ${this.url.href}, ${what}: the answer is not JSON`);
    }
    if (answer.error) {
      const { code = 0, message = 'unknown error' } = answer.error;
      if (code === -32002) {
        throw new RpcdDenied(
          `rpcd at ${this.url.href} denied ${what} (Access denied): the session expired or ${this.options.user} lacks the rights (rpcd ACLs in /usr/share/rpcd/acl.d)`,
        );
      }
      throw new LoamError(
        rpcErrors[code] ?? 'Unavailable',
        `rpcd at ${this.url.href}, ${what}: ${message} (JSON-RPC ${code})`,
      );
    }
    const [code, data] = Array.isArray(answer.result) ? answer.result : [];
    if (code === 0) return data as Record<string, unknown> | undefined;
    const [errorCode, words] = ubusStatus[code as number] ?? ['Unavailable', 'unexpected answer'];
    throw new LoamError(errorCode, `rpcd at ${this.url.href}, ${what}: ${words} (ubus status ${code})`);
  }

  private post(body: string, signal: AbortSignal): Promise<string> {
    const request = this.url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const req = request(
        this.url,
        {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
          signal,
          ...(this.options.ca === undefined ? {} : { ca: this.options.ca }),
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > 16 << 20) req.destroy(new Error('answer larger than 16 MiB'));
            else chunks.push(chunk);
          });
          res.on('end', () => {
            if (res.statusCode !== 200) reject(new Error(`HTTP ${res.statusCode}`));
            else resolve(Buffer.concat(chunks).toString('utf8'));
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  }
}

/** -32002 Access denied: the session is gone (expired, rpcd restarted) or lacks the rights. */
class RpcdDenied extends LoamError {
  constructor(message: string) {
    super('Forbidden', message);
  }
}

/**
 * A batch as ubus `uci` calls, per section in the batch's order: deleting or creating it, then
 * one `set` of its values (a list whole, as an array, which replaces it), then deleting options.
 */
export function ubusCalls(batch: readonly UciCommand[]): [string, Record<string, unknown>][] {
  interface Pending {
    config: string;
    section: string;
    structure: [string, Record<string, unknown>][];
    values: Record<string, UciValue>;
    deletes: Set<string>;
  }
  const sections = new Map<string, Pending>();
  for (const command of batch) {
    const { config, section } = command;
    const id = `${config}.${section}`;
    let pending = sections.get(id);
    if (!pending) {
      pending = { config, section, structure: [], values: {}, deletes: new Set() };
      sections.set(id, pending);
    }
    if (command.option === undefined) {
      pending.structure.push(
        command.verb === 'delete'
          ? ['delete', { config, section }]
          : ['add', { config, type: command.value, name: section }],
      );
    } else if (command.verb === 'set') {
      pending.values[command.option] = command.value;
    } else if (command.verb === 'add_list') {
      const previous = pending.values[command.option];
      pending.values[command.option] = [...(Array.isArray(previous) ? previous : []), command.value];
      pending.deletes.delete(command.option);
    } else {
      pending.deletes.add(command.option);
    }
  }
  return [...sections.values()].flatMap(({ config, section, structure, values, deletes }) => [
    ...structure,
    ...(Object.keys(values).length > 0
      ? [['set', { config, section, values }] as [string, Record<string, unknown>]]
      : []),
    ...(deletes.size > 0
      ? [['delete', { config, section, options: [...deletes] }] as [string, Record<string, unknown>]]
      : []),
  ]);
}
