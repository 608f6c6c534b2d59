/**
 * The WireGuardPeer controller's decisions, pure: the stored peer, the Networks and peers, the
 * peer's config Secret, a fresh key pair and what the router reports go in; the next status, the
 * Secret to write (or delete) and the Events come out. The shell reads the caches, makes a key
 * pair (cheap, ~50 µs; the core uses it only when the peer has neither spec.publicKey nor a
 * Secret of its own holding a private key), calls reconcileWireGuardPeer and executes the result
 * in this order, stopping at the first failure: write the Secret (create when the input had
 * none, else update with the input's resourceVersion, so a stale cache ends in a conflict that
 * is retried, never in an overwritten private key) or delete it; write the status; record the
 * Events. The Secret goes first so that status.publicKey never names a key whose private half is
 * not stored. A create that fails with AlreadyExists means a Secret the cache does not show (one
 * without the peerLabel, when the shell watches only labelled Secrets): the shell reads it by
 * name and reconciles with it: a stranger's Secret shows as SecretConflict, the peer's own
 * (its label removed) is relabelled. The shell reconciles a peer again when it, a Network on
 * the same Router as its own, another peer of its namespace or its Secret changes, and when the
 * router's report on the Network's peers changes; nothing polls.
 *
 * The rules:
 * - Address: through the Network allocator (allocatePeers), as the Network controller decides
 *   it for the router: spec.address, else the address status records, else the lowest free one
 *   of the Network's spec.wireguard.cidr after the server's own (its first host). Given
 *   addresses go before recorded ones and those before new ones, each in creation order, so the
 *   older of two peers wins (but a newer peer's spec.address takes an address an older peer
 *   only has recorded: the older one moves). Extra spec.allowedIPs may overlap nothing the
 *   Network's Router routes elsewhere (every Network on it, of any namespace, and their tunnel
 *   subnets), or the peer is refused. A peer that cannot be served has no address in status.
 * - Keys: spec.publicKey is the peer's own key, and then there is no Secret (one left from a
 *   generated pair is deleted). Otherwise the controller's key pair: its private key lives only
 *   in the Secret, the public key in status.publicKey. A Secret the peer controls keeps its key
 *   for good; a Secret of that name controlled by anything else is left alone (SecretConflict).
 * - Secret `<peer>-wireguard`, type Opaque, controlled by the peer (ownerReferences, so garbage
 *   collection deletes it with the peer) and labelled loam.dev/wireguard-peer=<peer>:
 *   `privatekey` holds the private key from the first reconcile on; `wg0.conf` holds the wg-quick
 *   client config once the peer has an address and the Network reports its server's public key
 *   and endpoint (never a placeholder: until then there is no wg0.conf, status has no
 *   configSecretName, and Ready says what it waits for). The Secret is rewritten only when its
 *   data would change: an endpoint moved, a server re-keyed, a new address.
 * - Ready: True once the router reports the peer configured on the Network's WireGuard server
 *   (routerPeers). Phase Ready then; Failed while the peer's own spec must change; else Pending.
 * - No finalizer: the Network controller pushes the peer set to the router (peers with a public
 *   key in spec or status and an address) and drops a peer once it is deleted, and garbage
 *   collection removes the Secret. A deleted peer needs nothing from here.
 * - Status is rewritten only when it changes, and an Event is recorded only when Ready changes
 *   or the Secret is written, so reconciling a converged peer does nothing.
 */

import { isDeepStrictEqual } from 'node:util';
import type { Secret } from '../../crds/builtin.js';
import { wireguardKey } from '../../crds/formats.js';
import { ipv4ToNumber } from '../../crds/ip.js';
import { getCondition, setCondition } from '../../crds/meta.js';
import {
  apiVersion,
  type Network,
  type WireGuardPeer,
  type WireGuardPeerStatus,
  type wireguardPeerPhases,
} from '../../crds/v1alpha1/index.js';
import {
  AllocationError,
  allocatePeers,
  type NetworkAllocation,
  networkAddressing,
  objectKey,
  type Route,
} from '../network/allocate.js';
import { type KeyPair, publicKeyOf, renderClientConfig } from './client-config.js';

