/**
 * A tiny guest for real-boot tests and benchmarks, built from this machine's Debian packages (nothing is
 * downloaded): a Debian kernel from /boot (hack/install-deps.sh installs linux-image-cloud-amd64)
 * and a busybox initramfs whose /init prints a marker on the serial console and then idles, so the
 * domain stays running until it is destroyed.
 *
 * The initramfs is a gzipped newc cpio archive made with GNU cpio. A dynamically linked busybox
 * (Debian's `busybox`) comes with the libraries `ldd` names; busybox-static needs none.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { gzipSync } from 'node:zlib';
import { run } from './libvirtd.js';

/** What /init prints on the console once the guest's userland runs. */
export const bootMarker = 'LOAM-BOOT-OK';

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

/** Builds the guest's files under `dir` (a per-run temp dir) and reads them back with their digests. */
export async function buildGuest(dir: string): Promise<Guest> {
  mkdirSync(dir, { recursive: true });
  const kernelPath = join(dir, 'vmlinuz');
  copyFileSync(findKernel(), kernelPath);

  const root = join(dir, 'initramfs');
  for (const sub of ['bin', 'dev', 'proc', 'sys']) mkdirSync(join(root, sub), { recursive: true });
  copyFileSync(busybox, join(root, 'bin/busybox'));
  for (const library of await sharedLibraries(busybox)) {
    const target = join(root, library);
    mkdirSync(dirname(target), { recursive: true });
    copyFileSync(library, target); // follows the symlink: the archive holds the real file under the linked name
  }
  // The kernel's built-in initramfs provides /dev/console, so /init's stdio is the console (ttyS0).
  writeFileSync(
    join(root, 'init'),
    [
      '#!/bin/busybox sh',
      '/bin/busybox mount -t proc proc /proc',
      '/bin/busybox mount -t sysfs sysfs /sys',
      '/bin/busybox mount -t devtmpfs devtmpfs /dev',
      `echo "${bootMarker} $(/bin/busybox uname -r)"`,
      // init must not exit (the kernel would panic): idle until the domain is destroyed.
      'while true; do /bin/busybox sleep 3600; done',
      '',
    ].join('\n'),
  );
  chmodSync(join(root, 'init'), 0o755);
  const archive = gzipSync(await cpio(root));
  const initrdPath = join(dir, 'initrd.gz');
  writeFileSync(initrdPath, archive);

  return {
    kernel: fileOf(kernelPath),
    initrd: fileOf(initrdPath),
    cmdline: 'console=ttyS0 panic=-1',
  };
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
