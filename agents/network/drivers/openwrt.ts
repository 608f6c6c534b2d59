/**
 * The network agent's driver for an OpenWrt router: UCI through rpcd's ubus JSON-RPC (uhttpd's
 * POST /ubus), the way LuCI applies a change: stage it in an rpcd session, `uci apply` with
 * rollback, then `uci confirm` once the router still answers, so a change that cuts the agent off
 * is undone by the router itself when the rollback timeout passes.
 *
 * Every job renders the whole router from all Networks served (kept in stateDir, shared with the
 * linux driver through served.ts) and sends only the difference to the router's `loam_` sections
 * of network, dhcp and firewall (uciBatch); the user's own sections are never sent. Nothing to
 * change means nothing is staged or applied.
 *
 * WireGuard: `private_key` of a Network's WireGuard interface is router-owned (routerOwnedOptions)
 * and read from the router with `uci get`. When it has none, the agent makes one and sets it, so
 * the key passes through the agent process: run the agent on the router, or on a machine trusted
 * with the key. Only the public key is reported; the key is never logged or stored in stateDir.
 */

import { readFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { setTimeout as delay } from 'node:timers/promises';
import { status } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { NetworkJobObject } from '../../../controllers/network/reconcile.js';
import { generateKeyPair, publicKeyOf } from '../../../controllers/wireguardpeer/client-config.js';
import { type ErrorCode, errorCodes, isLoamError, LoamError } from '../../../crds/errors.js';
import type { AgentJob, Driver, DriverEvents, InventoryItem, JobOutcome } from '../../runtime/driver.js';
import type { RouterModel, RouterSettings } from '../model.js';
import { type RenderedUci, renderUci, uciBatch, uciConfigNames } from '../uci.js';
import type { UciCommand, UciSection, UciValue } from '../uci-format.js';
import { admit, JobQueue, keyOf, observedOf, refOf, ServedStore, servedModel } from './served.js';

/** How the driver reaches a router's UCI. */
export interface UciTransport {
  /** The sections of a config as the router has them (anonymous ones without a name). */
  get(config: string, signal?: AbortSignal): Promise<UciSection[]>;
  /** Stages `batch` and applies it, to be rolled back by the router unless confirmed within the timeout. */
  apply(
    batch: readonly UciCommand[],
    options: { rollbackTimeoutS: number },
    signal?: AbortSignal,
  ): Promise<void>;
  /** Checks that the router still answers after the apply, then confirms it. */
  confirm(signal?: AbortSignal): Promise<void>;
  /** Undoes the pending apply at once. */
  rollback(signal?: AbortSignal): Promise<void>;
  /** What the router says of itself (release, model); empty when it does not say. */
  board(signal?: AbortSignal): Promise<Record<string, string>>;
}

export interface OpenWrtRouterDriverOptions {
  settings: RouterSettings;
  transport: UciTransport;
  /** The host WireGuard clients dial; reported with each Network's port unless spec.wireguard.endpoint says. */
  wireguardEndpoint?: string;
  /** How long the router waits for the confirm before it restores the previous config (LuCI: 90 s). */
  rollbackTimeoutS?: number;
  logger?: Logger;
}

export class OpenWrtRouterDriver implements Driver {
  readonly capabilities: readonly string[];
  private readonly settings: RouterSettings;
  private readonly transport: UciTransport;
  private readonly rollbackTimeoutS: number;
  private readonly store: ServedStore;
  private readonly queue = new JobQueue();
  private events: DriverEvents | undefined;

  constructor(private readonly options: OpenWrtRouterDriverOptions) {
    this.settings = options.settings;
    this.transport = options.transport;
    this.rollbackTimeoutS = options.rollbackTimeoutS ?? 30;
    this.store = new ServedStore(this.settings.stateDir);
    this.capabilities = ['vxlan', ...(this.settings.trunk === undefined ? [] : ['vlan']), 'wireguard'];
  }

  async facts(): Promise<Record<string, string>> {
    const board = await this.transport.board(AbortSignal.timeout(10_000)).catch(() => ({}));
    return { driver: 'openwrt', ...board };
  }

  /** Serves the stored Networks again, repairing what changed on the router while the agent was away. */
  async start(events: DriverEvents): Promise<void> {
    this.events = events;
    await this.queue.run(async () => {
      const networks = await this.store.load();
      if (networks.size === 0) return;
      try {
        await this.converge(servedModel(networks, this.settings, 'openwrt'));
      } catch (err) {
        this.options.logger?.error(
          { err: (err as Error).message },
          'could not restore the stored Networks; the next job retries',
        );
      }
    });
  }

  async inventory(): Promise<InventoryItem[]> {
    const networks = await this.store.load();
    return [...networks.values()].map(({ object, observed }) => ({ ref: refOf(object), observed }));
  }

  handle(job: AgentJob, signal?: AbortSignal): Promise<JobOutcome> {
    const object = job.object as unknown as NetworkJobObject;
    const run = (work: () => Promise<JobOutcome>) =>
      this.queue.run(async () => {
        try {
          return await work();
        } catch (err) {
          if (!isLoamError(err)) throw err;
          return { code: errorCodes[err.code].grpc, message: err.message };
        }
      });
    if (job.type === 'network.apply') return run(() => this.apply(object, signal));
    if (job.type === 'network.delete') return run(() => this.delete(object, signal));
    return Promise.resolve({
      code: status.UNIMPLEMENTED,
      message: `the network agent does not run ${job.type} jobs`,
    });
  }

  private async apply(object: NetworkJobObject, signal?: AbortSignal): Promise<JobOutcome> {
    const networks = await this.store.load();
    const admitted = admit(networks, object, this.settings);
    if ('code' in admitted) return admitted;
    const { model, network, acceptedAt } = admitted;
    const publicKeys = await this.converge(model, signal);
    const observed = observedOf(object, network, publicKeys.get(network.id), this.options.wireguardEndpoint);
    const item = await this.store.keep(object, observed, acceptedAt);
    this.events?.inventoryChanged({ upserted: [item] });
    return { code: status.OK, observed };
  }

  private async delete(object: NetworkJobObject, signal?: AbortSignal): Promise<JobOutcome> {
    const next = new Map(await this.store.load());
    next.delete(keyOf(object));
    // Also when it is not served (any more): every loam_ section the model lacks goes.
    await this.converge(servedModel(next, this.settings, 'openwrt'), signal);
    await this.store.forget(object);
    this.events?.inventoryChanged({ removed: [refOf(object)] });
    return { code: status.OK, observed: { deleted: true } };
  }

  /**
   * Makes the router's loam_ sections match `model`: applies the difference with rollback and
   * confirms it; when the confirm fails, rolls back (or leaves that to the router's timeout) and
   * throws. Returns the public key of each Network's WireGuard server, by Network id.
   */
  private async converge(model: RouterModel, signal?: AbortSignal): Promise<Map<string, string>> {
    const existing: Partial<RenderedUci> = {};
    for (const config of uciConfigNames) existing[config] = await this.transport.get(config, signal);
    const desired = renderUci(model);
    const publicKeys = new Map<string, string>();
    for (const network of model.networks) {
      if (!network.wireguard) continue;
      const name = network.names.wireguard;
      const found = existing.network?.find((s) => s.name === name && s.type === 'interface');
      let privateKey = found?.options.private_key;
      if (typeof privateKey !== 'string' || privateKey === '') {
        privateKey = generateKeyPair().privateKey;
        const section = desired.network.find((s) => s.name === name);
        if (section) section.options = { ...section.options, private_key: privateKey };
        this.options.logger?.info({ interface: name }, 'made a WireGuard private key for the router');
      }
      try {
        publicKeys.set(network.id, publicKeyOf(privateKey));
      } catch {
        throw new LoamError(
          'Invalid',
          `network.${name}.private_key on the router is not a WireGuard key; delete the option and Loam makes a new one`,
        );
      }
    }
    const batch = uciBatch(desired, existing);
    if (batch.length === 0) return publicKeys;
    // The batch may carry a private key: only its size is logged.
    this.options.logger?.info({ commands: batch.length }, 'applying UCI changes with rollback');
    await this.transport.apply(batch, { rollbackTimeoutS: this.rollbackTimeoutS }, signal);
    try {
      await this.transport.confirm(signal);
    } catch (err) {
      // Not bound to the job's deadline: an expired job still undoes its change at once if it can.
      await this.transport.rollback(AbortSignal.timeout(10_000)).catch((again: Error) => {
        this.options.logger?.warn(
          { err: again.message },
          `could not roll back; the router restores the previous configuration within ${this.rollbackTimeoutS} s`,
        );
      });
      throw err;
    }
    return publicKeys;
  }
}

// --- rpcd -----------------------------------------------------------------------------------------

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
    const data = await this.withSession(
      (session) => this.call(session, 'uci', 'get', { config }, signal),
      signal,
    );
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

  async board(signal?: AbortSignal): Promise<Record<string, string>> {
    const data = await this.withSession(
      (session) => this.call(session, 'system', 'board', {}, signal),
      signal,
    );
    const release = (data?.release ?? {}) as Record<string, unknown>;
    return {
      ...(typeof release.version === 'string' ? { openwrtVersion: release.version } : {}),
      ...(typeof data?.model === 'string' ? { model: data.model } : {}),
    };
  }

  private pendingSession(what: string): string {
    if (this.applying === undefined) throw new Error(`uci ${what} without a pending apply`);
    return this.applying;
  }

  /** Runs `work` in the read session, logging in again once when the session expired. */
  private async withSession<T>(work: (session: string) => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (this.session !== undefined) {
      try {
        return await work(this.session);
      } catch (err) {
        if (!(err instanceof RpcdDenied)) throw err;
      }
    }
    this.session = await this.login(signal);
    return work(this.session);
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