export type PeerPhase = (typeof wireguardPeerPhases)[number];

/** The Secret data key of the wg-quick config: `wg-quick up ./wg0.conf` brings up interface wg0. */
export const configSecretKey = 'wg0.conf';
/** The Secret data key of the private key, as `wg genkey > privatekey` would store it. */
export const privateKeySecretKey = 'privatekey';
/** Labels the Secret with its peer's name, so the shell can watch only these Secrets. */
export const peerLabel = 'loam.dev/wireguard-peer';

/** The name of the Secret holding the peer's generated key pair and client config. */
export function configSecretName(peer: WireGuardPeer): string {
  return `${peer.metadata.name ?? ''}-wireguard`;
}

export interface PeerEvent {
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
}

export interface PeerReconcileInput {
  /** The peer as stored; never changed. */
  peer: WireGuardPeer;
  /**
   * Every Network, of every namespace: the peer's own is looked up here (spec.network in its
   * namespace), and those on the same Router are the routes its allowedIPs must stay clear of.
   */
  networks: readonly Network[];
  /** The peers of the namespace (others are ignored); this one may be among them. */
  peers: readonly WireGuardPeer[];
  /** The Secret named configSecretName(peer) in the peer's namespace, if it exists. */
  secret?: Secret;
  /** A key pair the shell made in case one is needed; used only when the peer has none yet. */
  freshKeyPair: KeyPair;
  /**
   * Names of the peers the router last reported configured on the WireGuard server of the
   * peer's Network; undefined when unknown (nothing reported since the control plane started).
   */
  routerPeers?: ReadonlySet<string>;
  now: Date;
}

export interface PeerReconcileResult {
  /** The status to write; undefined when it would not change. */
  status?: WireGuardPeerStatus;
  /** Create (the input had no Secret) or replace (it carries the input's metadata) this Secret. */
  secret?: Secret;
  /** Delete the input's Secret: the peer has its own key now and the generated pair is void. */
  deleteSecret?: true;
  events: PeerEvent[];
}

export function reconcileWireGuardPeer(input: PeerReconcileInput): PeerReconcileResult {
  if (input.peer.metadata.deletionTimestamp !== undefined) return { events: [] };
  const keys = decideKeys(input);
  const placement = place(input);
  const problems = [...placement.problems, ...(keys.kind === 'conflict' ? [keys.problem] : [])];
  let config: string | undefined;
  if (keys.kind === 'generated' && placement.network && placement.address && problems.length === 0) {
    const client = clientConfig(input.peer, placement.network, placement.address, keys.privateKey);
    if (typeof client === 'string') config = client;
    else if (client) problems.push(client);
  }
  const { secret, deleteSecret, events } = secretChanges(input, keys, config);

  const ready = readiness(input, problems, keys.kind === 'generated' && config === undefined);
  const previous = input.peer.status;
  const observedGeneration = input.peer.metadata.generation ?? 0;
  const condition = ready.finding && { ...ready.finding.condition, observedGeneration };
  const conditions = condition
    ? setCondition(previous?.conditions, condition, input.now)
    : (previous?.conditions ?? []);
  const publicKey = keys.kind === 'conflict' ? undefined : keys.publicKey;
  const status: WireGuardPeerStatus = {
    phase: ready.phase,
    ...(placement.address === undefined ? {} : { address: placement.address }),
    ...(publicKey === undefined ? {} : { publicKey }),
    ...(config === undefined ? {} : { configSecretName: configSecretName(input.peer) }),
    conditions,
    observedGeneration,
  };
  const before = getCondition(previous?.conditions, 'Ready');
  const changed =
    condition !== undefined &&
    (before?.status !== condition.status ||
      before.reason !== condition.reason ||
      before.message !== condition.message);
  if (changed && ready.finding?.event) {
    events.push({ type: ready.finding.event, reason: condition.reason, message: condition.message });
  }
  return {
    ...(isDeepStrictEqual(status, previous) ? {} : { status }),
    ...(secret ? { secret } : {}),
    ...(deleteSecret ? { deleteSecret } : {}),
    events,
  };
}

