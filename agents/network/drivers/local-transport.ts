/**
 * The openwrt driver's local transport: UCI through the router's own `uci` command, for an agent
 * that runs on the OpenWrt router itself (`--uci-transport local`). Every command is bounded by a
 * timeout. Reads are `uci export`, not `uci show`, which prints a list of one item as it prints an
 * option.
 *
 * OpenWrt's CLI has no apply with rollback (that is rpcd's), so apply keeps the previous
 * configuration and restores it itself:
 * 1. it refuses while uncommitted changes to a config it touches are pending (`uci changes`):
 *    its commit would make someone's half-done edits live with Loam's;
 * 2. it keeps `uci export` of each config it touches;
 * 3. one `uci batch`, fed on stdin, makes the changes and commits them; uci batch exits 0 even
 *    when a command in it fails, so what `uci export` reads next must be what the batch makes;
 * 4. it reloads the services that read those configs with their init scripts (network, dnsmasq,
 *    firewall), whose exit status says whether netifd and fw4 took the new config, where
 *    reload_config only queues procd's reload triggers;
 * 5. when a step fails, it `uci import`s the kept configs, reloads their services again and fails.
 * The kept configs stay until confirm(), so rollback() can still restore them. The agent runs on
 * the router, so nothing it changes can cut it off from it: confirm() has nothing to wait for.
 *
 * Metrics: WireGuard peers from `wg show all dump`, DHCP leases from dnsmasq's lease file (the
 * first dnsmasq section's leasefile, /tmp/dhcp.leases by default), as luci-rpc reads them.
 */

import { readFile } from 'node:fs/promises';
import { isDeepStrictEqual } from 'node:util';
import { LoamError } from '../../../crds/errors.js';
import { CommandFailed, runCommand } from '../../runtime/command.js';
import type { AgentCondition } from '../../runtime/driver.js';
import { type UciConfigName, uciConfigNames } from '../uci.js';
import { applyBatch, formatBatch, parseUci, type UciCommand, type UciSection } from '../uci-format.js';
import { activeLeaseAddresses, parseWireguardDump, type WireguardPeerStats } from '../wireguard-stats.js';
import { boardFacts, type UciTransport, uciReachable } from './openwrt.js';

export interface LocalUciTransportOptions {
  /** The uci command; `uci` on PATH by default. */
  uciCommand?: string;
  /** uci's -c: the directory of the config files (/etc/config by default), for tests and chroots. */
  configDir?: string;
  /** `wg`, read for the WireGuard metrics. */
  wgCommand?: string;
  /** `ubus`, asked what the board is. */
  ubusCommand?: string;
  /** What reloads the services that read a config once it changed; OpenWrt's init scripts by default. */
  reloadCommands?: Partial<Record<UciConfigName, readonly string[]>>;
  /** How long one command (a reload too) may take. */
  commandTimeoutMs?: number;
}

const defaultReloadCommands: Record<UciConfigName, readonly string[]> = {
  network: ['/etc/init.d/network', 'reload'],
  dhcp: ['/etc/init.d/dnsmasq', 'reload'],
  firewall: ['/etc/init.d/firewall', 'reload'],
};

export class LocalUciTransport implements UciTransport {
  private readonly reloadCommands: Record<string, readonly string[]>;
  private readonly timeoutMs: number;
  /** What the configs the pending apply changed were before it (`uci export`), by name. */
  private kept: Map<string, string> | undefined;

  constructor(private readonly options: LocalUciTransportOptions = {}) {
    this.reloadCommands = { ...defaultReloadCommands, ...options.reloadCommands };
    this.timeoutMs = options.commandTimeoutMs ?? 30_000;
  }

  /** uci runs (this is the router) and has the configs Loam changes. */
  async check(signal?: AbortSignal): Promise<AgentCondition> {
    for (const config of uciConfigNames) {
      try {
        await runCommand(this.uciArgv(['-q', 'export', config]), { timeoutMs: this.timeoutMs, signal });
      } catch (err) {
        if (!(err instanceof CommandFailed)) throw err;
        const problem =
          err.failure === 'missing'
            ? { reason: 'UciCommandMissing', message: uciMissing(err) }
            : err.failure === 'exited'
              ? { reason: 'UciConfigMissing', message: configMissing(config) }
              : { reason: 'UciNotAnswering', message: err.message };
        return uciReachable('uci', problem);
      }
    }
    return uciReachable('uci');
  }

  async get(config: string, signal?: AbortSignal): Promise<UciSection[]> {
    return parseUci(await this.export(config, signal));
  }

