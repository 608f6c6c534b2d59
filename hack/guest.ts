/**
 * A tiny guest for real-boot tests and benchmarks, built from this machine's Debian packages (nothing is
 * downloaded): a Debian kernel from /boot (hack/install-deps.sh installs linux-image-cloud-amd64)
 * and a busybox initramfs whose /init prints a marker on the serial console and then idles, so the
 * domain stays running until it is destroyed. It comes two ways:
 *
 * - buildGuest: the kernel and initramfs as files, for a direct-kernel boot;
 * - buildGuestImage: the same kernel with an initramfs that reads its NoCloud seed, in a bootable
 *   disk image: an unpartitioned FAT file system (mkfs.fat) made bootable by SYSLINUX, whose boot
 *   sector SeaBIOS runs like a disk's first sector. Files go in with mtools and `syslinux
 *   --install`, so nothing is mounted (containers here cannot mount).
 *
 * The initramfs is a gzipped newc cpio archive made with GNU cpio. A dynamically linked busybox
 * (Debian's `busybox`) comes with the libraries `ldd` names; busybox-static needs none.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, join, relative } from 'node:path';
import { gzipSync } from 'node:zlib';
import { run } from './libvirtd.js';

/** What /init prints on the console once the guest's userland runs. */
export const bootMarker = 'LOAM-BOOT-OK';

/**
 * What the disk-image guest's /init prints once it has read its NoCloud seed, followed by
 * `instance-id=… local-hostname=…` from the seed's meta-data and `user-data-sha256=…`.
 */
export const seedMarker = 'LOAM-SEED-OK';

export interface GuestFile {
  path: string;
  bytes: Buffer;
  sha256: string;
}

export interface Guest {
  kernel: GuestFile;
  initrd: GuestFile;
  /** The kernel command line the guest needs: its console on the first serial port. */
  cmdline: string;
}

const busybox = '/bin/busybox';
const cmdline = 'console=ttyS0 panic=-1';

/**
 * The modules the image guest loads to find its seed (with what they depend on): Loam attaches
 * the root disk and the seed as virtio disks, and the seed is an ISO 9660 file system. The cloud
 * kernel builds all three as modules.
 */
const seedModules = ['virtio_pci', 'virtio_blk', 'isofs'];

/** /boot/vmlinuz-* of an installed Debian kernel: the cloud flavour (fewest drivers to probe under TCG) first. */
export function findKernel(): string {
  let names: string[] = [];
  try {
    names = readdirSync('/boot').filter((name) => name.startsWith('vmlinuz-'));
  } catch {
    // no /boot at all: reported below
  }
  const ranked = [...names].sort((a, b) => rank(a) - rank(b) || b.localeCompare(a));
  const found = ranked[0];
  if (found === undefined) {
    throw new Error(
      'no /boot/vmlinuz-* on this machine: install linux-image-cloud-amd64 (hack/install-deps.sh)',
    );
  }
  return join('/boot', found);
}

function rank(name: string): number {
  if (name.endsWith('-cloud-amd64')) return 0;
  if (name.endsWith('-rt-amd64')) return 2;
  return 1;
}

/** Builds the direct-kernel guest's files under `dir` (a per-run temp dir) and reads them back with their digests. */
export async function buildGuest(dir: string): Promise<Guest> {
  mkdirSync(dir, { recursive: true });
  const kernelPath = join(dir, 'vmlinuz');
  copyFileSync(findKernel(), kernelPath);
  const initrdPath = join(dir, 'initrd.gz');
  await buildInitramfs(join(dir, 'initramfs'), initrdPath, {
    modules: [],
    init: [
      '#!/bin/busybox sh',
      '/bin/busybox mount -t proc proc /proc',
      '/bin/busybox mount -t sysfs sysfs /sys',
      '/bin/busybox mount -t devtmpfs devtmpfs /dev',
      `echo "${bootMarker} $(/bin/busybox uname -r)"`,
      // init must not exit (the kernel would panic): idle until the domain is destroyed.
      'while true; do /bin/busybox sleep 3600; done',
    ],
  });
  return { kernel: fileOf(kernelPath), initrd: fileOf(initrdPath), cmdline };
}