/** Why the peer cannot be served; `reason` is the Ready reason and the Warning Event's reason. */
interface Problem {
  reason: string;
  message: string;
  /** The peer's own spec has to change (phase Failed), rather than something it waits for (Pending). */
  failed: boolean;
}

/** The Ready condition this reconcile states (undefined keeps the stored one) and the phase. */
interface Readiness {
  finding?: {
    condition: { type: 'Ready'; status: 'True' | 'False'; reason: string; message: string };
    event?: PeerEvent['type'];
  };
  phase: PeerPhase;
}

/** Ready reasons that come from the router's report, and so stand while the report is unknown. */
const routerReasons = ['Configured', 'Configuring'];

function readiness(
  input: PeerReconcileInput,
  problems: readonly Problem[],
  waitingForServer: boolean,
): Readiness {
  const [first] = problems;
  if (first) {
    return {
      finding: {
        condition: {
          type: 'Ready',
          status: 'False',
          reason: first.reason,
          message: problems.map((problem) => problem.message).join('; '),
        },
        event: 'Warning',
      },
      phase: problems.some((problem) => problem.failed) ? 'Failed' : 'Pending',
    };
  }
  const network = `Network ${input.peer.metadata.namespace}/${input.peer.spec.network}`;
  if (waitingForServer) {
    return {
      finding: {
        condition: {
          type: 'Ready',
          status: 'False',
          reason: 'WaitingForServer',
          message: `waiting for ${network} to report its WireGuard server's public key and endpoint (status.wireguard) to write the client config`,
        },
      },
      phase: 'Pending',
    };
  }
  const name = input.peer.metadata.name ?? '';
  if (input.routerPeers?.has(name)) {
    return {
      finding: {
        condition: {
          type: 'Ready',
          status: 'True',
          reason: 'Configured',
          message: `configured on the WireGuard server of ${network}`,
        },
        event: 'Normal',
      },
      phase: 'Ready',
    };
  }
  const stored = getCondition(input.peer.status?.conditions, 'Ready');
  if (input.routerPeers === undefined && stored !== undefined && routerReasons.includes(stored.reason)) {
    return { phase: stored.status === 'True' ? 'Ready' : 'Pending' };
  }
  return {
    finding: {
      condition: {
        type: 'Ready',
        status: 'False',
        reason: 'Configuring',
        message: `waiting for the router to configure the peer on the WireGuard server of ${network}`,
      },
    },
    phase: 'Pending',
  };
}

// --- keys ---------------------------------------------------------------------------------------

type Keys =
  | { kind: 'given'; publicKey: string }
  | { kind: 'generated'; privateKey: string; publicKey: string; fresh: boolean }
  | { kind: 'conflict'; problem: Problem };

function decideKeys(input: PeerReconcileInput): Keys {
  const { peer, secret } = input;
  if (peer.spec.publicKey !== undefined) return { kind: 'given', publicKey: peer.spec.publicKey };
  if (secret !== undefined && !ownedBy(secret, peer)) {
    return {
      kind: 'conflict',
      problem: {
        reason: 'SecretConflict',
        message: `Secret ${configSecretName(peer)} exists and is not controlled by this WireGuardPeer; delete it, or set spec.publicKey`,
        failed: true,
      },
    };
  }
  const kept = decoded(secret, privateKeySecretKey)?.trim();
  if (kept !== undefined && wireguardKey().safeParse(kept).success) {
    return { kind: 'generated', privateKey: kept, publicKey: publicKeyOf(kept), fresh: false };
  }
  return { kind: 'generated', ...input.freshKeyPair, fresh: true };
}

