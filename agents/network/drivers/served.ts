/**
 * What both router drivers (linux, openwrt) share: the Networks they serve, kept one file each in
 * <stateDir>/networks/ so a restarted agent serves (and reports) them again; the router model of
 * those Networks, rebuilt from the stored network.apply objects; the check that a new object fits
 * next to the others; and the observed state a job answers with.
 */

import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { objectKey } from '../../../controllers/network/allocate.js';
import {
  configHashAnnotation,
  type NetworkJobObject,
  type ObservedNetwork,
} from '../../../controllers/network/reconcile.js';
import { isLoamError, LoamError } from '../../../crds/errors.js';
import { apiVersion, networkKind, routerKind } from '../../../crds/v1alpha1/index.js';
import { validateObject } from '../../../crds/validate.js';
import type { InventoryItem, JobOutcome, ResourceRef } from '../../runtime/driver.js';
import {
  buildRouterModel,
  type NetworkModel,
  type RouterDriver,
  type RouterModel,
  type RouterModelResult,
  type RouterSettings,
} from '../model.js';

/** A Network as a driver keeps it: the network.apply object, what it answered, and since when. */
export interface Served {
  object: NetworkJobObject;
  observed: ObservedNetwork;
  /**
   * When the driver first accepted it: its creationTimestamp for buildRouterModel (jobs carry
   * none), so a Network already served wins over a newcomer that collides with it.
   */
  acceptedAt: string;
}

/** By namespace/name. */
export type ServedMap = ReadonlyMap<string, Served>;

export function keyOf(object: Pick<NetworkJobObject, 'metadata'>): string {
  return `${object.metadata?.namespace}/${object.metadata?.name}`;
}

export function refOf(object: NetworkJobObject): ResourceRef {
  const { namespace, name, uid } = object.metadata;
  return { kind: 'Network', namespace, name, uid } as ResourceRef;
}

/** The router's model of `networks`; throws LoamError Invalid when `current`'s object is malformed. */
export function buildServedModel(
  networks: ServedMap,
  settings: RouterSettings,
  current?: NetworkJobObject,
): RouterModelResult {
  const routerObject = (current ?? networks.values().next().value?.object)?.router;
  if (!routerObject) {
    throw new LoamError('Invalid', 'network.apply carries no router');
  }
  const router = validateObject(routerKind, {
    apiVersion,
    kind: 'Router',
    metadata: { name: routerObject.metadata?.name },
    spec: routerObject.spec,
  });
  const parsed = [...networks.values()].map(({ object, acceptedAt }) => ({
    network: validateObject(networkKind, {
      apiVersion,
      kind: 'Network',
      metadata: { ...object.metadata, creationTimestamp: acceptedAt },
      spec: object.spec,
      status: object.status,
    }),
    object,
  }));
  return buildRouterModel({
    router,
    networks: parsed.map((p) => p.network),
    instances: [],
    peers: [],
    settings,
    allocated: new Map(
      parsed.map(({ network, object }) => [
        objectKey(network),
        { leases: object.leases ?? [], peers: object.peers ?? [] },
      ]),
    ),
  });
}

/** The model of Networks a driver already accepted (they were valid and fitted together). */
export function servedModel(
  networks: ServedMap,
  settings: RouterSettings,
  driver: RouterDriver,
): RouterModel {
  if (networks.size === 0) return { router: '', driver, settings, networks: [] };
  return buildServedModel(networks, settings).model;
}

export interface Admitted {
  /** The Networks served once the job is done: the current ones with `object` added or replaced. */
  next: Map<string, Served>;
  model: RouterModel;
  /** `object`'s Network in `model`. */
  network: NetworkModel;
  acceptedAt: string;
}

/**
 * The router with `object` served next to `networks`, or INVALID_ARGUMENT when it is malformed or
 * does not fit (overlapping CIDRs, a segment taken): then nothing may change.
 */