/**
 * Builds `<dir>/guest.img`, a raw disk image that boots the guest with SYSLINUX. Its /init looks
 * for the NoCloud seed as cloud-init does (a file system labelled cidata), prints seedMarker with
 * what the seed says, or `LOAM-SEED-MISSING` and what it found instead, then idles.
 */
export async function buildGuestImage(dir: string): Promise<GuestFile> {
  mkdirSync(dir, { recursive: true });
  const kernel = findKernel();
  const release = basename(kernel).slice('vmlinuz-'.length);
  const modules = moduleLoadOrder(release, seedModules);
  const initrdPath = join(dir, 'initrd.gz');
  await buildInitramfs(join(dir, 'initramfs'), initrdPath, {
    modules,
    init: [
      '#!/bin/busybox sh',
      '/bin/busybox --install -s /bin',
      'export PATH=/bin',
      'mount -t proc proc /proc',
      'mount -t sysfs sysfs /sys',
      'mount -t devtmpfs devtmpfs /dev',
      ...modules.map((module) => `insmod /lib/modules/${basename(module)}`),
      // Disks may appear a moment after their driver loads: look 50 times, 0.2 s apart.
      'seed=""',
      'for i in $(seq 50); do',
      '  seed=$(blkid | grep \'LABEL="cidata"\' | cut -d: -f1)',
      '  [ -n "$seed" ] && break',
      '  sleep 0.2',
      'done',
      'if [ -n "$seed" ] && mount -t iso9660 -o ro "$seed" /mnt; then',
      // The seed's YAML may quote a value.
      `  field() { sed -n "s/^$1: *[\\"']\\{0,1\\}\\([^\\"']*\\).*/\\1/p" /mnt/meta-data; }`,
      '  digest=$(sha256sum /mnt/user-data | cut -d" " -f1)',
      `  echo "${seedMarker} instance-id=$(field instance-id) local-hostname=$(field local-hostname) user-data-sha256=$digest"`,
      'else',
      '  echo "LOAM-SEED-MISSING: no file system labelled cidata; blkid: $(blkid | tr "\\n" " ")"',
      'fi',
      'while true; do sleep 3600; done',
    ],
  });

  // The kernel and initramfs, SYSLINUX's ldlinux.sys and ldlinux.c32, and room to spare.
  const imagePath = join(dir, 'guest.img');
  const payload = statSync(kernel).size + statSync(initrdPath).size;
  const sizeKiB = Math.ceil(payload / 1024 / 1024 + 2) * 1024;
  const config = join(dir, 'syslinux.cfg');
  writeFileSync(
    config,
    [
      'DEFAULT loam',
      'PROMPT 0',
      'TIMEOUT 0',
      'LABEL loam',
      '  KERNEL vmlinuz',
      '  INITRD initrd.gz',
      `  APPEND ${cmdline}`,
      '',
    ].join('\n'),
  );
  rmSync(imagePath, { force: true });
  await tool('mkfs.fat', ['-C', '-n', 'LOAMGUEST', imagePath, String(sizeKiB)], 'dosfstools');
  await tool('syslinux', ['--install', imagePath], 'syslinux');
  for (const [source, name] of [
    [kernel, 'vmlinuz'],
    [initrdPath, 'initrd.gz'],
    [config, 'syslinux.cfg'],
  ] as const) {
    await tool('mcopy', ['-i', imagePath, source, `::${name}`], 'mtools');
  }
  return fileOf(imagePath);
}

/**
 * The files of `wanted` and every module they need, each after what it needs, from the kernel's
 * modules.dep (which lists every module's dependencies, transitively).
 */