/** What becomes of the Secret, with the Events that tell the user. */
function secretChanges(
  input: PeerReconcileInput,
  keys: Keys,
  config: string | undefined,
): { secret?: Secret; deleteSecret?: true; events: PeerEvent[] } {
  const name = configSecretName(input.peer);
  if (keys.kind === 'given') {
    if (input.secret === undefined || !ownedBy(input.secret, input.peer)) return { events: [] };
    return {
      deleteSecret: true,
      events: [
        {
          type: 'Normal',
          reason: 'ClientConfigDeleted',
          message: `deleted Secret ${name}: spec.publicKey gives the peer's own key, so the generated key pair is no longer used`,
        },
      ],
    };
  }
  if (keys.kind === 'conflict') return { events: [] };
  const events: PeerEvent[] = [];
  if (keys.fresh) {
    events.push({
      type: 'Normal',
      reason: 'KeyPairGenerated',
      message: `generated a key pair; the private key is in Secret ${name} (key ${privateKeySecretKey})`,
    });
  }
  const before = decoded(input.secret, configSecretKey);
  if (config !== undefined && config !== before) {
    events.push({
      type: 'Normal',
      reason: 'ClientConfigWritten',
      message:
        before === undefined
          ? `wrote the wg-quick client config to Secret ${name} (key ${configSecretKey})`
          : `updated the wg-quick client config in Secret ${name} (key ${configSecretKey}); fetch it again`,
    });
  }
  const secret = secretToWrite(input, keys.privateKey, config);
  return { ...(secret ? { secret } : {}), events };
}

/** Whether the peer (this very object: its uid) is the Secret's controller. */
function ownedBy(secret: Secret, peer: WireGuardPeer): boolean {
  return (secret.metadata.ownerReferences ?? []).some(
    (ref) => ref.controller === true && ref.uid === peer.metadata.uid,
  );
}

function decoded(secret: Secret | undefined, key: string): string | undefined {
  const value = secret?.data?.[key];
  return value === undefined ? undefined : Buffer.from(value, 'base64').toString('utf8');
}

/** The Secret holding `privateKey` and `config`, or undefined when the input's already does. */
function secretToWrite(input: PeerReconcileInput, privateKey: string, config?: string): Secret | undefined {
  const { peer, secret } = input;
  const name = peer.metadata.name ?? '';
  const data: Record<string, string> = {
    [privateKeySecretKey]: Buffer.from(privateKey).toString('base64'),
    ...(config === undefined ? {} : { [configSecretKey]: Buffer.from(config).toString('base64') }),
  };
  const labelled = secret?.metadata.labels?.[peerLabel] === name;
  if (secret && labelled && secret.type === 'Opaque' && isDeepStrictEqual(secret.data ?? {}, data)) {
    return undefined;
  }
  const labels = { ...secret?.metadata.labels, [peerLabel]: name };
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: secret
      ? { ...secret.metadata, labels }
      : {
          name: configSecretName(peer),
          namespace: peer.metadata.namespace,
          labels,
          ownerReferences: [
            {
              apiVersion,
              kind: 'WireGuardPeer',
              name,
              uid: peer.metadata.uid ?? '',
              controller: true,
              blockOwnerDeletion: true,
            },
          ],
        },
    type: 'Opaque',
    data,
  };
}

// --- address ------------------------------------------------------------------------------------

