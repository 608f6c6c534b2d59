/**
 * A libvirt daemon for the tests and benchmarks that boot real guests on `qemu:///system`
 * (test/e2e/boot.test.ts, hack/bench/libvirt.ts): answers at once when one already runs, else
 * starts `virtlogd -d` and `libvirtd -d` (as DESIGN.md §8 measured: no systemd here, libvirtd
 * answers after ~12 s) and polls `virsh version` until it answers, within a deadline.
 *
 * The daemons are left running for later tests, as a service would be: starting one costs seconds.
 * Their logs go to /var/log/libvirt/ (libvirtd.log, virtlogd.log).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

export const systemUri = 'qemu:///system';

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command bounded in time; never throws for a non-zero exit or a missing binary. */
export function run(
  file: string,
  args: string[],
  options: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<CommandResult> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      { timeout: options.timeoutMs ?? 15_000, env: options.env ?? process.env },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
        resolve({ code, stdout, stderr: err !== null && stderr === '' ? err.message : stderr });
      },
    );
  });
}

/** `virsh -c qemu:///system ARGS`, bounded in time. */
export function virsh(args: string[], timeoutMs = 15_000): Promise<CommandResult> {
  return run('virsh', ['-c', systemUri, ...args], { timeoutMs });
}

const daemons = ['/usr/sbin/libvirtd', '/usr/sbin/virtlogd'];
// libvirt-daemon-system provides the libvirt-qemu user QEMU runs as, and qemu.conf naming it.
const systemConfig = '/etc/libvirt/qemu.conf';

/** What is missing for a system libvirtd on this machine (hack/install-deps.sh installs it); empty when nothing is. */
export function missingForLibvirtd(): string[] {
  return [...daemons, systemConfig, '/usr/bin/virsh'].filter((path) => !existsSync(path));
}

async function answers(): Promise<boolean> {
  return (await virsh(['version'], 10_000)).code === 0;
}

/**
 * Makes sure `qemu:///system` answers. Resolves to whether this call started the daemons; throws
 * naming what is missing, or with the daemon's last answer when it does not come up in time.
 */
export async function ensureLibvirtd(timeoutMs = 90_000): Promise<{ started: boolean }> {
  if (await answers()) return { started: false };
  const missing = missingForLibvirtd();
  if (missing.length > 0) {
    throw new Error(
      `cannot start libvirtd: missing ${missing.join(', ')} (run hack/install-deps.sh as root)`,
    );
  }
  const env = { ...process.env, LIBVIRT_LOG_OUTPUTS: '3:file:/var/log/libvirt/libvirtd.log' };
  // Both daemonize and exit; a virtlogd that already runs refuses a second one, which is fine.
  await run('/usr/sbin/virtlogd', ['-d'], {
    env: { ...env, LIBVIRT_LOG_OUTPUTS: '3:file:/var/log/libvirt/virtlogd.log' },
  });
  const started = await run('/usr/sbin/libvirtd', ['-d'], { env });
  if (started.code !== 0 && !(await answers())) {
    throw new Error(`libvirtd -d exited ${started.code}: ${started.stderr.trim()}`);
  }
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const last = await virsh(['version'], 10_000);
    if (last.code === 0) break;
    if (Date.now() > deadline) {
      throw new Error(
        `libvirtd did not answer on ${systemUri} within ${timeoutMs} ms (last: ${last.stderr.trim()}; ` +
          'see /var/log/libvirt/libvirtd.log)',
      );
    }
    await sleep(500);
  }
  return { started: true };
}
