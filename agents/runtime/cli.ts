/**
 * `loam agent libvirt` and `loam agent network`: the runtime with its settings from flags,
 * environment and file, stopped gracefully by SIGINT or SIGTERM (a second signal exits at once).
 * The libvirt role runs the libvirt driver; the network role runs the router driver --driver names:
 * linux, whose dnsmasq and WireGuard processes outlive the agent, so its Networks keep working while
 * it is stopped or restarted, or openwrt, which configures a router through its rpcd or, running on
 * the router, its uci command.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { type Logger, pino } from 'pino';
import { type AgentRole, agentRoles } from '../../controllers/pki/certificates.js';
import { LoamError } from '../../crds/errors.js';
import { openLibvirtDriver } from '../libvirt/driver.js';
import { LinuxRouterDriver } from '../network/drivers/linux.js';
import { LocalUciTransport } from '../network/drivers/local-transport.js';
import { OpenWrtRouterDriver } from '../network/drivers/openwrt.js';
import { RpcdTransport } from '../network/drivers/rpcd-transport.js';
import { defaultRouterSettings, type RouterSettings } from '../network/model.js';
import { Agent } from './agent.js';
import {
  type AgentConfig,
  agentSettings,
  configFileEnv,
  defaultFor,
  envName,
  flagName,
  loadAgentConfig,
  type SettingKey,
  settingKeysFor,
} from './config.js';
import type { Driver } from './driver.js';

const roleDescriptions: Record<AgentRole, string> = {
  libvirt: 'run the agent of a hypervisor: it runs the Instances scheduled to this Host',
  network: 'run the agent of a router: it makes Networks real on this Router',
};

export function registerAgentCommands(program: Command, version: string): void {
  const agent = program
    .command('agent')
    .description('run an agent that enrolls with a control plane, dials its hub and carries out its jobs');
  for (const role of agentRoles) {
    const command = agent
      .command(role)
      .description(roleDescriptions[role])
      .option(
        '--config <file>',
        `YAML or JSON file of the settings below, keyed as camelCase (env ${configFileEnv})`,
      );
    for (const key of settingKeysFor(role)) {
      const { value, help } = agentSettings[key];
      const fallback = defaultFor(key, role);
      const shown = fallback === undefined ? '' : ` (default ${fallback})`;
      command.option(`${flagName(key)} <${value}>`, `${help}${shown} (env ${envName(key)})`);
    }
    command.action((flags: Partial<Record<SettingKey | 'config', string>>) => runAgent(role, flags, version));
  }
}

/** Where a router's or a hypervisor's Network segments go: --trunk and the --vxlan-* settings. */
function segmentSettings(config: AgentConfig): Pick<RouterSettings, 'trunk' | 'vxlan'> {
  return {
    ...(config.trunk ? { trunk: config.trunk } : {}),
    vxlan: {
      port: config.vxlanPort ?? agentSettings.vxlanPort.default,
      ...(config.vxlanLocal ? { local: config.vxlanLocal } : {}),
      ...(config.vxlanUplink ? { uplink: config.vxlanUplink } : {}),
      ...(config.vxlanGroup ? { group: config.vxlanGroup } : {}),
      remotes: config.vxlanRemotes ?? [],
    },
  };
}

function networkDriver(config: AgentConfig, logger: Logger): Driver {
  const driver = config.driver ?? 'linux';
  const defaults = defaultRouterSettings(driver);
  const settings: RouterSettings = {
    wan: config.wan ?? defaults.wan,
    ...segmentSettings(config),
    stateDir: config.stateDir ?? defaults.stateDir,
  };
  const wireguardEndpoint = config.wireguardEndpoint ? { wireguardEndpoint: config.wireguardEndpoint } : {};
  if (driver === 'linux') {
    const resyncMs = (config.resyncInterval ?? agentSettings.resyncInterval.default) * 1000;
    return new LinuxRouterDriver({ settings, ...wireguardEndpoint, resyncMs, logger });
  }
  if (config.uciTransport === 'local') {
    return new OpenWrtRouterDriver({
      settings,
      transport: new LocalUciTransport(),
      ...wireguardEndpoint,
      logger,
    });
  }
  let ca: string | undefined;
  if (config.rpcdCaFile !== undefined) {
    try {
      ca = readFileSync(config.rpcdCaFile, 'utf8');
    } catch (err) {
      throw new LoamError(
        'Invalid',
        `invalid agent configuration: --rpcd-ca-file: cannot read ${config.rpcdCaFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      );
    }
  }
  const transport = new RpcdTransport({
    url: config.rpcdUrl ?? '',
    user: config.rpcdUser ?? agentSettings.rpcdUser.default,
    passwordFile: config.rpcdPasswordFile ?? '',
    ...(ca === undefined ? {} : { ca }),
  });
  return new OpenWrtRouterDriver({ settings, transport, ...wireguardEndpoint, logger });
}

async function runAgent(
  role: AgentRole,
  flags: Partial<Record<SettingKey | 'config', string>>,
  version: string,
): Promise<void> {
  const config = loadAgentConfig(role, flags);
  const logger = pino({ level: config.logLevel });
  const { driver, close } =
    role === 'libvirt'
      ? await openLibvirtDriver({
          uri: config.libvirtUri ?? agentSettings.libvirtUri.default,
          storageDir: config.storageDir ?? agentSettings.storageDir.default,
          logger,
          network: { settings: segmentSettings(config) },
          reserved: {
            cpus: config.reservedCpus ?? agentSettings.reservedCpus.default,
            memory: config.reservedMemory ?? agentSettings.reservedMemory.default,
          },
        })
      : { driver: networkDriver(config, logger), close: async () => {} };
  const agent = new Agent({ config, driver, logger, version });
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signals++ > 0) {
      logger.warn({ signal }, 'second signal: exiting without waiting');
      process.exit(1);
    }
    logger.info({ signal }, 'shutting down');
    void agent.stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await agent.run();
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await close();
  }
}