/** The peer's Network and tunnel address, or why it has none. */
function place(input: PeerReconcileInput): { network?: Network; address?: string; problems: Problem[] } {
  const { peer } = input;
  const key = `${peer.metadata.namespace}/${peer.spec.network}`;
  const network = input.networks.find(
    (candidate) =>
      candidate.metadata.namespace === peer.metadata.namespace &&
      candidate.metadata.name === peer.spec.network,
  );
  if (network === undefined) {
    return {
      problems: [
        { reason: 'NetworkNotFound', message: `spec.network: Network ${key} does not exist`, failed: false },
      ],
    };
  }
  const server = network.spec.wireguard;
  if (!server?.enabled) {
    return {
      network,
      problems: [
        {
          reason: 'NoWireGuardServer',
          message: `spec.network: Network ${key} has no WireGuard server; enable its spec.wireguard`,
          failed: false,
        },
      ],
    };
  }
  // allocatePeers reads only the allocation's WireGuard server; the rest needs the Router.
  const allocation = {
    wireguard: { address: firstHost(server.cidr), port: server.port, cidr: server.cidr },
  } as NetworkAllocation;
  const object = `WireGuardPeer ${objectKey(peer)}`;
  const others = input.peers.filter((other) => objectKey(other) !== objectKey(peer));
  const { peers, problems } = allocatePeers(
    network,
    allocation,
    [...others, peer],
    routesOf(network, input.networks),
  );
  const address = peers.find((allocated) => allocated.peer === peer.metadata.name)?.address;
  return {
    network,
    ...(address === undefined ? {} : { address }),
    problems: problems
      .filter((problem) => problem.object === object)
      .map(({ field, message }) => {
        const [reason, failed] = field.startsWith('spec.allowedIPs')
          ? ['AllowedIPsConflict', true]
          : peer.spec.address !== undefined
            ? ['AddressUnavailable', true]
            : ['AddressExhausted', false];
        return { reason, message: `${field}: ${message}`, failed };
      }),
  };
}

/** allocateNetwork's rule for the server's address: the first host of its cidr. */
function firstHost(cidr: string): string {
  const n = ipv4ToNumber(cidr.slice(0, cidr.indexOf('/'))) + 1;
  return [24, 16, 8, 0].map((shift) => (n >>> shift) & 255).join('.');
}

/**
 * What the Network's Router routes, as the Network controller hands it to allocatePeers: every
 * Network on it and their WireGuard subnets. Networks of other namespaces go unnamed, so one
 * tenant's condition never tells another tenant's Network names.
 */
function routesOf(network: Network, networks: readonly Network[]): Route[] {
  const router = network.status?.router;
  return networks
    .filter(
      (other) =>
        objectKey(other) === objectKey(network) || (router !== undefined && other.status?.router === router),
    )
    .flatMap((other) => {
      const owner =
        other.metadata.namespace === network.metadata.namespace
          ? `Network ${objectKey(other)}`
          : 'a Network of another namespace';
      const wireguard = other.spec.wireguard;
      return [
        { cidr: other.spec.cidr, owner },
        ...(wireguard?.enabled ? [{ cidr: wireguard.cidr, owner: `the WireGuard server of ${owner}` }] : []),
      ];
    });
}

// --- client config ------------------------------------------------------------------------------

/**
 * The wg-quick config for a generated key; undefined until the Network reports its server's
 * public key and endpoint (spec.wireguard.endpoint wins over the one status reports), a Problem
 * when the Network's addressing is broken. DNS is the Network's spec.dns, else its gateway, as
 * DHCP announces it on the Network.
 */
function clientConfig(
  peer: WireGuardPeer,
  network: Network,
  address: string,
  privateKey: string,
): string | Problem | undefined {
  const server = network.spec.wireguard;
  const serverPublicKey = network.status?.wireguard?.publicKey;
  const endpoint = server?.endpoint ?? network.status?.wireguard?.endpoint;
  if (server === undefined || serverPublicKey === undefined || endpoint === undefined) return undefined;
  let gateway: string;
  try {
    gateway = networkAddressing(network).gateway;
  } catch (err) {
    if (!(err instanceof AllocationError)) throw err;
    return {
      reason: 'InvalidNetwork',
      message: `Network ${objectKey(network)}: ${err.message}`,
      failed: false,
    };
  }
  return renderClientConfig({
    privateKey,
    address,
    dns: network.spec.dns ?? [gateway],
    serverPublicKey,
    endpoint,
    allowedIPs: [network.spec.cidr, server.cidr],
    persistentKeepalive: peer.spec.persistentKeepalive,
  });
}
