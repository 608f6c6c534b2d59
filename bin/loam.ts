/**
 * The `loam` command line. Thin: each command parses its flags with commander and calls into the
 * modules that do the work.
 */
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import { KubeConfig, KubernetesObjectApi } from '@kubernetes/client-node';
import { Command, InvalidArgumentError, Option } from 'commander';
import { pino } from 'pino';
import { openLibvirtDriver } from '../agents/libvirt/driver.js';
import { LinuxRouterDriver } from '../agents/network/drivers/linux.js';
import { defaultRouterSettings } from '../agents/network/model.js';
import { defaultRouterName, renderManifests } from '../agents/network/render.js';
import { registerAgentCommands } from '../agents/runtime/cli.js';
import { agentSettings } from '../agents/runtime/config.js';
import { adminGroup, tenantGroupPrefix } from '../controllers/apiserver/auth.js';
import { attachConsole } from '../controllers/instance/console-command.js';
import { powerAction } from '../controllers/instance/power-command.js';
import type { LocalAgent } from '../controllers/local-agents.js';
import { createBootstrapToken, joinCommand } from '../controllers/pki/bootstrap-tokens.js';
import { type AgentRole, agentRoles, caPin } from '../controllers/pki/certificates.js';
import { loadCertificateAuthority, loadTokenSigningKey } from '../controllers/pki/files.js';
import { issueKubeconfig } from '../controllers/pki/kubeconfig.js';
import { issueToken } from '../controllers/pki/tokens.js';
import { agentAddressFile, up } from '../controllers/up.js';
import { peerClientConfig, renderQr } from '../controllers/wireguardpeer/client-command.js';
import { parseDuration } from '../crds/formats.js';
import { type ActionSubresource, actionSubresources } from '../crds/kind.js';
import { validateManifests } from '../crds/manifests.js';
import { routerDrivers } from '../crds/v1alpha1/index.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

const program = new Command()
  .name('loam')
  .description('Self-hosted control plane for VMs, unikernels and private networks, driven with kubectl.')
  .version(pkg.version)
  .showHelpAfterError();

program
  .command('validate')
  .description('check manifests against the loam.dev/v1alpha1 schemas, without touching anything')
  .requiredOption(
    '-f, --filename <file>',
    'manifest file (YAML, several documents allowed; - for stdin); repeatable',
    collect,
    [],
  )
  .action((options: { filename: string[] }) => {
    let failed = false;
    for (const file of options.filename) {
      const text = readFileSync(file === '-' ? 0 : file, 'utf8');
      for (const result of validateManifests(text)) {
        if (result.errors.length === 0) {
          console.log(`${file}: ${result.name}: valid`);
          continue;
        }
        failed = true;
        for (const error of result.errors) console.error(`${file}: ${result.name}: ${error}`);
      }
    }
    process.exitCode = failed ? 1 : 0;
  });

program
  .command('render')
  .description(
    'print the router configuration the network agent would apply for these manifests, touching nothing',
  )
  .addOption(
    new Option('--driver <driver>', 'openwrt (a uci batch) or linux (commands and files)')
      .choices(routerDrivers)
      .makeOptionMandatory(),
  )
  .requiredOption(
    '-f, --filename <file>',
    'manifest file (YAML, several documents allowed; - for stdin); repeatable',
    collect,
    [],
  )
  .option(
    '--router <name>',
    `the Router to render for (default: the one in the manifests, or "${defaultRouterName}")`,
  )
  .option('--wan <name>', 'linux: the WAN device (default eth0); openwrt: the WAN zone (default wan)')
  .option(
    '--trunk <device>',
    'where VLAN segments reach the hypervisors (linux: parent device; openwrt: port)',
  )
  .option('--uplink <name>', 'the VXLAN underlay (linux: device; openwrt: interface)')
  .option('--vtep <address>', "a hypervisor's VXLAN endpoint; repeatable", collect, [])
  .option(
    '--vxlan-group <address>',
    'a multicast group VXLAN floods through, instead of copies to each --vtep',
  )
  .option('--vxlan-local <address>', 'the VXLAN source address')
  .action(
    (options: {
      driver: 'openwrt' | 'linux';
      filename: string[];
      router?: string;
      wan?: string;
      trunk?: string;
      uplink?: string;
      vtep: string[];
      vxlanGroup?: string;
      vxlanLocal?: string;
    }) => {
      const { filename, vtep, ...rest } = options;
      const files = filename.map((name) => ({ name, text: readFileSync(name === '-' ? 0 : name, 'utf8') }));
      const result = renderManifests(files, { ...rest, vteps: vtep });
      process.stdout.write(result.output);
      for (const note of result.notes) console.error(`note: ${note}`);
      for (const error of result.errors) console.error(error);
      process.exitCode = result.errors.length > 0 ? 1 : 0;
    },
  );

