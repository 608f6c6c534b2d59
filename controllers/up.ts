/**
 * `loam up`: the whole control plane on one machine — the embedded store (or etcd), periodic
 * compaction, the PKI, and the Kubernetes-compatible API server — plus an admin kubeconfig.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { servedKindFor, servedKinds } from '../crds/builtin.js';
import { isLoamError } from '../crds/errors.js';
import type { KindInfo } from '../crds/kind.js';
import { adminGroup } from './apiserver/auth.js';
import { NamespaceLifecycle } from './apiserver/namespace-lifecycle.js';
import { Resources } from './apiserver/resources.js';
import { ApiServer } from './apiserver/server.js';
import { loadServingPki } from './pki/files.js';
import { issueKubeconfig } from './pki/kubeconfig.js';
import { openStore, startCompactor } from './storage/index.js';
import type { Store } from './storage/store.js';

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
}

export interface ControlPlane {
  apiServer: ApiServer;
  kubeconfigPath: string;
  stop(): Promise<void>;
}

/** Namespaces that exist from the start, as on any Kubernetes cluster. */
const initialNamespaces = ['default', 'kube-system'];

async function ensureNamespaces(store: Store): Promise<void> {
  const resources = new Resources(store);
  const kind = servedKindFor('', 'namespaces') as KindInfo;
  for (const name of initialNamespaces) {
    try {
      await resources.create({ type: 'resource', kind, verb: 'create' }, { metadata: { name } });
    } catch (err) {
      if (!isLoamError(err, 'AlreadyExists')) throw err;
    }
  }
}

export async function up(options: UpOptions): Promise<ControlPlane> {
  const logger = pino({ level: options.logLevel });
  mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
  const store =
    options.store === 'etcd'
      ? openStore({ backend: 'etcd', endpoints: options.etcdEndpoints })
      : openStore({ backend: 'sqlite', path: join(options.dataDir, 'loam.db') });
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const compactor = startCompactor(store, { onError: (err) => logger.warn({ err }, 'compaction failed') });
  await ensureNamespaces(store);
  const namespaces = await NamespaceLifecycle.start(store, new Resources(store), servedKinds, logger);
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
  logger.info({ url: apiServer.url, store: store.backend }, 'control plane up');
  return {
    apiServer,
    kubeconfigPath,
    async stop() {
      compactor.stop();
      namespaces.stop();
      await apiServer.close();
      await store.close();
    },
  };
}
