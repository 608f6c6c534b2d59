/**
 * `loam up`: the whole control plane on one machine — the embedded store (or etcd), periodic
 * compaction, the PKI, the Kubernetes-compatible API server and the agent hub — plus an admin
 * kubeconfig.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { type DestinationStream, pino } from 'pino';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { namespaceKind, servedKinds } from '../crds/builtin.js';
import { isLoamError } from '../crds/errors.js';
import { adminGroup } from './apiserver/auth.js';
import { NamespaceLifecycle } from './apiserver/namespace-lifecycle.js';
import { Resources } from './apiserver/resources.js';
import { ApiServer } from './apiserver/server.js';
import { Hub, type HubTunables } from './hub/hub.js';
import { loadServingPki } from './pki/files.js';
import { issueKubeconfig } from './pki/kubeconfig.js';
import { openStore, startCompactor } from './storage/index.js';

export interface UpOptions {
  dataDir: string;
  /** Address of the API; port 0 picks a free port. */
  host: string;
  port: number;
  store: 'sqlite' | 'etcd';
  /** etcd client URLs, for store etcd. */
  etcdEndpoints: string[];
  tlsSans: string[];
  logLevel: string;
  /** Address the agent hub listens on; port 0 picks a free port. */
  agentHost: string;
  agentPort: number;
  /** Hub settings other than the defaults (tests shorten lifetimes and grace periods). */
  hub?: Partial<HubTunables>;
  /** Where logs go; stdout by default (tests read them). */
  logDestination?: DestinationStream;
}

export interface ControlPlane {
  apiServer: ApiServer;
  kubeconfigPath: string;
  hub: Hub;
  /** host:port agents dial (also in <dataDir>/agent-address, where `loam token create` reads it). */
  agentAddress: string;
  stop(): Promise<void>;
}

/** Namespaces that exist from the start, as on any Kubernetes cluster. */
const initialNamespaces = ['default', 'kube-system'];

async function ensureNamespaces(resources: Resources): Promise<void> {
  for (const name of initialNamespaces) {
    try {
      await resources.create(
        { type: 'resource', kind: namespaceKind, verb: 'create' },
        { metadata: { name } },
      );
    } catch (err) {
      if (!isLoamError(err, 'AlreadyExists')) throw err;
    }
  }
}

export const agentAddressFile = 'agent-address';

/**
 * The address agents dial for a hub listening on `listening`: the same, unless that is every
 * address (0.0.0.0, ::), which no agent can dial; then the first --tls-san or this host's name,
 * which the serving certificate names.
 */
export function advertisedAgentAddress(listening: string, options: Pick<UpOptions, 'tlsSans'>): string {
  const match = /^\[?(.*?)\]?:(\d+)$/.exec(listening);
  const host = match?.[1] ?? '';
  const port = match?.[2] ?? '';
  const wildcard = host === '' || host === '0.0.0.0' || host === '::';
  const advertised = wildcard ? (options.tlsSans[0] ?? hostname()) : host;
  return `${isIP(advertised) === 6 ? `[${advertised}]` : advertised}:${port}`;
}

export async function up(options: UpOptions): Promise<ControlPlane> {
  const logger = pino({ level: options.logLevel }, options.logDestination);
  mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
  const store =
    options.store === 'etcd'
      ? openStore({ backend: 'etcd', endpoints: options.etcdEndpoints })
      : openStore({ backend: 'sqlite', path: join(options.dataDir, 'loam.db') });
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const compactor = startCompactor(store, { onError: (err) => logger.warn({ err }, 'compaction failed') });
  const resources = new Resources(store);
  await ensureNamespaces(resources);
  const namespaces = await NamespaceLifecycle.start(store, resources, servedKinds, logger);
  const pki = loadServingPki(options.dataDir, options.tlsSans);
  const apiServer = await ApiServer.start({
    store,
    kinds: servedKinds,
    tls: { certPem: pki.certPem, keyPem: pki.keyPem, caPem: pki.ca.certPem },
    tokenKeyPem: pki.tokenKeyPem,
    host: options.host,
    port: options.port,
    logger,
    registry,
  });
  const kubeconfigPath = join(options.dataDir, 'admin.kubeconfig');
  writeFileSync(kubeconfigPath, issueKubeconfig(pki.ca, apiServer.url, 'admin', [adminGroup]), {
    mode: 0o600,
  });
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(kubeconfigPath);
  const stopApi = async () => {
    compactor.stop();
    namespaces.stop();
    await apiServer.close();
    await store.close();
  };
  let hub: Hub;
  try {
    hub = await Hub.start({
      host: options.agentHost,
      port: options.agentPort,
      ca: pki.ca,
      // The API server's certificate: the same SANs (loopback, this host, --tls-san) fit the hub.
      certPem: pki.certPem,
      keyPem: pki.keyPem,
      kubeConfig,
      logger: logger.child({ component: 'hub' }),
      registry,
      ...(options.hub ? { tunables: options.hub } : {}),
    });
  } catch (err) {
    // E.g. the agent port is taken: leave nothing running behind.
    await stopApi();
    throw err;
  }
  const agentAddress = advertisedAgentAddress(hub.address, options);
  writeFileSync(join(options.dataDir, agentAddressFile), `${agentAddress}\n`);
  logger.info({ url: apiServer.url, agentAddress, store: store.backend }, 'control plane up');
  return {
    apiServer,
    kubeconfigPath,
    hub,
    agentAddress,
    async stop() {
      await hub.close();
      await stopApi();
    },
  };
}
