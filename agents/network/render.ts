/**
 * `loam render`: the configuration the network agent would apply to a router for the Networks,
 * WireGuardPeers, Instances and Routers in some manifests, printed and never applied, so an
 * admin can review what Loam will do to a router first. Segments and addresses are taken from
 * the manifests where given and allocated as the controller would otherwise.
 */

import ipaddr from 'ipaddr.js';
import { objectKey } from '../../controllers/network/allocate.js';
import { isLoamError } from '../../crds/errors.js';
import { validateManifests } from '../../crds/manifests.js';
import type { Instance, Network, Router, WireGuardPeer } from '../../crds/v1alpha1/index.js';
import { apiVersion, routerKind } from '../../crds/v1alpha1/index.js';
import { validateObject } from '../../crds/validate.js';
import { planCommands, planLinux } from './linux-plan.js';
import {
  buildRouterModel,
  defaultRouterSettings,
  type RouterDriver,
  type RouterModel,
  type RouterSettings,
} from './model.js';
import { renderUci, uciBatch } from './uci.js';
import { formatBatch } from './uci-format.js';

export interface ManifestFile {
  /** How errors name the file (`-` for stdin). */
  name: string;
  text: string;
}

export interface RenderOptions {
  driver: RouterDriver;
  /** The Router to render for: one from the manifests, or a default Router of this name. */
  router?: string;
  wan?: string;
  trunk?: string;
  uplink?: string;
  vxlanLocal?: string;
  vxlanGroup?: string;
  /** The hypervisors' VXLAN endpoints. */
  vteps?: string[];
}

export interface RenderResult {
  /** What the agent would apply; empty when the input is invalid. */
  output: string;
  /** Invalid input, and objects the router cannot serve (the rest is still rendered). */
  errors: string[];
  notes: string[];
}

/** Used when neither --router nor a Router manifest names one. */
export const defaultRouterName = 'router';

export function renderManifests(files: readonly ManifestFile[], options: RenderOptions): RenderResult {
  const { model, errors, notes } = modelFromManifests(files, options);
  if (!model) return { output: '', errors, notes };
  return { output: model.driver === 'openwrt' ? openwrtOutput(model) : linuxOutput(model), errors, notes };
}

/**
 * The router model for the objects in `files`: what render prints. Without a model the input was
 * invalid; with one, `errors` lists the objects it had to leave out.
 */
export function modelFromManifests(
  files: readonly ManifestFile[],
  options: RenderOptions,
): { model?: RouterModel; errors: string[]; notes: string[] } {
  const notes: string[] = [];
  const settings = routerSettings(options);
  const objects = readObjects(files);
  const errors = [...settings.errors, ...objects.errors];
  const router = errors.length === 0 ? chooseRouter(objects.routers, options, notes, errors) : undefined;
  if (!router) return { errors, notes };

  const routerName = router.metadata.name;
  const networks = objects.networks.filter((network) => {
    const placement = network.spec.router ?? network.status?.router;
    if (placement === undefined || placement === routerName) return true;
    notes.push(`Network ${objectKey(network)} is placed on router ${placement}, not ${routerName}: left out`);
    return false;
  });
  const known = new Set(objects.networks.map(objectKey));
  for (const peer of objects.peers) {
    const network = `${peer.metadata.namespace}/${peer.spec.network}`;
    if (!known.has(network))
      notes.push(`WireGuardPeer ${objectKey(peer)}: Network ${network} is not in the manifests`);
  }
  for (const instance of objects.instances) {
    for (const attachment of instance.spec.networks ?? []) {
      const network = `${instance.metadata.namespace}/${attachment.name}`;
      if (!known.has(network))
        notes.push(`Instance ${objectKey(instance)}: Network ${network} is not in the manifests`);
    }
  }

  const result = buildRouterModel({
    router,
    networks,
    instances: objects.instances,
    peers: objects.peers,
    settings: settings.value,
  });
  const { model } = result;
  if (
    model.networks.some((network) => network.segment.type === 'vxlan') &&
    model.settings.vxlan.remotes.length === 0 &&
    model.settings.vxlan.group === undefined
  ) {
    notes.push('no --vtep or --vxlan-group: the VXLAN segments reach no hypervisor yet');
  }
  return {
    model,
    errors: [...errors, ...result.problems.map((p) => `${p.object}: ${p.field}: ${p.message}`)],
    notes: [...notes, ...result.notes],
  };
}

