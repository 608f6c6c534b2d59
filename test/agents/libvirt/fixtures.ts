/** Instances, host inputs and a libvirt test-driver session shared by the libvirt agent's tests. */

import type { DomainInputs } from '../../../agents/libvirt/domain-xml.js';
import { Virsh } from '../../../agents/libvirt/virsh.js';
import { type Instance, instanceKind } from '../../../crds/v1alpha1/instance.js';
import { validateObject } from '../../../crds/validate.js';

const sha = (digit: string) => digit.repeat(64);

/** A validated (defaulted) Instance; `spec` replaces the default kernel boot. */
export function instance(
  name: string,
  spec: Record<string, unknown> = {},
  metadata: Record<string, unknown> = {},
): Instance {
  return validateObject(instanceKind, {
    apiVersion: 'loam.dev/v1alpha1',
    kind: 'Instance',
    metadata: { name, namespace: 'team-a', uid: uidFor(name), generation: 1, ...metadata },
    spec: { kernel: { url: 'https://example.org/vmlinuz', sha256: sha('a') }, ...spec },
  });
}

/** A stable UUID per name, so tests can look domains up. */
export function uidFor(name: string): string {
  let hash = 0;
  for (const c of name) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  return `6c0a0000-0000-4000-8000-${hash.toString(16).padStart(12, '0')}`;
}

export const imageSpec = {
  kernel: undefined,
  image: { url: 'https://example.org/debian.qcow2', sha256: sha('b') },
};

/** What the agent's disk, image and network stages would hand over for `inst`. */
export function inputsFor(inst: Instance, overrides: Partial<DomainInputs> = {}): DomainInputs {
  const dir = `/var/lib/loam/instances/${inst.metadata.uid}`;
  const { spec } = inst;
  return {
    domainType: 'qemu',
    interfaces: (spec.networks ?? []).map((network, index) => ({
      network: network.name,
      bridge: `loam-br${index}`,
      mac: `52:54:00:00:00:${index.toString(16).padStart(2, '0')}`,
    })),
    rootDisk: spec.image === undefined ? undefined : `${dir}/root.qcow2`,
    dataDisks: (spec.disks ?? []).map((disk) => ({ name: disk.name, path: `${dir}/${disk.name}.qcow2` })),
    seedIso: spec.cloudInit === undefined ? undefined : `${dir}/seed.iso`,
    kernel:
      spec.kernel === undefined
        ? undefined
        : { path: `${dir}/vmlinuz`, initrd: spec.kernel.initrd === undefined ? undefined : `${dir}/initrd` },
    consoleLog: `${dir}/console.log`,
    ...overrides,
  };
}

/** libvirt's test driver in one virsh session: its state lasts as long as the session. */
export function testDriver(options: { pollIntervalMs?: number } = {}): Virsh {
  return new Virsh({ uri: 'test:///default', session: true, timeoutMs: 10_000, ...options });
}
