/**
 * A test double of the network agent's driver, for testing the controllers before and without a
 * router: it keeps the Networks it was given in memory, answers network.apply and network.delete
 * in the shape the Network controller reads (ObservedNetwork: the generation and config hash it
 * applied, its WireGuard server's key and endpoint, the peers it configured), reports its
 * Networks as inventory, and records every job.
 */
import { status } from '@grpc/grpc-js';
import {
  configHashAnnotation,
  type NetworkJobObject,
  type ObservedNetwork,
} from '../../../controllers/network/reconcile.js';
import { generateKeyPair } from '../../../controllers/wireguardpeer/client-config.js';
import type { AgentJob, Driver, DriverEvents, InventoryItem, JobOutcome } from '../driver.js';

interface ServedNetwork {
  ref: { kind: string; namespace: string; name: string; uid: string };
  observed: ObservedNetwork;
}

export class RecordingRouter implements Driver {
  readonly capabilities = ['vxlan', 'wireguard'];
  /** Every job handed to the driver, in the order it started. */
  readonly jobs: AgentJob[] = [];
  private readonly networks = new Map<string, ServedNetwork>();
  /** One WireGuard key per Network, made here as a real router makes its own. */
  private readonly serverKeys = new Map<string, string>();
  private events: DriverEvents | undefined;

  async facts(): Promise<Record<string, string>> {
    return { driver: 'recording' };
  }

  async start(events: DriverEvents): Promise<void> {
    this.events = events;
  }

  async inventory(): Promise<InventoryItem[]> {
    return [...this.networks.values()].map(({ ref, observed }) => ({ ref, observed }));
  }

  /** The Networks served now, by namespace/name. */
  served(): Map<string, ObservedNetwork> {
    return new Map([...this.networks.values()].map((n) => [`${n.ref.namespace}/${n.ref.name}`, n.observed]));
  }

  async handle(job: AgentJob): Promise<JobOutcome> {
    this.jobs.push(job);
    const object = job.object as unknown as NetworkJobObject;
    const { namespace, name, uid, generation, annotations } = object.metadata;
    const ref = { kind: 'Network', namespace, name, uid };
    if (job.type === 'network.delete') {
      this.networks.delete(uid);
      this.serverKeys.delete(uid);
      this.events?.inventoryChanged({ removed: [ref] });
      return { code: status.OK, observed: { deleted: true } satisfies ObservedNetwork };
    }
    if (job.type !== 'network.apply') return { code: status.UNIMPLEMENTED, message: `no ${job.type} here` };
    const server = object.spec.wireguard;
    const observed: ObservedNetwork = {
      generation,
      ...(annotations ? { configHash: annotations[configHashAnnotation] } : {}),
      ...(server?.enabled
        ? {
            wireguard: {
              publicKey: this.serverKey(uid),
              endpoint: server.endpoint ?? `127.0.0.1:${server.port}`,
            },
          }
        : {}),
      peers: (object.peers ?? []).map((peer) => peer.peer),
      leases: (object.leases ?? []).map((lease) => `${lease.mac}=${lease.address}`),
    };
    this.networks.set(uid, { ref, observed });
    return { code: status.OK, observed };
  }

  private serverKey(uid: string): string {
    const key = this.serverKeys.get(uid) ?? generateKeyPair().publicKey;
    this.serverKeys.set(uid, key);
    return key;
  }
}
