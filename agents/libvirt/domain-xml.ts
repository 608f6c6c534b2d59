/**
 * Instance <-> libvirt domain XML, both ways, with no I/O. Building takes the validated Instance
 * and what the agent prepared on the host for it (DomainInputs); parsing reads what
 * `virsh dumpxml` returns back into the Loam identity and the facts the agent reports.
 *
 * The identity lives in <metadata> under Loam's namespace, so after a restart the agent knows
 * which domains are its own without any local database. Next to it sits a hash of the rest of
 * the definition: libvirt rewrites the XML it is given (canonical machine types, PCI addresses,
 * default controllers), so comparing texts cannot tell whether a definition is current.
 */

import { createHash } from 'node:crypto';
import { XMLBuilder, XMLParser } from 'fast-xml-parser';
import { LoamError } from '../../crds/errors.js';
import { parseQuantity } from '../../crds/quantity.js';
import type { Instance } from '../../crds/v1alpha1/instance.js';

export const loamNamespaceUri = 'https://loam.dev/xmlns/libvirt/instance/v1alpha1';
const prefix = 'loam';

/** kvm when the preflight probe found KVM usable, qemu (TCG, software emulation) otherwise. */
export type DomainType = 'kvm' | 'qemu';

/** What the agent prepared on this host for one Instance: the later stages' outputs, by path. */
export interface DomainInputs {
  domainType: DomainType;
  /** Per spec.networks entry (any order): the Network's host bridge and the MAC the controller assigned. */
  interfaces: { network: string; bridge: string; mac: string }[];
  /** Image boot: the qcow2 overlay on the cached base image. */
  rootDisk?: string;
  /** Per spec.disks entry (any order): its qcow2 file. */
  dataDisks: { name: string; path: string }[];
  /** Image boot with cloudInit: the NoCloud seed ISO (volume label cidata). */
  seedIso?: string;
  /** Kernel boot: the verified local copies of spec.kernel and its initrd. */
  kernel?: { path: string; initrd?: string };
  /** Where libvirt appends everything the guest writes on its serial console. */
  consoleLog: string;
}

/** Who a domain belongs to, as recorded in its metadata. */
export interface LoamIdentity {
  namespace: string;
  name: string;
  uid: string;
  /** The Instance generation the definition was last written for. */
  generation: number;
  /** sha256 of the definition without the generation and the hash (see buildDomain). */
  specHash: string;
}

export interface DesiredDomain {
  name: string;
  uuid: string;
  xml: string;
  identity: LoamIdentity;
}

/** What a domain XML says, Loam's or not; identity only when it carries Loam metadata. */
export interface DomainFacts {
  name: string;
  uuid: string;
  type: string;
  vcpus: number;
  memoryBytes: number;
  machine?: string;
  identity?: LoamIdentity;
  disks: { target: string; device: string; source?: string }[];
  interfaces: { mac?: string; bridge?: string }[];
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  consoleLog?: string;
  /** The pty device of the first serial port, e.g. /dev/pts/3: in the live XML of a running domain only. */
  consolePty?: string;
}

// Logs and runtime directories are named after the domain (/var/log/libvirt/qemu/<name>.log), so a
// name must stay well inside the 255 bytes of a file name.
const maxDomainNameLength = 200;

/**
 * `loam.<namespace>.<name>`: readable in `virsh list`, and distinct for distinct Instances because
 * a namespace is a DNS label and cannot contain the dot. Names too long for libvirt's file names
 * are cut and made distinct again with a hash of the full pair.
 */
export function domainName(namespace: string, name: string): string {
  const full = `${prefix}.${namespace}.${name}`;
  if (full.length <= maxDomainNameLength) return full;
  const digest = createHash('sha256').update(`${namespace}/${name}`).digest('hex').slice(0, 12);
  return `${full.slice(0, maxDomainNameLength - digest.length - 1)}-${digest}`;
}

// Lower case, as Kubernetes writes uids and libvirt prints UUIDs, so the two compare as strings.
const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

// Attributes are '@_name' keys, text is '#text'; empty strings become self-closing elements.
const builder = new XMLBuilder({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  format: true,
  suppressEmptyNode: true,
});

