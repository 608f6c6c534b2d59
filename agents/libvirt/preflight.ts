/**
 * Preflight: what the libvirt agent needs on its host, each answer a condition (type, status,
 * reason, message) a person can act on, which the agent reports on its Host. All of them run when
 * the agent starts; `recheck` repeats those whose answer can change while it runs (libvirt
 * stopped, a tool removed, the storage full), which the agent does with every heartbeat.
 *
 * Whether KVM works is decided by running a guest, not by looking at /dev/kvm or asking libvirt:
 * both can say yes where KVM is unusable. Under some nested hypervisors /dev/kvm opens, QEMU and
 * libvirt report KVM, and guest code runs hundreds of times slower than under TCG (so a Linux
 * kernel never gets to print its banner). The probe runs a tiny counting loop as firmware, once
 * with TCG and once with KVM; KVM is usable when it finishes within a budget that real KVM beats
 * by two orders of magnitude.
 */

import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { access, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import type { DomainType } from './domain-xml.js';
import type { Hypervisor } from './hypervisor.js';

export interface PreflightCondition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  /** UpperCamelCase, for machines. */
  reason: string;
  /** For people: what is wrong and what to do. */
  message: string;
  /** The host cannot run instances while this is False (KVMUsable alone is not: TCG works too). */
  required: boolean;
}

export interface PreflightResult {
  /** kvm when KVMUsable is True, qemu (TCG) otherwise. */
  domainType: DomainType;
  conditions: PreflightCondition[];
  /** No required condition is False: the host can run instances, with TCG if need be. */
  ready: boolean;
  /** Host facts: domainType, libvirtVersion, hypervisor, qemuImg, isoTool. */
  facts: Record<string, string>;
}

export interface PreflightOptions {
  hypervisor: Pick<Hypervisor, 'uri' | 'version'>;
  /** Where disks, seed ISOs and console logs go. */
  storageDir: string;
  /** Where tools are looked up; the agent's PATH by default. */
  path?: string;
  /** How long a KVM guest may take for the probe loop. */
  kvmBudgetMs?: number;
}

const isoTools = ['xorriso', 'genisoimage', 'cloud-localds'];

// Long enough to measure (real KVM: ~20 ms, TCG: ~100 ms on a laptop core), short enough to be cheap.
const probeIterations = 20_000_000;
const probeExitStatus = (0x2a << 1) | 1;

export async function preflight(options: PreflightOptions): Promise<PreflightResult> {
  const path = options.path ?? process.env.PATH ?? '';
  const [host, probes] = await Promise.all([
    hostChecks(options),
    checkVirtualization(path, options.kvmBudgetMs ?? 2_000),
  ]);
  return resultOf(host, probes);
}

/**
 * `previous` with libvirt, the tools and the storage checked again. The emulator and KVM probes
 * keep their answers: they cost a guest run of seconds, and the hardware does not change.
 */
export async function recheck(
  previous: PreflightResult,
  options: PreflightOptions,
): Promise<PreflightResult> {
  const probes = previous.conditions.filter(({ type }) => type === 'EmulatorWorks' || type === 'KVMUsable');
  return resultOf(await hostChecks(options), probes);
}

/** libvirt, the tools and the storage: quick, and worth repeating while the agent runs. */
async function hostChecks(
  options: PreflightOptions,
): Promise<{ conditions: PreflightCondition[]; facts: Record<string, string> }> {
  const path = options.path ?? process.env.PATH ?? '';
  const facts: Record<string, string> = {};
  const conditions = await Promise.all([
    checkLibvirt(options.hypervisor, facts),
    checkQemuImg(path, facts),
    checkIsoTool(path, facts),
    checkStorage(options.storageDir),
  ]);
  return { conditions, facts };
}

function resultOf(
  host: { conditions: PreflightCondition[]; facts: Record<string, string> },
  probes: PreflightCondition[],
): PreflightResult {
  const conditions = [...host.conditions, ...probes];
  const kvm = probes.find(({ type }) => type === 'KVMUsable');
  const domainType: DomainType = kvm?.status === 'True' ? 'kvm' : 'qemu';
  return {
    domainType,
    conditions,
    ready: conditions.every((condition) => !condition.required || condition.status !== 'False'),
    facts: { ...host.facts, domainType },
  };
}

