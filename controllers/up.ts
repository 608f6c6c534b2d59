/**
 * `loam up`: the whole control plane on one machine — the embedded store (or etcd), periodic
 * compaction, the PKI, the Kubernetes-compatible API server, the agent hub and the controllers —
 * plus an admin kubeconfig.
 *
 * On etcd several control planes may share the store (each with a copy of the first one's
 * <data-dir>/pki): every one serves the API, and the one holding the Lease
 * kube-system/loam-controllers runs the hub and the controllers; agents given every hub's address
 * find the leader's. On SQLite the store admits one process, so there is nothing to elect.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { CoordinationV1Api } from '@kubernetes/client-node';
import { type DestinationStream, pino } from 'pino';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { namespaceKind, servedKinds } from '../crds/builtin.js';
import { isLoamError } from '../crds/errors.js';
import { adminGroup } from './apiserver/auth.js';
import { NamespaceLifecycle } from './apiserver/namespace-lifecycle.js';
import { Resources } from './apiserver/resources.js';
import { ApiServer } from './apiserver/server.js';
import { Hub, type HubTunables } from './hub/hub.js';
import { type LocalAgent, startLocalAgents } from './local-agents.js';
import { type ControllerManager, startControllers } from './manager.js';
import { loadServingPki } from './pki/files.js';
import { issueKubeconfig } from './pki/kubeconfig.js';
import { loadKubeConfig } from './runtime/client.js';
import { LeaderElector } from './runtime/leader-election.js';
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
  /** Run the controllers (default true; hub tests drive jobs by hand). */
  controllers?: boolean;
  /** How long the hub waits for an agent's answer to one job. */
  jobDeadlineMs?: number;
  /** Leader election timing on etcd (tests shorten it); client-go's defaults otherwise. */
  leaderElection?: { leaseDurationMs: number; renewDeadlineMs: number; retryPeriodMs: number };
  /** Agents of this machine to run in this process (`loam up` without --no-local-agents). */
  localAgents?: LocalAgent[];
  /** Loam's version, which local agents report. */
  version?: string;
  /** Interval between the pings that keep console WebSockets open (tests shorten it). */
  consolePingIntervalMs?: number;
}

export interface ControlPlane {
  apiServer: ApiServer;
  kubeconfigPath: string;
  /** The agent hub; throws while this control plane is on standby (not the leader). */
  readonly hub: Hub;
  /** The controllers' view of the agents; undefined while on standby or without controllers. */
  readonly controllers: ControllerManager | undefined;
  /** host:port agents dial (also in <dataDir>/agent-address, where `loam token create` reads it). */
  agentAddress: string;
  /** Resolves once this control plane runs the hub and the controllers. */
  leading: Promise<void>;
  stop(): Promise<void>;
}

/** The Lease the control planes sharing an etcd elect their leader with. */
export const leaderLease = { namespace: 'kube-system', name: 'loam-controllers' };

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
  let running: { hub: Hub; controllers?: ControllerManager } | undefined;
  const apiServer = await ApiServer.start({
    store,
    kinds: servedKinds,
    tls: { certPem: pki.certPem, keyPem: pki.keyPem, caPem: pki.ca.certPem },
    tokenKeyPem: pki.tokenKeyPem,
    host: options.host,
    port: options.port,
    logger,
    registry,
    // Consoles go through this control plane's hub, which runs only while it leads.
    hub: () => running?.hub,
    ...(options.consolePingIntervalMs !== undefined
      ? { consolePingIntervalMs: options.consolePingIntervalMs }
      : {}),
  });
  const kubeconfigPath = join(options.dataDir, 'admin.kubeconfig');
  writeFileSync(kubeconfigPath, issueKubeconfig(pki.ca, apiServer.url, 'admin', [adminGroup]), {
    mode: 0o600,
  });
  const kubeConfig = loadKubeConfig(kubeconfigPath);
  const stopApi = async () => {
    compactor.stop();
    namespaces.stop();
    await apiServer.close();
    await store.close();
  };
  const hubOptions = {
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
  };
  /** The hub and the controllers, started in that order and stopped in reverse. */
  const lead = async () => {
    const hub = await Hub.start(hubOptions);
    try {
      running = { hub };
      if (options.controllers !== false) {
        running.controllers = await startControllers({
          kubeConfig,
          hub,
          logger,
          registry,
          ...(options.jobDeadlineMs !== undefined ? { jobDeadlineMs: options.jobDeadlineMs } : {}),
        });
      }
    } catch (err) {
      running = undefined;
      await hub.close();
      throw err;
    }
    return hub;
  };
  const stepDown = async () => {
    const current = running;
    running = undefined;
    await current?.controllers?.stop();
    await current?.hub.close();
  };

  let agentAddress: string;
  let hubPort = options.agentPort;
  let elector: LeaderElector | undefined;
  let leading: Promise<void>;
  if (store.backend === 'sqlite') {
    try {
      const hub = await lead();
      agentAddress = advertisedAgentAddress(hub.address, options);
      hubPort = Number(hub.address.slice(hub.address.lastIndexOf(':') + 1));
    } catch (err) {
      // E.g. the agent port is taken: leave nothing running behind.
      await stopApi();
      throw err;
    }
    leading = Promise.resolve();
  } else {
    // Agents must find the hub at the same address whichever control plane leads: no port 0 here.
    agentAddress = advertisedAgentAddress(`${options.agentHost}:${options.agentPort}`, options);
    let becameLeader!: () => void;
    leading = new Promise((resolve) => {
      becameLeader = resolve;
    });
    const candidate: LeaderElector = new LeaderElector({
      api: kubeConfig.makeApiClient(CoordinationV1Api),
      ...leaderLease,
      identity: `${hostname()}_${process.pid}_${randomUUID().slice(0, 8)}`,
      ...options.leaderElection,
      logger,
      onStartedLeading: (signal) => {
        const started = lead().then(becameLeader, async (err: unknown) => {
          // E.g. the old leader's hub still holds the port: give the Lease up and campaign again.
          logger.error({ err }, 'could not start the hub and the controllers');
          await candidate.stop();
          candidate.start();
        });
        signal.addEventListener('abort', () => void started.then(stepDown), { once: true });
      },
    });
    elector = candidate;
    candidate.start();
  }
  writeFileSync(join(options.dataDir, agentAddressFile), `${agentAddress}\n`);
  // On standby they keep dialling until this machine's hub opens.
  let localAgents: { stop(): Promise<void> } | undefined;
  try {
    localAgents = options.localAgents?.length
      ? await startLocalAgents({
          agents: options.localAgents,
          hubPort,
          caCertPem: pki.ca.certPem,
          kubeConfig,
          dataDir: options.dataDir,
          logger,
          version: options.version ?? '0.0.0',
        })
      : undefined;
  } catch (err) {
    await elector?.stop();
    await stepDown();
    await stopApi();
    throw err;
  }
  logger.info({ url: apiServer.url, agentAddress, store: store.backend }, 'control plane up');
  return {
    apiServer,
    kubeconfigPath,
    get hub() {
      if (!running) throw new Error('this control plane is on standby: another one leads');
      return running.hub;
    },
    get controllers() {
      return running?.controllers;
    },
    agentAddress,
    leading,
    async stop() {
      await localAgents?.stop();
      await elector?.stop();
      await stepDown();
      await stopApi();
    },
  };
}