/** The domain for `instance` on this host. Throws LoamError('Invalid') when inputs do not fit it. */
export function buildDomain(instance: Instance, inputs: DomainInputs): DesiredDomain {
  const { metadata, spec } = instance;
  const namespace = metadata.namespace ?? 'default';
  const { name: instanceName = '', uid = '' } = metadata;
  if (!uuidPattern.test(uid)) {
    throw invalid(instance, `metadata.uid ${JSON.stringify(uid)} is not a UUID; it becomes the domain UUID`);
  }
  const devices = devicesOf(instance, inputs);
  const name = domainName(namespace, instanceName);
  const body = (identity: Record<string, string | number>) => ({
    domain: {
      '@_type': inputs.domainType,
      name,
      uuid: uid,
      metadata: { [`${prefix}:instance`]: { [`@_xmlns:${prefix}`]: loamNamespaceUri, ...identity } },
      // The unit is explicit: libvirt's default unit is KiB, and bytes round up to whole KiB.
      memory: { '@_unit': 'KiB', '#text': String((parseQuantity(spec.memory) + 1023n) / 1024n) },
      vcpu: spec.cpus,
      os: osElement(spec.machineType, spec.kernel?.cmdline, inputs),
      // Without ACPI the guest never sees the power button, and shutdown can only destroy.
      features: { acpi: '' },
      clock: { '@_offset': 'utc' },
      // The agent, not libvirt, decides what happens after a stop (runStrategy).
      on_poweroff: 'destroy',
      on_reboot: 'restart',
      on_crash: 'destroy',
      devices: devicesElement(devices, inputs),
    },
  });
  const identityElements = (fields: Partial<LoamIdentity>) =>
    Object.fromEntries(Object.entries(fields).map(([key, value]) => [`${prefix}:${key}`, value]));
  const base = { namespace, name: instanceName, uid };
  const specHash = createHash('sha256')
    .update(builder.build(body(identityElements(base))))
    .digest('hex');
  const identity: LoamIdentity = { ...base, generation: metadata.generation ?? 0, specHash };
  return { name, uuid: uid, identity, xml: builder.build(body(identityElements(identity))) };
}

function osElement(machine: string | undefined, cmdline: string | undefined, inputs: DomainInputs) {
  // No arch: libvirt picks the host's.
  const type = { '@_machine': machine, '#text': 'hvm' };
  if (inputs.kernel === undefined) return { type, boot: { '@_dev': 'hd' } };
  return { type, kernel: inputs.kernel.path, initrd: inputs.kernel.initrd, cmdline };
}

/** The Instance's disk files and NICs in spec order (vdb is the first data disk, the first NIC the first network). */
interface Devices {
  files: string[];
  nics: DomainInputs['interfaces'];
}

function devicesElement({ files, nics }: Devices, inputs: DomainInputs) {
  const disks: object[] = files.map((file, index) => ({
    '@_type': 'file',
    '@_device': 'disk',
    driver: { '@_name': 'qemu', '@_type': 'qcow2' },
    source: { '@_file': file },
    target: { '@_dev': `vd${diskLetters(index)}`, '@_bus': 'virtio' },
  }));
  if (inputs.seedIso !== undefined) {
    // A read-only virtio disk after the others, as KubeVirt attaches its cloud-init disk: cloud-init
    // finds the seed by its label on any block device, and a guest that boots from its virtio root
    // disk has the driver. A CD-ROM would need a SATA or SCSI driver the guest may lack (Debian's
    // cloud kernel has no AHCI).
    disks.push({
      '@_type': 'file',
      '@_device': 'disk',
      driver: { '@_name': 'qemu', '@_type': 'raw' },
      source: { '@_file': inputs.seedIso },
      target: { '@_dev': `vd${diskLetters(files.length)}`, '@_bus': 'virtio' },
      readonly: '',
    });
  }
  const log = { '@_file': inputs.consoleLog, '@_append': 'on' };
  return {
    disk: disks,
    interface: nics.map((nic) => ({
      '@_type': 'bridge',
      mac: { '@_address': nic.mac },
      source: { '@_bridge': nic.bridge },
      model: { '@_type': 'virtio' },
    })),
    // A pty, so `virsh console` (and Loam's console) can attach; the log keeps what it printed.
    serial: { '@_type': 'pty', log, target: { '@_port': 0 } },
    console: { '@_type': 'pty', target: { '@_type': 'serial', '@_port': 0 } },
  };
}

/** vda, vdb, … vdz, vdaa: libvirt's own disk naming. */
function diskLetters(index: number): string {
  const letter = String.fromCharCode(97 + (index % 26));
  return index < 26 ? letter : diskLetters(Math.floor(index / 26) - 1) + letter;
}

/** The devices in spec order; throws LoamError('Invalid') naming every input the Instance needs that is missing. */
function devicesOf(instance: Instance, inputs: DomainInputs): Devices {
  const { spec } = instance;
  const problems: string[] = [];
  if (spec.image !== undefined && inputs.rootDisk === undefined) problems.push('no root disk for the image');
  if (spec.kernel !== undefined && inputs.kernel === undefined) problems.push('no kernel file');
  if (spec.kernel?.initrd !== undefined && inputs.kernel?.initrd === undefined)
    problems.push('no initrd file');
  if (spec.cloudInit !== undefined && inputs.seedIso === undefined) problems.push('no cloud-init seed ISO');
  const files = (spec.disks ?? []).flatMap(({ name }) => {
    const disk = inputs.dataDisks.find((candidate) => candidate.name === name);
    if (disk === undefined) problems.push(`no file for disk ${name}`);
    return disk === undefined ? [] : [disk.path];
  });
  const nics = (spec.networks ?? []).flatMap(({ name }) => {
    const nic = inputs.interfaces.find((candidate) => candidate.network === name);
    if (nic === undefined) problems.push(`no bridge for network ${name}`);
    return nic === undefined ? [] : [nic];
  });
  if (problems.length > 0) throw invalid(instance, problems.join('; '));
  return { files: inputs.rootDisk === undefined ? files : [inputs.rootDisk, ...files], nics };
}