function condition(
  type: string,
  ok: boolean,
  reason: string,
  message: string,
  required = true,
): PreflightCondition {
  return { type, status: ok ? 'True' : 'False', reason, message, required };
}

async function checkLibvirt(
  hypervisor: PreflightOptions['hypervisor'],
  facts: Record<string, string>,
): Promise<PreflightCondition> {
  try {
    const version = await hypervisor.version();
    facts.libvirtVersion = version.library;
    if (version.hypervisor !== undefined) facts.hypervisor = version.hypervisor;
    return condition('LibvirtReachable', true, 'Connected', `${version.library} at ${hypervisor.uri}`);
  } catch (err) {
    return condition(
      'LibvirtReachable',
      false,
      'LibvirtUnreachable',
      `cannot reach libvirt at ${hypervisor.uri}: ${(err as Error).message}. Start libvirtd ` +
        "(systemctl start libvirtd, or virtlogd -d; libvirtd -d) or set the agent's libvirt URI",
    );
  }
}

async function checkQemuImg(path: string, facts: Record<string, string>): Promise<PreflightCondition> {
  const found = await findExecutable('qemu-img', path);
  if (found === undefined) {
    return condition(
      'QemuImgAvailable',
      false,
      'QemuImgNotFound',
      'qemu-img, which makes the qcow2 disks of instances, is not on PATH; install it (Debian: qemu-utils)',
    );
  }
  facts.qemuImg = found;
  return condition('QemuImgAvailable', true, 'Found', found);
}

async function checkIsoTool(path: string, facts: Record<string, string>): Promise<PreflightCondition> {
  for (const tool of isoTools) {
    const found = await findExecutable(tool, path);
    if (found === undefined) continue;
    facts.isoTool = found;
    return condition('IsoToolAvailable', true, 'Found', found);
  }
  return condition(
    'IsoToolAvailable',
    false,
    'IsoToolNotFound',
    `none of ${isoTools.join(', ')} is on PATH; cloud-init seed ISOs need one (Debian: xorriso)`,
  );
}

/** Writes and removes a file, which also catches read-only mounts and full disks that access() misses. */
async function checkStorage(dir: string): Promise<PreflightCondition> {
  try {
    await mkdir(dir, { recursive: true });
    const probe = join(dir, `.loam-preflight-${process.pid}`);
    await writeFile(probe, 'probe');
    await rm(probe);
    return condition('StorageWritable', true, 'Writable', dir);
  } catch (err) {
    return condition(
      'StorageWritable',
      false,
      'StorageNotWritable',
      `cannot write to the storage directory: ${(err as Error).message}; make it writable by the agent ` +
        'or configure another one',
    );
  }
}

