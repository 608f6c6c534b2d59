/**
 * The WireGuardPeer controller's shell: it gathers what reconcileWireGuardPeer needs from the
 * informers (Secrets only those labelled loam.dev/wireguard-peer) and the router's report on the
 * peer's Network, and carries out the result in the order the core asks for: the Secret first, so
 * status.publicKey never names a key whose private half is not stored, then status, then Events.
 * A peer is queued again when it or another peer of its namespace changes (addresses are decided
 * among them), when its Network or a Network on the same Router changes, when its Secret changes,
 * and when the router reports on the Network or its agent connects.
 */
import { CoreV1Api, type KubeConfig, type KubernetesObject, type V1Secret } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Secret } from '../../crds/builtin.js';
import { type Network, type WireGuardPeer, wireguardPeerKind } from '../../crds/v1alpha1/index.js';
import { observedRouter } from '../network/controller.js';
import type { AgentState } from '../runtime/agent-state.js';
import { AssumedObjects } from '../runtime/assumed.js';
import { type Cache, objectKey } from '../runtime/controller.js';
import { ObjectController } from '../runtime/object-controller.js';
import { isApiStatus } from '../runtime/retry.js';
import { controllerFieldManager, type EventRecorder, type ObjectWriter } from '../runtime/writes.js';
import { generateKeyPair } from './client-config.js';
import { configSecretName, peerLabel, reconcileWireGuardPeer } from './reconcile.js';

export interface WireGuardPeerControllerOptions {
  peers: Cache<KubernetesObject>;
  networks: Cache<KubernetesObject>;
  /** Secrets labelled peerLabel. */
  secrets: Cache<KubernetesObject>;
  agents: AgentState;
  kubeConfig: KubeConfig;
  writer: ObjectWriter;
  events: EventRecorder;
  logger: Logger;
  registry: Registry;
  workers?: number;
}

/**
 * The names of the peers the router last reported configured on the peer's Network: none when
 * its agent said Hello without the Network or removed it, undefined when nothing is known.
 */
function routerPeers(agents: AgentState, network: Network | undefined): ReadonlySet<string> | undefined {
  const observed = network && observedRouter(agents, network);
  if (observed === undefined) return undefined;
  if (observed.deleted === true || observed.generation === undefined) return new Set();
  return observed.peers === undefined ? undefined : new Set(observed.peers);
}

/** crds/ types carry timestamps as strings, client-node's as Dates; its serializer passes strings through. */
function asV1Secret(secret: Secret): V1Secret {
  return secret as unknown as V1Secret;
}

export class WireGuardPeerController extends ObjectController<WireGuardPeer> {
  private readonly secrets: AssumedObjects<Secret>;
  private readonly core: CoreV1Api;

  constructor(private readonly options: WireGuardPeerControllerOptions) {
    super({
      name: 'wireguardpeer',
      cache: options.peers,
      workers: options.workers ?? 2,
      logger: options.logger,
      registry: options.registry,
    });
    this.core = options.kubeConfig.makeApiClient(CoreV1Api);
    this.secrets = new AssumedObjects<Secret>({
      get: (name, namespace) => options.secrets.get(name, namespace) as Secret | undefined,
    });
    this.watch();
  }

  private watch(): void {
    const queue = this.controller.queue;
    const { peers, networks, secrets, agents } = this.options;
    const all = () => peers.list() as WireGuardPeer[];
    const enqueue = (peer: WireGuardPeer) => queue.add(objectKey(peer));
    const networkOf = (peer: WireGuardPeer) =>
      networks.get(peer.spec.network, peer.metadata.namespace) as Network | undefined;

    const onPeer = (obj: KubernetesObject) => {
      queue.add(objectKey(obj)); // a deleted peer is no longer in the list
      for (const peer of peers.list(obj.metadata?.namespace) as WireGuardPeer[]) enqueue(peer);
    };
    for (const event of ['add', 'update', 'delete'] as const) peers.on(event, onPeer);
    // The peer's own Network, or one on its Router (their routes bound its allowedIPs).
    const onNetwork = (obj: KubernetesObject) => {
      const changed = obj as Network;
      const router = changed.status?.router;
      for (const peer of all()) {
        const own =
          peer.metadata.namespace === changed.metadata.namespace &&
          peer.spec.network === changed.metadata.name;
        if (own || (router !== undefined && networkOf(peer)?.status?.router === router)) enqueue(peer);
      }
    };
    for (const event of ['add', 'update', 'delete'] as const) networks.on(event, onNetwork);
    const onSecret = (obj: KubernetesObject) => {
      const peer = obj.metadata?.labels?.[peerLabel];
      if (peer) queue.add(`${obj.metadata?.namespace}/${peer}`);
    };
    for (const event of ['add', 'update', 'delete'] as const) secrets.on(event, onSecret);
    agents.on('change', (ref) => {
      if (ref.kind !== 'Network') return;
      for (const peer of peers.list(ref.namespace) as WireGuardPeer[]) {
        if (peer.spec.network === ref.name) enqueue(peer);
      }
    });
    agents.on('agent', (agent) => {
      if (agent.role !== 'network') return;
      for (const peer of all()) if (networkOf(peer)?.status?.router === agent.name) enqueue(peer);
    });
  }

