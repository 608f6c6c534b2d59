/**
 * The controllers of one control plane, started together over shared informers and the hub's
 * agent reports, and stopped together (when `loam up` stops or loses leadership).
 */
import { CoreV1Api, type KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { secretKind } from '../crds/builtin.js';
import type { KindInfo } from '../crds/kind.js';
import {
  hostKind,
  instanceKind,
  networkKind,
  routerKind,
  wireguardPeerKind,
} from '../crds/v1alpha1/index.js';
import { HostController } from './host/controller.js';
import type { Hub } from './hub/hub.js';
import { InstanceController } from './instance/controller.js';
import { NetworkController } from './network/controller.js';
import { RouterController } from './router/controller.js';
import { AgentState } from './runtime/agent-state.js';
import { type Cache, startInformer } from './runtime/controller.js';
import { EventRecorder, ObjectWriter } from './runtime/writes.js';
import { WireGuardPeerController } from './wireguardpeer/controller.js';
import { peerLabel } from './wireguardpeer/reconcile.js';

export interface ControllerManagerOptions {
  kubeConfig: KubeConfig;
  hub: Hub;
  logger: Logger;
  registry: Registry;
  /** How long the hub waits for an agent's answer to one job (tests shorten it). */
  jobDeadlineMs?: number;
}

export interface ControllerManager {
  agents: AgentState;
  stop(): Promise<void>;
}

export async function startControllers(options: ControllerManagerOptions): Promise<ControllerManager> {
  const { kubeConfig, hub, registry } = options;
  const logger = options.logger.child({ component: 'controllers' });
  const abort = new AbortController();
  const informer = (kind: KindInfo, labelSelector?: string): Promise<Cache<KubernetesObject>> =>
    startInformer(kubeConfig, kind, {
      logger,
      signal: abort.signal,
      ...(labelSelector ? { labelSelector } : {}),
    });
  try {
    const agents = new AgentState(hub, logger);
    const [instances, hosts, networks, routers, peers, secrets] = await Promise.all([
      informer(instanceKind),
      informer(hostKind),
      informer(networkKind),
      informer(routerKind),
      informer(wireguardPeerKind),
      // Only the peers' Secrets: the controller has no business caching every credential.
      informer(secretKind, peerLabel),
    ]);
    const jobDeadline = options.jobDeadlineMs !== undefined ? { jobDeadlineMs: options.jobDeadlineMs } : {};
    const writer = new ObjectWriter(kubeConfig);
    const instanceController = new InstanceController({
      instances,
      hosts,
      networks,
      agents,
      core: kubeConfig.makeApiClient(CoreV1Api),
      writer,
      events: new EventRecorder(kubeConfig, 'loam-instance-controller', logger),
      logger,
      registry,
      ...jobDeadline,
    });
    const networkController = new NetworkController({
      networks,
      routers,
      instances,
      peers,
      agents,
      writer,
      events: new EventRecorder(kubeConfig, 'loam-network-controller', logger),
      logger,
      registry,
      ...jobDeadline,
    });
    const peerController = new WireGuardPeerController({
      peers,
      networks,
      secrets,
      agents,
      kubeConfig,
      writer,
      events: new EventRecorder(kubeConfig, 'loam-wireguardpeer-controller', logger),
      logger,
      registry,
    });
    const routerController = new RouterController({ routers, networks, writer, logger, registry });
    const hostController = new HostController({
      hosts,
      instances,
      agents,
      writer,
      events: new EventRecorder(kubeConfig, 'loam-host-controller', logger),
      logger,
      registry,
    });
    const controllers = [
      instanceController,
      networkController,
      peerController,
      routerController,
      hostController,
    ];
    for (const controller of controllers) controller.start();
    // Everything cached is queued by the informers' initial adds; nothing is missed.
    for (const instance of instances.list()) instanceController.enqueue(instance);
    for (const network of networks.list()) networkController.enqueue(network);
    for (const peer of peers.list()) peerController.enqueue(peer);
    for (const router of routers.list()) routerController.enqueue(router);
    for (const host of hosts.list()) hostController.enqueue(host);
    // The peers of labelled Secrets too: a Secret whose peer went while no leader ran is removed.
    for (const secret of secrets.list()) {
      const peer = secret.metadata?.labels?.[peerLabel];
      if (peer)
        peerController.enqueue({ metadata: { namespace: secret.metadata?.namespace ?? '', name: peer } });
    }
    logger.info('controllers started');
    return {
      agents,
      async stop() {
        abort.abort();
        await Promise.all(controllers.map((controller) => controller.stop()));
      },
    };
  } catch (err) {
    abort.abort();
    throw err;
  }
}