/** EmulatorWorks (QEMU runs a guest at all, with TCG) and KVMUsable. */
async function checkVirtualization(
  path: string,
  kvmBudgetMs: number,
): Promise<[emulatorWorks: PreflightCondition, kvmUsable: PreflightCondition]> {
  if (process.arch !== 'x64') {
    const message = `the probe guest is x86 code; this host is ${process.arch}`;
    return [
      { type: 'EmulatorWorks', status: 'Unknown', reason: 'ProbeUnsupported', message, required: true },
      {
        type: 'KVMUsable',
        status: 'Unknown',
        reason: 'ProbeUnsupported',
        message: `${message}; using TCG`,
        required: false,
      },
    ];
  }
  const emulator = await findExecutable('qemu-system-x86_64', path);
  if (emulator === undefined) {
    const message = 'qemu-system-x86_64 is not on PATH; install QEMU (Debian: qemu-system-x86)';
    return [
      condition('EmulatorWorks', false, 'EmulatorNotFound', message),
      condition('KVMUsable', false, 'EmulatorNotFound', message, false),
    ];
  }
  const dir = await mkdtemp(join(tmpdir(), 'loam-probe-'));
  try {
    const firmware = join(dir, 'probe.bin');
    await writeFile(firmware, probeFirmware(probeIterations));
    const tcg = await runProbe(emulator, firmware, 'tcg', 30_000);
    const emulatorWorks = tcg.ok
      ? condition('EmulatorWorks', true, 'GuestRan', `a TCG test guest ran in ${tcg.ms} ms`)
      : condition('EmulatorWorks', false, 'EmulatorFailed', `QEMU could not run a test guest: ${tcg.error}`);
    const kvm = await runProbe(emulator, firmware, 'kvm', kvmBudgetMs);
    const fallback = 'instances run with QEMU TCG (software emulation, much slower)';
    let kvmUsable: PreflightCondition;
    if (kvm.ok) {
      kvmUsable = condition('KVMUsable', true, 'GuestRan', `a KVM test guest ran in ${kvm.ms} ms`, false);
    } else if (kvm.timedOut) {
      kvmUsable = condition(
        'KVMUsable',
        false,
        'KVMTooSlow',
        `a KVM test guest did not finish within ${kvmBudgetMs} ms (TCG: ${tcg.ms} ms): KVM is present but ` +
          `far slower than emulation, as under some nested hypervisors; ${fallback}`,
        false,
      );
    } else {
      kvmUsable = condition(
        'KVMUsable',
        false,
        'KVMUnavailable',
        `KVM cannot run guests here (${kvm.error}); ${fallback}. Enable virtualization in the firmware, ` +
          'load kvm_intel or kvm_amd, or enable nested virtualization',
        false,
      );
    }
    return [emulatorWorks, kvmUsable];
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

interface ProbeRun {
  ok: boolean;
  ms: number;
  timedOut: boolean;
  error?: string;
}

function runProbe(
  emulator: string,
  firmware: string,
  accel: 'tcg' | 'kvm',
  budgetMs: number,
): Promise<ProbeRun> {
  const args = [
    ...['-accel', accel, '-machine', 'pc', '-m', '16', '-nodefaults', '-display', 'none', '-no-reboot'],
    ...['-serial', 'none', '-monitor', 'none', '-bios', firmware],
    ...['-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04'],
  ];
  const started = Date.now();
  return new Promise((resolve) => {
    execFile(emulator, args, { timeout: budgetMs, killSignal: 'SIGKILL' }, (err, _stdout, stderr) => {
      const ms = Date.now() - started;
      const ok = err?.code === probeExitStatus;
      // QEMU's warnings (unsupported CPUID bits) come first; its error is the last line.
      const said = stderr.trim().split('\n').at(-1) || err?.message;
      resolve({ ok, ms, timedOut: err?.killed === true, error: ok ? undefined : said });
    });
  });
}

/**
 * 64 KiB of firmware for QEMU's x86 `pc` machine. The CPU starts in real mode at F000:FFF0, where
 * a far jump leads to F000:0000: count ECX down from `iterations`, then write 0x2a to the
 * isa-debug-exit port 0xf4, which ends QEMU with status (0x2a << 1) | 1. Every other byte is hlt.
 */
function probeFirmware(iterations: number): Buffer {
  const count = Buffer.alloc(4);
  count.writeUInt32LE(iterations);
  const code = Buffer.from([
    ...[0x66, 0xb9, ...count], // mov ecx, iterations
    ...[0x66, 0x49], // loop: dec ecx
    ...[0x75, 0xfc], // jnz loop
    ...[0xb0, 0x2a], // mov al, 0x2a
    ...[0xe6, 0xf4], // out 0xf4, al
    0xf4, // hlt
  ]);
  const image = Buffer.alloc(0x10000, 0xf4);
  code.copy(image, 0);
  Buffer.from([0xea, 0x00, 0x00, 0x00, 0xf0]).copy(image, 0xfff0); // jmp far F000:0000
  return image;
}

async function findExecutable(name: string, path: string): Promise<string | undefined> {
  for (const dir of path.split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}