const defaultDataDir =
  process.env.LOAM_DATA_DIR ?? (process.getuid?.() === 0 ? '/var/lib/loam' : `${homedir()}/.loam`);

/** Whether `command` is an executable in a PATH directory. */
function onPath(command: string): boolean {
  return (process.env.PATH ?? '').split(delimiter).some((dir) => {
    try {
      accessSync(join(dir, command), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** The roles `loam up --local-agents` may run, and the commands each needs on this machine. */
const localAgentTools: Record<AgentRole, string[]> = {
  libvirt: ['virsh'],
  network: ['ip', 'nft', 'dnsmasq', 'wg'],
};

/**
 * The agents `loam up` runs for this machine: of the roles asked for, those whose tools are
 * installed. One that cannot start is reported and left out.
 */
async function localAgents(options: {
  dataDir: string;
  localAgents: string | boolean;
  libvirtUri: string;
  storageDir?: string;
  wan: string;
  logLevel: string;
}): Promise<LocalAgent[]> {
  if (options.localAgents === false) return [];
  const roles = typeof options.localAgents === 'string' ? options.localAgents.split(',').filter(Boolean) : [];
  const logger = pino({ level: options.logLevel });
  const agents: LocalAgent[] = [];
  // With the network agent here too, its bridges are the host's: the libvirt agent joins them.
  const localRouter = roles.includes('network') && localAgentTools.network.every(onPath);
  for (const role of roles.map(agentRole)) {
    const missing = localAgentTools[role].filter((tool) => !onPath(tool));
    if (missing.length > 0) {
      process.stderr.write(`no local ${role} agent: ${missing.join(', ')} not installed\n`);
      continue;
    }
    try {
      if (role === 'libvirt') {
        const { driver, close } = await openLibvirtDriver({
          uri: options.libvirtUri,
          storageDir: options.storageDir ?? agentSettings.storageDir.default,
          logger,
          network: {
            settings: { vxlan: defaultRouterSettings('linux').vxlan },
            sharedWithRouter: localRouter,
          },
        });
        agents.push({ role, driver, close, metricsAddress: '127.0.0.1:9470' });
      } else {
        const settings = {
          ...defaultRouterSettings('linux'),
          wan: options.wan,
          stateDir: join(options.dataDir, 'network'),
        };
        agents.push({
          role,
          driver: new LinuxRouterDriver({ settings, logger }),
          metricsAddress: '127.0.0.1:9471',
        });
      }
    } catch (err) {
      process.stderr.write(`the local ${role} agent cannot start: ${(err as Error).message}\n`);
    }
  }
  return agents;
}

function hostPort(value: string): { host: string; port: number } {
  const match = /^(.*):(\d+)$/.exec(value);
  const port = Number(match?.[2]);
  if (!match?.[1] || port > 65535) throw new InvalidArgumentError('expected HOST:PORT, e.g. 127.0.0.1:6443');
  return { host: match[1].replace(/^\[(.*)\]$/, '$1'), port };
}

function storeBackend(value: string): 'sqlite' | 'etcd' {
  if (value !== 'sqlite' && value !== 'etcd') throw new InvalidArgumentError('expected sqlite or etcd');
  return value;
}

program
  .command('up')
  .description(
    'run the control plane on this machine: embedded store, API server, agent hub; writes an admin kubeconfig',
  )
  .option(
    '--data-dir <dir>',
    'where the store, the PKI and the admin kubeconfig live (env LOAM_DATA_DIR)',
    defaultDataDir,
  )
  .addOption(
    new Option('--api-address <host:port>', 'address the Kubernetes API listens on; port 0 picks a free port')
      .argParser(hostPort)
      .default({ host: '127.0.0.1', port: 6443 }, '127.0.0.1:6443'),
  )
  .addOption(
    new Option(
      '--agent-address <host:port>',
      'address the agent hub (gRPC, mutual TLS) listens on; port 0 picks a free port',
    )
      .argParser(hostPort)
      .default({ host: '0.0.0.0', port: 7443 }, '0.0.0.0:7443'),
  )
  .option('--store <backend>', 'sqlite (embedded, in the data dir) or etcd', storeBackend, 'sqlite')
  .option('--etcd-endpoints <urls>', 'comma-separated etcd client URLs, for --store etcd', '')
  .option('--tls-san <name>', 'extra DNS name or IP for the serving certificate; repeatable', collect, [])
  .option('--log-level <level>', 'pino log level: fatal, error, warn, info, debug, trace', 'info')
  .option(
    '--local-agents <roles>',
    "this machine's agents to run inside loam up, of those whose tools are installed: libvirt (virsh), network (ip, nft, dnsmasq, wg)",
    'libvirt,network',
  )
  .option('--no-local-agents', 'run no agents inside loam up')
  .option(
    '--wan <device>',
    "the local network agent's uplink, which Networks with egress are masqueraded out of",
    'eth0',
  )
  .option(
    '--libvirt-uri <uri>',
    "the local libvirt agent's connection (test:///default: libvirt's test driver)",
    'qemu:///system',
  )
  .option(
    '--storage-dir <dir>',
    `where the local libvirt agent keeps images and disks, outside the data dir, which QEMU may not enter (default ${agentSettings.storageDir.default})`,
  )
  .action(
    async (options: {
      dataDir: string;
      apiAddress: { host: string; port: number };
      agentAddress: { host: string; port: number };
      store: 'sqlite' | 'etcd';
      etcdEndpoints: string;
      tlsSan: string[];
      logLevel: string;
      localAgents: string | boolean;
      wan: string;
      libvirtUri: string;
      storageDir?: string;
    }) => {
      const etcdEndpoints = options.etcdEndpoints.split(',').filter(Boolean);
      if (options.store === 'etcd' && etcdEndpoints.length === 0) {
        throw new InvalidArgumentError('--store etcd needs --etcd-endpoints');
      }
      const plane = await up({
        dataDir: options.dataDir,
        host: options.apiAddress.host,
        port: options.apiAddress.port,
        store: options.store,
        etcdEndpoints,
        tlsSans: options.tlsSan,
        logLevel: options.logLevel,
        agentHost: options.agentAddress.host,
        agentPort: options.agentAddress.port,
        localAgents: await localAgents(options),
        version: pkg.version,
      });
      process.stderr.write(
        `\nLoam is up: ${plane.apiServer.url}\nAgent hub: ${plane.agentAddress} (join agents with: loam token create)\n\n  export KUBECONFIG=${plane.kubeconfigPath}\n  kubectl api-resources --api-group=loam.dev\n  kubectl apply -f crds/samples/network.yaml\n  kubectl get networks,instances -A\n\n`,
      );
      const stop = () => {
        plane.stop().then(
          () => process.exit(0),
          () => process.exit(1),
        );
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    },
  );

program
  .command('kubeconfig')
  .description('issue a kubeconfig for a tenant confined to its namespaces (or an admin with --admin)')
  .requiredOption('--user <name>', 'user name (the certificate CN, or the token subject)')
  .option('--namespace <ns>', 'a namespace the user may work in; repeatable', collect, [])
  .option(
    '--group <name>',
    'an extra group, e.g. system:monitoring to read /metrics; repeatable',
    collect,
    [],
  )
  .option('--admin', 'issue an admin credential instead (group system:masters)', false)
  .option('--token', 'authenticate with a bearer token instead of a client certificate', false)
  .option('--days <n>', 'how long the credential is valid, in days', positiveInteger, 365)
  .option('--server <url>', 'API server URL written into the kubeconfig', 'https://127.0.0.1:6443')
  .option('--data-dir <dir>', 'the control plane data dir holding the CA (env LOAM_DATA_DIR)', defaultDataDir)
  .action(
    (options: {
      user: string;
      namespace: string[];
      group: string[];
      admin: boolean;
      token: boolean;
      days: number;
      server: string;
      dataDir: string;
    }) => {
      if (!options.admin && options.namespace.length === 0 && options.group.length === 0) {
        throw new InvalidArgumentError('--namespace or --group is required (or pass --admin)');
      }
      const ca = loadCertificateAuthority(options.dataDir);
      const groups = options.admin
        ? [adminGroup]
        : [...options.namespace.map((ns) => `${tenantGroupPrefix}${ns}`), ...options.group];
      const credential = options.token
        ? {
            token: issueToken(loadTokenSigningKey(options.dataDir), {
              user: options.user,
              groups,
              validityDays: options.days,
            }),
          }
        : { validityDays: options.days };
      process.stdout.write(
        issueKubeconfig(ca, options.server, options.user, groups, {
          ...credential,
          ...(options.namespace[0] && !options.admin ? { namespace: options.namespace[0] } : {}),
        }),
      );
    },
  );

function positiveInteger(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

// --- loam token ---------------------------------------------------------------------------------

function agentRole(value: string): AgentRole {
  if (!(agentRoles as readonly string[]).includes(value)) {
    throw new InvalidArgumentError(`expected ${agentRoles.join(' or ')}`);
  }
  return value as AgentRole;
}

function positiveDuration(value: string): number {
  let seconds: number;
  try {
    seconds = parseDuration(value);
  } catch {
    throw new InvalidArgumentError('expected a duration such as 24h, 30m or 90s');
  }
  if (seconds < 1) throw new InvalidArgumentError('expected a duration of at least 1s');
  return seconds;
}

program
  .command('token')
  .description('bootstrap tokens, with which agents enroll')
  .command('create')
  .description('create a bootstrap token and print it with the CA pin and the command that joins an agent')
  .addOption(
    new Option('--ttl <duration>', 'how long the token is valid, e.g. 24h, 30m, 90s')
      .argParser(positiveDuration)
      .default(86_400, '24h'),
  )
  .option('--usages <n>', 'how many agents may enroll with it', positiveInteger, 1)
  .option(
    '--role <role>',
    `the only role it may enroll (${agentRoles.join(' or ')}); any when omitted`,
    agentRole,
  )
  .option('--data-dir <dir>', 'the control plane data dir (env LOAM_DATA_DIR)', defaultDataDir)
  .option('--server <host:port>', 'the hub address agents dial (default: what loam up wrote in the data dir)')
  .action(
    async (options: { ttl: number; usages: number; role?: AgentRole; dataDir: string; server?: string }) => {
      const addressPath = join(options.dataDir, agentAddressFile);
      if (options.server === undefined && !existsSync(addressPath)) {
        throw new InvalidArgumentError(`no ${addressPath}: run loam up first, or pass --server`);
      }
      const server = options.server ?? readFileSync(addressPath, 'utf8').trim();
      const pin = caPin(loadCertificateAuthority(options.dataDir).certPem);
      const kubeConfig = new KubeConfig();
      kubeConfig.loadFromFile(join(options.dataDir, 'admin.kubeconfig'));
      const { token, expiration } = await createBootstrapToken(
        KubernetesObjectApi.makeApiClient(kubeConfig),
        {
          ttlSeconds: options.ttl,
          usages: options.usages,
          ...(options.role ? { role: options.role } : {}),
        },
      );
      const roles = options.role ? [options.role] : agentRoles;
      process.stdout.write(
        [
          `token: ${token}`,
          `ca-pin: ${pin}`,
          `expires: ${expiration.toISOString()}`,
          `usages: ${options.usages}`,
          '',
          'Join an agent with:',
          ...roles.map((role) => `  ${joinCommand(role, server, token, pin)}`),
          '',
        ].join('\n'),
      );
    },
  );

// --- loam wg-config, loam console, loam start|stop|reboot|reset -------------------------------

/** NAMESPACE/NAME from the argument `ref`; `example` shows the form, e.g. NAMESPACE/PEER (default/laptop). */
function namespacedName(ref: string, example: string): [string, string] {
  const [namespace, name, ...rest] = ref.split('/');
  if (!namespace || !name || rest.length > 0)
    throw new InvalidArgumentError(`argument "${ref}" is not ${example}`);
  return [namespace, name];
}

/** --kubeconfig, else $KUBECONFIG (a path list, as for kubectl), else the admin kubeconfig of `loam up`. */
function loadKubeConfig(file: string | undefined, dataDir: string): KubeConfig {
  const kubeConfig = new KubeConfig();
  if (file === undefined && process.env.KUBECONFIG) {
    kubeConfig.loadFromDefault();
    return kubeConfig;
  }
  const path = file ?? join(dataDir, 'admin.kubeconfig');
  if (!existsSync(path)) {
    throw new InvalidArgumentError(`no ${path}: run loam up first, or pass --kubeconfig`);
  }
  kubeConfig.loadFromFile(path);
  return kubeConfig;
}

program
  .command('wg-config')
  .description("print a generated WireGuardPeer's wg-quick client config, from the peer's Secret")
  .argument('<namespace/peer>', 'the WireGuardPeer, e.g. default/laptop')
  .option('--qr', 'also print the config as a QR code, after it, for a phone to scan', false)
  .option(
    '--kubeconfig <file>',
    'credentials to read with (default: $KUBECONFIG, else <data-dir>/admin.kubeconfig)',
  )
  .option('--data-dir <dir>', 'the control plane data dir (env LOAM_DATA_DIR)', defaultDataDir)
  .action(async (ref: string, options: { qr: boolean; kubeconfig?: string; dataDir: string }) => {
    const [namespace, name] = namespacedName(ref, 'NAMESPACE/PEER, e.g. default/laptop');
    const kubeConfig = loadKubeConfig(options.kubeconfig, options.dataDir);
    const config = await peerClientConfig(kubeConfig, namespace, name);
    process.stdout.write(options.qr ? `${config}\n${await renderQr(config)}\n` : config);
  });

program
  .command('console')
  .description("attach to an Instance's serial console; Ctrl+] detaches")
  .argument('<namespace/instance>', 'the Instance, e.g. default/web-1')
  .option(
    '--wait <duration>',
    'keep trying this long while the Instance is not running yet or its agent is not connected, e.g. 2m',
    positiveDuration,
  )
  .option(
    '--kubeconfig <file>',
    'credentials to connect with (default: $KUBECONFIG, else <data-dir>/admin.kubeconfig)',
  )
  .option('--data-dir <dir>', 'the control plane data dir (env LOAM_DATA_DIR)', defaultDataDir)
  .action(async (ref: string, options: { wait?: number; kubeconfig?: string; dataDir: string }) => {
    const [namespace, name] = namespacedName(ref, 'NAMESPACE/INSTANCE, e.g. default/web-1');
    const kubeConfig = loadKubeConfig(options.kubeconfig, options.dataDir);
    // In raw mode Ctrl+C is a byte for the guest; a signal from elsewhere detaches.
    const interrupted = new AbortController();
    const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
    const detach = () => interrupted.abort();
    for (const signal of signals) process.on(signal, detach);
    try {
      await attachConsole(
        kubeConfig,
        namespace,
        name,
        { input: process.stdin, output: process.stdout, notices: process.stderr, signal: interrupted.signal },
        { waitMs: (options.wait ?? 0) * 1000 },
      );
    } finally {
      for (const signal of signals) process.off(signal, detach);
    }
  });

const actionDescriptions: Record<ActionSubresource, string> = {
  start:
    'start an Instance: runStrategy Halted becomes Always; under Manual or RerunOnFailure its domain is powered on',
  stop: 'stop an Instance: its runStrategy becomes Halted; under Manual its guest is shut down (ACPI), and destroyed if still running after 60 s',
  reboot: "reboot an Instance's guest (ACPI: the guest must handle it)",
  reset: "reset an Instance's domain, as its reset button: no guest involvement",
};

for (const action of actionSubresources) {
  program
    .command(action)
    .description(actionDescriptions[action])
    .argument('<namespace/instance>', 'the Instance, e.g. default/web-1')
    .option(
      '--kubeconfig <file>',
      'credentials to ask with (default: $KUBECONFIG, else <data-dir>/admin.kubeconfig)',
    )
    .option('--data-dir <dir>', 'the control plane data dir (env LOAM_DATA_DIR)', defaultDataDir)
    .action(async (ref: string, options: { kubeconfig?: string; dataDir: string }) => {
      const [namespace, name] = namespacedName(ref, 'NAMESPACE/INSTANCE, e.g. default/web-1');
      const kubeConfig = loadKubeConfig(options.kubeconfig, options.dataDir);
      console.log(await powerAction(kubeConfig, namespace, name, action));
    });
}

registerAgentCommands(program, pkg.version);

program.parseAsync().catch((err: unknown) => {
  console.error(`loam: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