function moduleLoadOrder(release: string, wanted: string[]): string[] {
  const root = join('/lib/modules', release);
  let dep: string;
  try {
    dep = readFileSync(join(root, 'modules.dep'), 'utf8');
  } catch {
    throw new Error(
      `no ${root}/modules.dep: install the modules of kernel ${release} (hack/install-deps.sh)`,
    );
  }
  const needs = new Map<string, string[]>();
  for (const line of dep.split('\n')) {
    const [module, deps = ''] = line.split(':');
    if (module) needs.set(module, deps.trim().split(/\s+/).filter(Boolean));
  }
  const order: string[] = [];
  const visit = (module: string) => {
    if (order.includes(module)) return;
    for (const needed of needs.get(module) ?? []) visit(needed);
    order.push(module);
  };
  for (const name of wanted) {
    const module = [...needs.keys()].find((path) => basename(path) === `${name}.ko`);
    // Built into the kernel: nothing to load.
    if (module !== undefined) visit(module);
  }
  return order.map((module) => join(root, module));
}

/** A gzipped initramfs at `target` holding busybox, `modules` under /lib/modules/ and `init`. */
async function buildInitramfs(
  root: string,
  target: string,
  contents: { modules: string[]; init: string[] },
): Promise<void> {
  for (const sub of ['bin', 'dev', 'proc', 'sys', 'mnt', 'lib/modules']) {
    mkdirSync(join(root, sub), { recursive: true });
  }
  copyFileSync(busybox, join(root, 'bin/busybox'));
  for (const library of await sharedLibraries(busybox)) {
    const copy = join(root, library);
    mkdirSync(dirname(copy), { recursive: true });
    copyFileSync(library, copy); // follows the symlink: the archive holds the real file under the linked name
  }
  for (const module of contents.modules) copyFileSync(module, join(root, 'lib/modules', basename(module)));
  // The kernel's built-in initramfs provides /dev/console, so /init's stdio is the console (ttyS0).
  writeFileSync(join(root, 'init'), `${contents.init.join('\n')}\n`);
  chmodSync(join(root, 'init'), 0o755);
  writeFileSync(target, gzipSync(await cpio(root)));
}

/** Runs a tool that must succeed, naming the Debian package it comes from when it is missing. */
async function tool(file: string, args: string[], debianPackage: string): Promise<void> {
  const { code, stderr } = await run(file, args, { timeoutMs: 30_000 });
  if (code === 0) return;
  const missing = /ENOENT/.test(stderr) ? ` (install ${debianPackage}: hack/install-deps.sh)` : '';
  throw new Error(`${file} ${args.join(' ')} exited ${code}${missing}: ${stderr.trim()}`);
}

function fileOf(path: string): GuestFile {
  const bytes = readFileSync(path);
  return { path, bytes, sha256: createHash('sha256').update(bytes).digest('hex') };
}

/** The absolute paths `ldd` names for a binary, its ELF interpreter included; none for a static one. */
async function sharedLibraries(binary: string): Promise<string[]> {
  const { code, stdout, stderr } = await run('ldd', [binary]);
  if (code !== 0) {
    if (/not a dynamic executable/.test(stdout + stderr)) return [];
    throw new Error(`ldd ${binary} exited ${code}: ${stderr}`);
  }
  const paths = new Set<string>();
  for (const line of stdout.split('\n')) {
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
    const match = /(?:=>\s*)?(\/\S+)\s+\(0x[0-9a-f]+\)/.exec(line);
    if (match?.[1] !== undefined) paths.add(match[1]);
  }
  return [...paths];
}

/** Every path under `root` (directories before their contents), relative, as cpio reads them. */
function listTree(root: string, dir = root): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    out.push(relative(root, path));
    if (entry.isDirectory()) out.push(...listTree(root, path));
  }
  return out;
}

/** A newc cpio archive of `root`, files owned by root, made by GNU cpio within a deadline. */
function cpio(root: string, timeoutMs = 30_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn('cpio', ['--create', '--format=newc', '--owner=0:0', '--quiet'], {
      cwd: root,
      timeout: timeoutMs,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const chunks: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => chunks.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk;
    });
    child.once('error', reject);
    child.once('close', (code, signal) => {
      if (code === 0) resolve(Buffer.concat(chunks));
      else reject(new Error(`cpio exited ${code ?? signal}: ${stderr}`));
    });
    child.stdin.end(`${listTree(root).join('\n')}\n`);
  });
}