  protected async reconcile(key: string, logger: Logger): Promise<undefined> {
    const [namespace = '', name = ''] = key.split('/');
    const peer = this.objects.get(name, namespace);
    // No finalizer: the Network controller takes the peer off the router, and this removes the
    // Secret the peer owned (Loam's API server has no garbage collector; a cluster's would too).
    if (!peer) {
      for (const orphan of this.ownedSecrets(namespace, name)) await this.deleteSecret(orphan);
      return undefined;
    }
    const secret = this.secrets.get(configSecretName(peer), namespace);
    return this.reconcilePeer(peer, secret, logger);
  }

  private async reconcilePeer(
    peer: WireGuardPeer,
    secret: Secret | undefined,
    logger: Logger,
  ): Promise<undefined> {
    const namespace = peer.metadata.namespace ?? '';
    const networks = this.options.networks.list() as Network[];
    const network = networks.find(
      (candidate) =>
        candidate.metadata.namespace === namespace && candidate.metadata.name === peer.spec.network,
    );
    const reported = routerPeers(this.options.agents, network);
    const result = reconcileWireGuardPeer({
      peer,
      networks,
      peers: this.objects.overlay(this.options.peers.list(namespace) as WireGuardPeer[]),
      ...(secret ? { secret } : {}),
      freshKeyPair: generateKeyPair(),
      ...(reported ? { routerPeers: reported } : {}),
      now: new Date(),
    });

    if (result.secret && !secret) {
      try {
        // Not assumed: the assume cache takes an object missing from the informer for deleted.
        await this.createSecret(result.secret);
      } catch (err) {
        if (!isApiStatus(err, 409)) throw err;
        // A Secret of that name the cache does not show (unlabelled): decide again with it.
        logger.info('the Secret exists outside the cache; reading it');
        const existing = (await this.core.readNamespacedSecret({
          name: configSecretName(peer),
          namespace,
        })) as Secret;
        return this.reconcilePeer(peer, existing, logger);
      }
    } else if (result.secret) {
      this.secrets.assume(await this.replaceSecret(result.secret));
    } else if (result.deleteSecret && secret) {
      await this.deleteSecret(secret);
    }
    let current = peer;
    if (result.status) {
      current = await this.options.writer.replaceStatus(wireguardPeerKind, peer, result.status);
      this.objects.assume(current);
    }
    for (const event of result.events) this.options.events.record(current, event);
    return undefined;
  }

  /** The Secrets a WireGuardPeer of this name controls (any uid: the peer is gone). */
  private ownedSecrets(namespace: string, name: string): Secret[] {
    return (this.options.secrets.list(namespace) as Secret[]).filter(
      (secret) =>
        secret.metadata.labels?.[peerLabel] === name &&
        (secret.metadata.ownerReferences ?? []).some(
          (owner) =>
            owner.controller === true && owner.kind === wireguardPeerKind.kind && owner.name === name,
        ),
    );
  }

  private async createSecret(secret: Secret): Promise<void> {
    const namespace = secret.metadata.namespace ?? '';
    await this.core.createNamespacedSecret({
      namespace,
      body: asV1Secret(secret),
      fieldManager: controllerFieldManager,
    });
  }

  /** Replaces with the resourceVersion read, so a stale cache ends in a conflict, never a lost key. */
  private async replaceSecret(secret: Secret): Promise<Secret> {
    const { name = '', namespace = '' } = secret.metadata;
    return (await this.core.replaceNamespacedSecret({
      name,
      namespace,
      body: asV1Secret(secret),
      fieldManager: controllerFieldManager,
    })) as Secret;
  }

  private async deleteSecret(secret: Secret): Promise<void> {
    const { name = '', namespace = '', resourceVersion, uid } = secret.metadata;
    try {
      await this.core.deleteNamespacedSecret({
        name,
        namespace,
        body: { preconditions: { ...(uid ? { uid } : {}), ...(resourceVersion ? { resourceVersion } : {}) } },
      });
    } catch (err) {
      // Already gone is what we wanted.
      if (!isApiStatus(err, 404)) throw err;
    }
  }
}