function routerSettings(options: RenderOptions): { value: RouterSettings; errors: string[] } {
  const defaults = defaultRouterSettings(options.driver);
  const errors: string[] = [];
  const address = (flag: string, value: string | undefined, multicast = false) => {
    if (value === undefined) return;
    const valid = ipaddr.IPv4.isValidFourPartDecimal(value);
    if (!valid || (ipaddr.IPv4.parse(value).range() === 'multicast') !== multicast) {
      errors.push(
        `${flag}: Invalid value: ${JSON.stringify(value)}: must be an IPv4 ${multicast ? 'multicast ' : ''}address`,
      );
    }
  };
  const device = (flag: string, value: string | undefined) => {
    if (value !== undefined && !/^[A-Za-z0-9_.-]{1,15}$/.test(value)) {
      errors.push(
        `${flag}: Invalid value: ${JSON.stringify(value)}: must be a device, interface or zone name`,
      );
    }
  };
  device('--wan', options.wan);
  device('--trunk', options.trunk);
  device('--uplink', options.uplink);
  address('--vxlan-local', options.vxlanLocal);
  address('--vxlan-group', options.vxlanGroup, true);
  for (const vtep of options.vteps ?? []) address('--vtep', vtep);
  return {
    value: {
      ...defaults,
      wan: options.wan ?? defaults.wan,
      ...(options.trunk === undefined ? {} : { trunk: options.trunk }),
      vxlan: {
        ...defaults.vxlan,
        ...(options.vxlanLocal === undefined ? {} : { local: options.vxlanLocal }),
        ...(options.uplink === undefined ? {} : { uplink: options.uplink }),
        ...(options.vxlanGroup === undefined ? {} : { group: options.vxlanGroup }),
        remotes: options.vteps ?? [],
      },
    },
    errors,
  };
}

interface ManifestObjects {
  routers: Router[];
  networks: Network[];
  peers: WireGuardPeer[];
  instances: Instance[];
  errors: string[];
}

/** The valid objects of the kinds render uses, with defaults and the default namespace applied. */
function readObjects(files: readonly ManifestFile[]): ManifestObjects {
  const objects: ManifestObjects = { routers: [], networks: [], peers: [], instances: [], errors: [] };
  const seen = new Map<string, string>();
  for (const file of files) {
    for (const result of validateManifests(file.text)) {
      const where = `${file.name}: ${result.name}`;
      objects.errors.push(...result.errors.map((error) => `${where}: ${error}`));
      const object = result.object as
        | Router
        | Network
        | WireGuardPeer
        | Instance
        | { kind: 'Host' }
        | undefined;
      if (object === undefined || object.kind === 'Host') continue;
      if (object.metadata.name === undefined) {
        objects.errors.push(`${where}: metadata.name: Required value: render needs objects with names`);
        continue;
      }
      if (object.kind !== 'Router') object.metadata.namespace ??= 'default';
      const key = `${object.kind} ${objectKey(object)}`;
      const earlier = seen.get(key);
      if (earlier !== undefined) {
        objects.errors.push(`${where}: ${key} is also defined in ${earlier}`);
        continue;
      }
      seen.set(key, file.name);
      if (object.kind === 'Router') objects.routers.push(object);
      else if (object.kind === 'Network') objects.networks.push(object);
      else if (object.kind === 'WireGuardPeer') objects.peers.push(object);
      else objects.instances.push(object);
    }
  }
  return objects;
}

