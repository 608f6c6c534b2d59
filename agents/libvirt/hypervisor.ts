/**
 * What the libvirt agent needs from libvirt, as an interface: the virsh implementation
 * (virsh.ts) is one way to provide it; a native binding could be another. Domains are named by
 * name or UUID (Loam uses the UUID, which is the Instance uid). Failures are LoamErrors:
 * NotFound for a missing domain, Conflict for an operation the domain's state forbids (start of a
 * running domain), Invalid for XML libvirt rejects, Unavailable when libvirt cannot be reached or
 * does not answer in time.
 */

import { setTimeout as sleep } from 'node:timers/promises';
import { isLoamError } from '../../crds/errors.js';

/** libvirt's virDomainState, by name. */
export const domainStates = [
  'nostate',
  'running',
  'blocked',
  'paused',
  'shutdown', // being shut down
  'shutoff',
  'crashed',
  'pmsuspended',
] as const;
export type DomainState = (typeof domainStates)[number];

// The reason enums of libvirt-domain.h (virDomain<State>Reason), indexed by their values.
const stateReasons: Record<DomainState, readonly string[]> = {
  nostate: ['unknown'],
  running: [
    'unknown',
    'booted',
    'migrated',
    'restored',
    'from-snapshot',
    'unpaused',
    'migration-canceled',
    'save-canceled',
    'wakeup',
    'crashed',
    'postcopy',
    'postcopy-failed',
  ],
  blocked: ['unknown'],
  paused: [
    'unknown',
    'user',
    'migration',
    'save',
    'dump',
    'ioerror',
    'watchdog',
    'from-snapshot',
    'shutting-down',
    'snapshot',
    'crashed',
    'starting-up',
    'postcopy',
    'postcopy-failed',
    'api-error',
  ],
  shutdown: ['unknown', 'user'],
  shutoff: [
    'unknown',
    'shutdown',
    'destroyed',
    'crashed',
    'migrated',
    'saved',
    'failed',
    'from-snapshot',
    'daemon',
  ],
  crashed: ['unknown', 'panicked'],
  pmsuspended: ['unknown'],
};

export interface DomainStatus {
  name: string;
  state: DomainState;
  /** Why it is in that state, e.g. shutoff because of 'shutdown', 'destroyed' or 'crashed'. */
  reason: string;
}

/** A state and reason from libvirt's numeric codes (domstats state.state / state.reason). */
export function decodeState(state: number, reason: number): { state: DomainState; reason: string } {
  const name = domainStates[state] ?? 'nostate';
  return { state: name, reason: stateReasons[name][reason] ?? 'unknown' };
}

/** Whether the domain has a running QEMU process (anything but shut off). */
export function isActive(status: Pick<DomainStatus, 'state'>): boolean {
  return status.state !== 'shutoff';
}

/** A domain appeared, changed state or went away (`status` is then undefined). */
export interface DomainEvent {
  name: string;
  status?: DomainStatus;
  previous?: DomainStatus;
}

/** The groups of libvirt's bulk stats (virsh domstats --state, --cpu-total, …). */
export type StatsGroup =
  | 'state'
  | 'cpu-total'
  | 'balloon'
  | 'vcpu'
  | 'interface'
  | 'block'
  | 'perf'
  | 'iothread'
  | 'memory'
  | 'dirtyrate'
  | 'vm';

/** The libvirt and hypervisor versions, as libvirt reports them. */
export interface HypervisorVersion {
  library: string;
  hypervisor?: string;
}

