/**
 * cloud-init's NoCloud seed: the files an image boot's guest reads from a disk labelled
 * `cidata` (meta-data, user-data, network-config), made by a pure function, and the ISO built
 * from them with xorriso (or genisoimage, whose options xorriso emulates).
 *
 * The guest's addresses are static: the controller reserved them, and a Network with DHCP hands
 * the same address as a static lease, so both agree.
 */

import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import YAML from 'yaml';
import type { InstanceJobObject } from '../../controllers/instance/reconcile.js';
import { LoamError } from '../../crds/errors.js';
import type { Instance } from '../../crds/v1alpha1/instance.js';
import { CommandFailed, commandError, runCommand } from '../runtime/command.js';

export const seedFileNames = ['meta-data', 'user-data', 'network-config'] as const;
export type SeedFiles = Record<(typeof seedFileNames)[number], string>;

/** What the job says of the guest's NICs: the reserved MACs and addresses, and their Networks. */
export interface SeedPlacement {
  interfaces: InstanceJobObject['status']['interfaces'];
  networks?: InstanceJobObject['networks'];
}

const isoTimeoutMs = 30_000;

/**
 * The seed of an image boot with spec.cloudInit.userData. Throws LoamError('Invalid') for a
 * job that carries only a userDataSecretRef: the agent cannot read Secrets; the controller sends
 * their value inline.
 */
export function seedFiles(instance: Instance, placement: SeedPlacement): SeedFiles {
  const { cloudInit } = instance.spec;
  if (cloudInit === undefined) throw new Error('seedFiles: the Instance has no spec.cloudInit');
  if (cloudInit.userData === undefined) {
    throw new LoamError(
      'Invalid',
      "spec.cloudInit.userDataSecretRef: the controller sends the Secret's value inline, and this job has only the reference",
    );
  }
  const ethernets: Record<string, object> = {};
  let defaultRoute = false;
  for (const [index, { network, mac, ipAddress }] of placement.interfaces.entries()) {
    const name = `eth${index}`;
    const addressing = placement.networks?.find((candidate) => candidate.name === network);
    if (addressing === undefined) {
      // Without the prefix the address cannot be set; the Network's DHCP lease carries it.
      ethernets[name] = { match: { macaddress: mac }, 'set-name': name, dhcp4: true };
      continue;
    }
    const prefix = addressing.cidr.split('/')[1];
    ethernets[name] = {
      match: { macaddress: mac },
      'set-name': name,
      addresses: [`${ipAddress}/${prefix}`],
      // One default route, through the first Network: two would compete.
      ...(defaultRoute ? {} : { routes: [{ to: '0.0.0.0/0', via: addressing.gateway }] }),
      ...(addressing.dns.length === 0 ? {} : { nameservers: { addresses: addressing.dns } }),
    };
    defaultRoute = true;
  }
  const { name, uid } = instance.metadata;
  return {
    'meta-data': yaml({ 'instance-id': uid, 'local-hostname': name }),
    // Verbatim: cloud-init decides what a part without #cloud-config or #! means.
    'user-data': cloudInit.userData,
    'network-config': yaml({ version: 2, ethernets }),
  };
}

/** cloud-init reads YAML 1.1 (PyYAML): a MAC like 52:54:00:12:34:56 must be quoted, or it is a base-60 number. */
function yaml(value: object): string {
  return YAML.stringify(value, { version: '1.1' });
}

/**
 * `<dir>/seed.iso` with `files`, unless the one there already holds them (its content hash is
 * kept in `<dir>/seed.iso.sha256`). Written under a temporary name and renamed, so a guest never
 * sees half an ISO and an interrupted build is redone. Returns the ISO's path.
 */
export async function buildSeedIso(dir: string, files: SeedFiles, signal: AbortSignal): Promise<string> {
  const iso = join(dir, 'seed.iso');
  const hashFile = `${iso}.sha256`;
  const hash = createHash('sha256')
    .update(JSON.stringify(seedFileNames.map((name) => [name, files[name]])))
    .digest('hex');
  if ((await readFile(hashFile, 'utf8').catch(() => undefined)) === hash && (await isFile(iso))) return iso;

  const staging = await mkdtemp(join(dir, '.seed-'));
  const suffix = `${randomBytes(4).toString('hex')}.tmp`;
  try {
    const paths = [];
    for (const name of seedFileNames) {
      const path = join(staging, name);
      // user-data may hold passwords and keys.
      await writeFile(path, files[name], { mode: 0o600 });
      paths.push(path);
    }
    const tmp = `${iso}.${suffix}`;
    await isoTool(
      ['-output', tmp, '-volid', 'cidata', '-joliet', '-rock', '-input-charset', 'utf-8', ...paths],
      signal,
    );
    // The ISO holds the same user data: owner-only too (libvirt hands it to QEMU's user at start).
    await chmod(tmp, 0o600);
    await rename(tmp, iso);
    await writeFile(`${hashFile}.${suffix}`, hash);
    await rename(`${hashFile}.${suffix}`, hashFile);
  } finally {
    await rm(staging, { recursive: true, force: true });
    await rm(`${iso}.${suffix}`, { force: true });
    await rm(`${hashFile}.${suffix}`, { force: true });
  }
  return iso;
}

async function isFile(path: string): Promise<boolean> {
  return stat(path).then(
    (stats) => stats.isFile(),
    () => false,
  );
}

const missing = (err: unknown) => err instanceof CommandFailed && err.failure === 'missing';

/** `xorriso -as genisoimage <args>`, or genisoimage itself where xorriso is missing. */
async function isoTool(args: string[], signal: AbortSignal): Promise<void> {
  try {
    await run('xorriso', ['-as', 'genisoimage', ...args], signal);
  } catch (err) {
    if (!missing(err)) throw err;
    await run('genisoimage', args, signal).catch((fallback: unknown) => {
      if (!missing(fallback)) throw fallback;
      throw new LoamError(
        'Unavailable',
        'neither xorriso nor genisoimage is on PATH; cloud-init seed ISOs need one (Debian: xorriso)',
      );
    });
  }
}

/** Runs `tool`; rejects with a LoamError, or with the CommandFailed itself when it is missing. */
async function run(tool: string, args: string[], signal: AbortSignal): Promise<void> {
  await runCommand([tool, ...args], { timeoutMs: isoTimeoutMs, signal }).catch((err: CommandFailed) => {
    throw err.failure === 'missing' ? err : commandError(err);
  });
}