function invalid(instance: Instance, message: string): LoamError {
  return new LoamError(
    'Invalid',
    `Instance ${instance.metadata.namespace ?? 'default'}/${instance.metadata.name}: ${message}`,
  );
}

// Only elements that can repeat are arrays; values stay strings (a MAC such as 52:54:00:… or a
// name such as 0123 must not turn into numbers). htmlEntities decodes numeric references too.
const repeated = new Set(['disk', 'interface', 'serial', 'console']);
const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  parseTagValue: false,
  parseAttributeValue: false,
  htmlEntities: true,
  isArray: (tagName) => repeated.has(tagName),
});

type Node = Record<string, unknown>;

/** Reads a domain XML (as `virsh dumpxml` prints it). Throws LoamError('Invalid') when it is not one. */
export function parseDomainXml(xml: string): DomainFacts {
  let domain: Node | undefined;
  try {
    domain = child(parser.parse(xml, true) as Node, 'domain');
  } catch (err) {
    throw new LoamError('Invalid', `not a domain XML: ${(err as Error).message}`, { cause: err });
  }
  const name = text(domain, 'name');
  const uuid = text(domain, 'uuid');
  if (domain === undefined || name === undefined || uuid === undefined) {
    throw new LoamError('Invalid', 'not a domain XML: no <domain> with <name> and <uuid>');
  }
  const os = child(domain, 'os');
  const devices = child(domain, 'devices');
  const serial = list(devices, 'serial')[0];
  return {
    name,
    uuid,
    type: attr(domain, 'type') ?? '',
    vcpus: Number(text(domain, 'vcpu') ?? 0),
    // libvirt prints memory in KiB whatever unit it was defined with.
    memoryBytes: Number(text(domain, 'memory') ?? 0) * 1024,
    machine: attr(child(os, 'type'), 'machine'),
    identity: identityOf(child(domain, 'metadata')),
    disks: list(devices, 'disk').map((disk) => ({
      target: attr(child(disk, 'target'), 'dev') ?? '',
      device: attr(disk, 'device') ?? 'disk',
      source: attr(child(disk, 'source'), 'file'),
    })),
    interfaces: list(devices, 'interface').map((nic) => ({
      mac: attr(child(nic, 'mac'), 'address'),
      bridge: attr(child(nic, 'source'), 'bridge'),
    })),
    kernel: text(os, 'kernel'),
    initrd: text(os, 'initrd'),
    cmdline: text(os, 'cmdline'),
    consoleLog: attr(child(serial, 'log'), 'file'),
    consolePty: attr(serial, 'type') === 'pty' ? attr(child(serial, 'source'), 'path') : undefined,
  };
}

/**
 * The Loam element of <metadata>, found by its namespace URI rather than its prefix: libvirt
 * keeps the prefix it was given, but whoever wrote the element chose it.
 */
function identityOf(metadata: Node | undefined): LoamIdentity | undefined {
  for (const [key, element] of Object.entries(metadata ?? {})) {
    const ns = key.split(':')[0];
    if (!isNode(element) || element[`@_xmlns:${ns}`] !== loamNamespaceUri) continue;
    const field = (local: string) => text(element, `${ns}:${local}`);
    const [namespace, name, uid] = [field('namespace'), field('name'), field('uid')];
    if (namespace === undefined || name === undefined || uid === undefined) return undefined;
    return {
      namespace,
      name,
      uid,
      generation: Number(field('generation') ?? 0),
      specHash: field('specHash') ?? '',
    };
  }
  return undefined;
}

function isNode(value: unknown): value is Node {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function child(node: Node | undefined, key: string): Node | undefined {
  const value = node?.[key];
  // <acpi/> parses as '' and <name>x</name> as 'x': both count as present for navigation.
  if (typeof value === 'string') return { '#text': value };
  return isNode(value) ? value : undefined;
}

function list(node: Node | undefined, key: string): Node[] {
  const value = node?.[key];
  return Array.isArray(value) ? value.map((item) => (isNode(item) ? item : { '#text': String(item) })) : [];
}

function textOf(node: Node | undefined): string | undefined {
  const value = node?.['#text'];
  return typeof value === 'string' ? value : undefined;
}

function text(node: Node | undefined, key: string): string | undefined {
  return textOf(child(node, key));
}

function attr(node: Node | undefined, name: string): string | undefined {
  const value = node?.[`@_${name}`];
  return typeof value === 'string' ? value : undefined;
}
