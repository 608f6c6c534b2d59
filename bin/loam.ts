/**
 * The `loam` command line. Thin: each command parses its flags with commander and calls into the
 * modules that do the work.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { Command, InvalidArgumentError } from 'commander';
import { adminGroup, tenantGroupPrefix } from '../controllers/apiserver/auth.js';
import { loadCertificateAuthority, loadTokenSigningKey } from '../controllers/pki/files.js';
import { issueKubeconfig } from '../controllers/pki/kubeconfig.js';
import { issueToken } from '../controllers/pki/tokens.js';
import { up } from '../controllers/up.js';
import { validateManifests } from '../crds/manifests.js';

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

const defaultDataDir =
  process.env.LOAM_DATA_DIR ?? (process.getuid?.() === 0 ? '/var/lib/loam' : `${homedir()}/.loam`);

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
    'run the control plane on this machine: embedded store, API server; writes an admin kubeconfig',
  )
  .option(
    '--data-dir <dir>',
    'where the store, the PKI and the admin kubeconfig live (env LOAM_DATA_DIR)',
    defaultDataDir,
  )
  .option(
    '--api-address <host:port>',
    'address the Kubernetes API listens on; port 0 picks a free port',
    hostPort,
    { host: '127.0.0.1', port: 6443 },
  )
  .option('--store <backend>', 'sqlite (embedded, in the data dir) or etcd', storeBackend, 'sqlite')
  .option('--etcd-endpoints <urls>', 'comma-separated etcd client URLs, for --store etcd', '')
  .option('--tls-san <name>', 'extra DNS name or IP for the serving certificate; repeatable', collect, [])
  .option('--log-level <level>', 'pino log level: fatal, error, warn, info, debug, trace', 'info')
  .action(
    async (options: {
      dataDir: string;
      apiAddress: { host: string; port: number };
      store: 'sqlite' | 'etcd';
      etcdEndpoints: string;
      tlsSan: string[];
      logLevel: string;
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
      });
      process.stderr.write(
        `\nLoam is up: ${plane.apiServer.url}\n\n  export KUBECONFIG=${plane.kubeconfigPath}\n  kubectl api-resources --api-group=loam.dev\n  kubectl apply -f crds/samples/network.yaml\n  kubectl get networks,instances -A\n\n`,
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

program.parseAsync().catch((err: unknown) => {
  console.error(`loam: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