export function admit(
  networks: ServedMap,
  object: NetworkJobObject,
  settings: RouterSettings,
): Admitted | JobOutcome {
  const key = keyOf(object);
  const acceptedAt = networks.get(key)?.acceptedAt ?? new Date().toISOString();
  const next = new Map(networks).set(key, { object, observed: {}, acceptedAt });
  let built: RouterModelResult;
  try {
    built = buildServedModel(next, settings, object);
  } catch (err) {
    if (isLoamError(err, 'Invalid')) return { code: status.INVALID_ARGUMENT, message: err.message };
    throw err;
  }
  const problems = built.problems.filter((problem) => problem.object === `Network ${key}`);
  if (problems.length > 0) {
    return {
      code: status.INVALID_ARGUMENT,
      message: problems.map((p) => `${p.field}: ${p.message}`).join('; '),
    };
  }
  const network = built.model.networks.find((n) => `${n.namespace}/${n.name}` === key);
  if (!network) throw new Error(`Network ${key} is missing from its own plan`);
  return { next, model: built.model, network, acceptedAt };
}

/**
 * What a job reports of a served Network: the generation and config hash it applied, the
 * WireGuard server's public key (never the private one) with the endpoint clients dial, and the
 * peers configured.
 */
export function observedOf(
  object: NetworkJobObject,
  network: NetworkModel,
  publicKey: string | undefined,
  wireguardEndpoint: string | undefined,
): ObservedNetwork {
  const annotation = object.metadata.annotations?.[configHashAnnotation];
  const server = object.spec.wireguard;
  let wireguard: ObservedNetwork['wireguard'];
  if (network.wireguard && server?.enabled && publicKey !== undefined) {
    const host = wireguardEndpoint;
    const endpoint =
      server.endpoint ??
      (host === undefined
        ? undefined
        : `${host.includes(':') ? `[${host}]` : host}:${network.wireguard.port}`);
    wireguard = { publicKey, ...(endpoint ? { endpoint } : {}) };
  }
  return {
    generation: object.metadata.generation,
    ...(annotation === undefined ? {} : { configHash: annotation }),
    ...(wireguard ? { wireguard } : {}),
    peers: (network.wireguard?.peers ?? []).map((peer) => peer.peer),
    leases: (network.dhcp?.leases ?? []).map((lease) => `${lease.mac}=${lease.address}`),
  };
}

/** The served Networks on disk, one JSON file each in <stateDir>/networks/. */
export class ServedStore {
  private loaded: Promise<Map<string, Served>> | undefined;

  constructor(private readonly stateDir: string) {}

  /** Reads the stored Networks once; an agent that never served one has no directory yet, and makes none. */
  load(): Promise<Map<string, Served>> {
    this.loaded ??= (async () => {
      const dir = join(this.stateDir, 'networks');
      const files = await readdir(dir).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return [];
        throw err;
      });
      const networks = new Map<string, Served>();
      for (const name of files.filter((n) => n.endsWith('.json')).sort()) {
        const served = JSON.parse(await readFile(join(dir, name), 'utf8')) as Served;
        networks.set(keyOf(served.object), served);
      }
      return networks;
    })();
    return this.loaded;
  }

  /** Keeps `object` served, answering `observed`: on disk, then in the loaded Networks. */
  async keep(
    object: NetworkJobObject,
    observed: ObservedNetwork,
    acceptedAt: string,
  ): Promise<InventoryItem> {
    const key = keyOf(object);
    const served: Served = { object, observed, acceptedAt };
    const file = this.file(key);
    await mkdir(join(this.stateDir, 'networks'), { recursive: true, mode: 0o700 });
    await writeFile(`${file}.tmp`, `${JSON.stringify(served, null, 2)}\n`);
    await rename(`${file}.tmp`, file);
    (await this.load()).set(key, served);
    return { ref: refOf(object), observed };
  }

  /** Stops keeping `object`: on disk, then in the loaded Networks. */
  async forget(object: NetworkJobObject): Promise<void> {
    const key = keyOf(object);
    await rm(this.file(key), { force: true });
    (await this.load()).delete(key);
  }

  private file(key: string): string {
    return join(this.stateDir, 'networks', `${key.replace('/', '_')}.json`);
  }
}

/** Runs jobs one at a time: each plans the whole router. */
export class JobQueue {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(work: () => Promise<T>): Promise<T> {
    const result = this.tail.then(work);
    this.tail = result.catch(() => undefined);
    return result;
  }
}