  async apply(
    batch: readonly UciCommand[],
    _options: { rollbackTimeoutS: number },
    signal?: AbortSignal,
  ): Promise<void> {
    this.kept = undefined;
    const configs = [...new Set(batch.map((command) => command.config))];
    // Lines such as "network.lan.ipaddr='…'" or "-dhcp.x": the config comes first.
    const changes = (await this.uci(['-q', 'changes'], { signal })).split('\n');
    const pending = configs.filter((config) =>
      changes.some((line) => line.replace(/^-/, '').startsWith(`${config}.`)),
    );
    if (pending.length > 0) {
      throw new LoamError(
        'Unavailable',
        `uncommitted changes to ${pending.join(', ')} are pending (uci changes); commit or revert them first: Loam's commit would make them live too`,
      );
    }
    const kept = new Map<string, string>();
    for (const config of configs) kept.set(config, await this.export(config, signal));
    try {
      const commits = configs.map((config) => `commit ${config}\n`).join('');
      await this.uci(['batch'], { input: formatBatch(batch) + commits, signal });
      for (const config of configs) {
        const before = parseUci(kept.get(config) ?? '');
        const commands = batch.filter((command) => command.config === config);
        const expected = applyBatch({ [config]: before }, commands)[config];
        if (!isDeepStrictEqual(parseUci(await this.export(config, signal)), expected)) {
          throw new LoamError('Unavailable', `uci batch did not make the changes to ${config} it was given`);
        }
      }
      for (const config of configs) await this.reload(config, signal);
    } catch (err) {
      const failures = await this.restore(kept);
      const restored =
        failures.length === 0
          ? `restored the previous ${configs.join(', ')} configuration`
          : `restoring the previous configuration failed too: ${failures.join('; ')}`;
      throw new LoamError('Unavailable', `${(err as Error).message}; ${restored}`, { cause: err });
    }
    this.kept = kept;
  }

  async confirm(): Promise<void> {
    this.kept = undefined;
  }

  async rollback(): Promise<void> {
    const kept = this.kept;
    if (kept === undefined) throw new Error('uci rollback without a pending apply');
    this.kept = undefined;
    const failures = await this.restore(kept);
    if (failures.length > 0) {
      throw new LoamError(
        'Unavailable',
        `could not restore the previous configuration: ${failures.join('; ')}`,
      );
    }
  }

  async board(signal?: AbortSignal): Promise<Record<string, string>> {
    const output = await this.run([this.options.ubusCommand ?? 'ubus', 'call', 'system', 'board'], {
      signal,
    });
    return boardFacts(JSON.parse(output) as Record<string, unknown>);
  }

  async wireguardPeers(signal?: AbortSignal): Promise<WireguardPeerStats[]> {
    return parseWireguardDump(
      await this.run([this.options.wgCommand ?? 'wg', 'show', 'all', 'dump'], { signal }),
    );
  }

  async activeLeases(signal?: AbortSignal): Promise<string[]> {
    const configured = await this.uci(['-q', 'get', 'dhcp.@dnsmasq[0].leasefile'], { signal }).then(
      (output) => output.trim(),
      () => '',
    );
    const content = await readFile(configured || '/tmp/dhcp.leases', 'utf8').catch(
      (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return '';
        throw err;
      },
    );
    return activeLeaseAddresses(content, Date.now() / 1000);
  }

  /** `uci export CONFIG`: the config with every section, its lists as lists. */
  private async export(config: string, signal?: AbortSignal): Promise<string> {
    try {
      return await runCommand(this.uciArgv(['-q', 'export', config]), { timeoutMs: this.timeoutMs, signal });
    } catch (err) {
      if (!(err instanceof CommandFailed) || err.failure !== 'exited') throw this.failure(err);
      throw new LoamError('NotFound', configMissing(config));
    }
  }

  private reload(config: string, signal?: AbortSignal): Promise<string> {
    return this.run(this.reloadCommands[config] ?? [], { signal });
  }

  /** Imports `kept` and reloads what reads it, whatever the job's deadline; what failed. */
  private async restore(kept: ReadonlyMap<string, string>): Promise<string[]> {
    const failures: string[] = [];
    const attempt = (work: Promise<unknown>) => work.catch((err: Error) => failures.push(err.message));
    for (const [config, text] of kept) await attempt(this.uci(['import', config], { input: text }));
    for (const config of kept.keys()) await attempt(this.reload(config));
    return failures;
  }

  private uciArgv(args: readonly string[]): string[] {
    const { uciCommand = 'uci', configDir } = this.options;
    return [uciCommand, ...(configDir === undefined ? [] : ['-c', configDir]), ...args];
  }

  private uci(args: readonly string[], options: { input?: string; signal?: AbortSignal }): Promise<string> {
    return this.run(this.uciArgv(args), options);
  }

  /** Runs a command; stdout, or a LoamError saying what went wrong (never with stdout or stdin, which may hold keys). */
  private async run(
    argv: readonly string[],
    options: { input?: string; signal?: AbortSignal | undefined },
  ): Promise<string> {
    try {
      return await runCommand(argv, { timeoutMs: this.timeoutMs, ...options });
    } catch (err) {
      throw this.failure(err);
    }
  }

  private failure(err: unknown): unknown {
    if (!(err instanceof CommandFailed)) return err;
    if (err.failure === 'aborted') return new LoamError('DeadlineExceeded', err.message);
    if (err.failure === 'missing' && err.argv[0] === (this.options.uciCommand ?? 'uci')) {
      return new LoamError('Unavailable', uciMissing(err));
    }
    return new LoamError('Unavailable', err.message);
  }
}

function uciMissing(err: CommandFailed): string {
  return `${err.message}: the local uci transport runs on the OpenWrt router itself; elsewhere, reach the router through rpcd (--uci-transport rpcd --rpcd-url …)`;
}

function configMissing(config: string): string {
  return `uci has no ${config} config (uci export ${config} failed): is this an OpenWrt router?`;
}