export interface Hypervisor {
  readonly uri: string;
  version(): Promise<HypervisorVersion>;
  /** Creates or replaces the persistent definition; a running domain keeps its live one until restarted. */
  define(xml: string): Promise<void>;
  undefine(domain: string): Promise<void>;
  start(domain: string): Promise<void>;
  /**
   * Asks the guest to power off (ACPI) and waits up to `timeoutMs` for it; destroys the domain
   * when it is still running then. Says which of the two stopped it.
   */
  shutdown(domain: string, options: { timeoutMs: number }): Promise<'shutdown' | 'destroyed'>;
  /** Pulls the plug. */
  destroy(domain: string): Promise<void>;
  /** Asks the guest to reboot (ACPI). */
  reboot(domain: string): Promise<void>;
  /** Presses the reset button: no guest involvement. */
  reset(domain: string): Promise<void>;
  state(domain: string): Promise<DomainStatus>;
  /** Every domain on the host, Loam's or not, with its state. */
  list(): Promise<DomainStatus[]>;
  /** The live definition of a running domain, or the persistent one when `inactive` or shut off. */
  dumpxml(domain: string, options?: { inactive?: boolean }): Promise<string>;
  /**
   * libvirt's bulk stats (cpu.time, balloon.rss, net.0.rx.bytes, …) per domain, all domains when
   * none given; every group the driver supports when none given, and a group it lacks is skipped.
   */
  domstats(domains?: string[], groups?: readonly StatsGroup[]): Promise<Map<string, Record<string, string>>>;
  /** Lifecycle changes until `signal` aborts. */
  events(signal: AbortSignal): AsyncIterable<DomainEvent>;
  close(): Promise<void>;
}

/** The events that take `before` to `after` (both keyed by domain name). */
export function diffStatuses(
  before: ReadonlyMap<string, DomainStatus>,
  after: ReadonlyMap<string, DomainStatus>,
): DomainEvent[] {
  const events: DomainEvent[] = [];
  for (const [name, status] of after) {
    const previous = before.get(name);
    if (previous?.state !== status.state || previous.reason !== status.reason) {
      events.push(previous === undefined ? { name, status } : { name, status, previous });
    }
  }
  for (const [name, previous] of before) if (!after.has(name)) events.push({ name, previous });
  return events;
}

/** The domain statuses the events so far lead to; undefined until the first poll sets it. */
export interface PollBaseline {
  statuses?: Map<string, DomainStatus>;
}

/**
 * Events by polling `list` every `intervalMs`, for drivers without a native event stream. The
 * first poll sets the baseline (the full inventory is reported separately), so only changes are
 * events. A failed poll is skipped: the next one reports whatever changed meanwhile. An event
 * joins `baseline` only once its consumer took it, so a consumer that failed on one can poll
 * again with the same baseline and get that event again instead of losing it.
 */
export async function* pollEvents(
  list: () => Promise<DomainStatus[]>,
  intervalMs: number,
  signal: AbortSignal,
  baseline: PollBaseline = {},
): AsyncGenerator<DomainEvent> {
  while (!signal.aborted) {
    try {
      const after = new Map((await list()).map((status) => [status.name, status]));
      const before = baseline.statuses;
      if (before === undefined) baseline.statuses = after;
      else {
        for (const event of diffStatuses(before, after)) {
          yield event;
          if (event.status === undefined) before.delete(event.name);
          else before.set(event.name, event.status);
        }
      }
    } catch (err) {
      if (!isLoamError(err, 'Unavailable') && !isLoamError(err, 'NotFound')) throw err;
    }
    try {
      await sleep(intervalMs, undefined, { signal });
    } catch {
      return; // aborted
    }
  }
}

/**
 * Polls `state` until the domain is shut off or `timeoutMs` passes; true when it shut off. Gone
 * counts as shut off (a transient domain, or one undefined meanwhile).
 */
export async function waitForShutoff(
  state: () => Promise<DomainStatus>,
  timeoutMs: number,
  intervalMs: number,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (!isActive(await state())) return true;
    } catch (err) {
      if (isLoamError(err, 'NotFound')) return true;
      throw err;
    }
    const left = deadline - Date.now();
    if (left <= 0) return false;
    await sleep(Math.min(intervalMs, left));
  }
}