/** The Router named by --router, or the only one in the manifests, or a default one when there is none. */
function chooseRouter(
  routers: readonly Router[],
  options: RenderOptions,
  notes: string[],
  errors: string[],
): Router | undefined {
  const { driver } = options;
  if (routers.length === 0) return defaultRouter(options.router ?? defaultRouterName, driver, notes, errors);
  const names = routers.map((r) => r.metadata.name).join(', ');
  if (options.router === undefined && routers.length > 1) {
    errors.push(`--router: the manifests hold several Routers; choose one of ${names}`);
    return undefined;
  }
  const router =
    options.router === undefined ? routers[0] : routers.find((r) => r.metadata.name === options.router);
  if (!router) {
    errors.push(`--router: no Router ${options.router} in the manifests (they hold ${names})`);
    return undefined;
  }
  if (router.spec.driver === driver) return router;
  notes.push(
    `Router ${router.metadata.name} uses the ${router.spec.driver} driver; rendering for ${driver} as asked`,
  );
  return { ...router, spec: { ...router.spec, driver } };
}

/** A Router as its agent would enroll it: the schema's defaults. */
function defaultRouter(
  name: string,
  driver: RouterDriver,
  notes: string[],
  errors: string[],
): Router | undefined {
  try {
    const router = validateObject(routerKind, {
      apiVersion,
      kind: 'Router',
      metadata: { name },
      spec: { driver },
    });
    const pools = Object.entries(router.spec.segmentPool).map(([type, r]) => `${type} ${r.start}-${r.end}`);
    notes.push(
      `no Router in the manifests: rendering for Router ${name} (${driver}, segment pool ${pools.join(', ')})`,
    );
    return router;
  } catch (err) {
    if (!isLoamError(err, 'Invalid')) throw err;
    errors.push(`--router: ${err.message}`);
    return undefined;
  }
}

function summary(model: RouterModel, how: string): string[] {
  const lines = [
    `# Loam: what the network agent applies to router ${model.router} (${model.driver}), ${how}.`,
  ];
  if (model.networks.length === 0)
    lines.push('# No Networks: everything Loam made on the router is removed.');
  for (const network of model.networks) {
    const parts = [
      `${network.segment.type} ${network.segment.id}`,
      network.cidr,
      `gateway ${network.gateway}`,
      network.dhcp
        ? `DHCP ${network.dhcp.start}-${network.dhcp.end}, static leases: ${network.dhcp.leases.length}`
        : 'no DHCP',
      network.egress ? 'egress' : 'no egress',
      ...(network.wireguard
        ? [
            `WireGuard ${network.wireguard.address} port ${network.wireguard.port}, peers: ${network.wireguard.peers.length}`,
          ]
        : []),
    ];
    lines.push(`# ${network.namespace}/${network.name} (${network.names.interface}): ${parts.join(', ')}`);
  }
  return lines;
}

function openwrtOutput(model: RouterModel): string {
  return [
    ...summary(model, 'as a uci batch for a router without Loam sections'),
    '# Only sections named loam_* are touched; the router adds each WireGuard private_key itself.',
    formatBatch(uciBatch(renderUci(model))),
  ].join('\n');
}

function linuxOutput(model: RouterModel): string {
  const plan = planLinux(model);
  const files = [plan.nftables, ...plan.wireguard.map((w) => w.config), ...plan.dnsmasq.map((d) => d.config)];
  return [
    ...summary(model, 'as commands for a router without Loam links, and the files they read'),
    ...(plan.wireguard.length > 0
      ? ['# First each WireGuard private key is made on the router (wg genkey, mode 0600) where none exists.']
      : []),
    ...planCommands(plan).map((argv) => argv.map(shellWord).join(' ')),
    ...files.flatMap((file) => ['', `==> ${file.path} <==`, file.content.trimEnd()]),
    '',
  ].join('\n');
}

function shellWord(word: string): string {
  return /^[A-Za-z0-9_./:=,@%+-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`;
}
