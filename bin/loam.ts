/**
 * The `loam` command line. Thin: each command parses its flags with commander and calls into the
 * modules that do the work.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { Command, InvalidArgumentError } from 'commander';
import { adminGroup, tenantGroupPrefix } from '../controllers/apiserver/auth.js';
import { loadCertificateAuthority } from '../controllers/pki/files.js';
import { issueKubeconfig } from '../controllers/pki/kubeconfig.js';
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
  if (!match?.[1] || port > 65535) throw new InvalidArgumentError('expected HOST:PORT, e.g. 0.0.0.0:6443');
  return { host: match[1].replace(/^\[(.*)\]$/, '$1'), port };
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
  .option('--listen <host:port>', 'address of the Kubernetes API', hostPort, { host: '0.0.0.0', port: 6443 })
  .option(
    '--etcd-endpoints <urls>',
    'comma-separated etcd client URLs; the embedded SQLite store when omitted',
    '',
  )
  .option('--tls-san <name>', 'extra DNS name or IP for the serving certificate; repeatable', collect, [])
  .option('--log-level <level>', 'pino log level: fatal, error, warn, info, debug, trace', 'info')
  .action(
    async (options: {
      dataDir: string;
      listen: { host: string; port: number };
      etcdEndpoints: string;
      tlsSan: string[];
      logLevel: string;
    }) => {
      const plane = await up({
        dataDir: options.dataDir,
        host: options.listen.host,
        port: options.listen.port,
        etcdEndpoints: options.etcdEndpoints.split(',').filter(Boolean),
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
  .description('issue a kubeconfig for a tenant confined to one namespace (or an admin with --admin)')
  .requiredOption('--user <name>', 'user name (the certificate CN)')
  .option('--namespace <ns>', 'the namespace the user may work in; repeatable', collect, [])
  .option('--admin', 'issue an admin credential instead (group system:masters)', false)
  .option('--server <url>', 'API server URL written into the kubeconfig', 'https://127.0.0.1:6443')
  .option('--data-dir <dir>', 'the control plane data dir holding the CA (env LOAM_DATA_DIR)', defaultDataDir)
  .action(
    (options: { user: string; namespace: string[]; admin: boolean; server: string; dataDir: string }) => {
      if (!options.admin && options.namespace.length === 0) {
        throw new InvalidArgumentError('--namespace is required for a tenant (or pass --admin)');
      }
      const ca = loadCertificateAuthority(options.dataDir);
      const groups = options.admin
        ? [adminGroup]
        : options.namespace.map((ns) => `${tenantGroupPrefix}${ns}`);
      process.stdout.write(
        issueKubeconfig(
          ca,
          options.server,
          options.user,
          groups,
          options.admin ? {} : { namespace: options.namespace[0] as string },
        ),
      );
    },
  );

program.parseAsync().catch((err: unknown) => {
  console.error(`loam: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
