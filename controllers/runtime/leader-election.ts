/**
 * Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does it, so two
 * control planes can run and only one reconciles. A candidate takes the Lease when its holder has
 * not renewed it for leaseDuration, measured on the candidate's own clock from when it last saw
 * the Lease change (never from the holder's timestamps, so clock skew cannot hand it over early).
 * The leader renews every retryPeriod and steps down if it cannot renew within renewDeadline.
 * Every write is a compare-and-swap on resourceVersion.
 */
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';

export interface LeaderElectionOptions {
  api: k8s.CoordinationV1Api;
  namespace: string;
  name: string;
  /** Who this candidate is: unique per process (e.g. hostname + pid). */
  identity: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  logger: Logger;
  /** Called on becoming leader; the signal aborts when leadership is lost or the elector stops. */
  onStartedLeading(signal: AbortSignal): void;
  onStoppedLeading?(): void;
}

/** client-go's defaults for controllers: 15 s lease, 10 s renew deadline, 2 s retry period. */
const defaults = { leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000 };

export class LeaderElector {
  private readonly leaseDurationMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryPeriodMs: number;
  /** The Lease as last seen, and when (on this clock) it last changed. */
  private observed: { record: k8s.V1Lease; at: number } | undefined;
  private leading: AbortController | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** The acquire-or-renew attempt under way, if any. */
  private attempt: Promise<void> = Promise.resolve();
  private lastRenewal = 0;

  constructor(private readonly options: LeaderElectionOptions) {
    this.leaseDurationMs = options.leaseDurationMs ?? defaults.leaseDurationMs;
    this.renewDeadlineMs = options.renewDeadlineMs ?? defaults.renewDeadlineMs;
    this.retryPeriodMs = options.retryPeriodMs ?? defaults.retryPeriodMs;
  }

  get isLeader(): boolean {
    return this.leading !== undefined;
  }

  start(): void {
    this.stopped = false;
    this.scheduleTick(0);
  }

  private scheduleTick(delayMs: number): void {
    this.timer = setTimeout(() => {
      this.attempt = this.tick();
    }, delayMs);
  }

  /** Stops campaigning; a leader steps down and releases the Lease so another takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    // A renewal under way would bump the Lease after the release reads it: let it land first.
    await this.attempt;
    if (!this.leading) return;
    this.stepDown();
    const record = this.observed?.record;
    if (record?.spec?.holderIdentity !== this.options.identity) return;
    try {
      await this.options.api.replaceNamespacedLease({
        name: this.options.name,
        namespace: this.options.namespace,
        body: { ...record, spec: { ...record.spec, holderIdentity: '', leaseDurationSeconds: 1 } },
      });
    } catch (err) {
      this.options.logger.warn({ err }, 'releasing the leader lease failed; it expires by itself');
    }
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    const now = Date.now();
    let held = false;
    try {
      held = await this.tryAcquireOrRenew(now);
    } catch (err) {
      this.options.logger.debug({ err }, 'leader election attempt failed');
    }
    if (this.stopped) return;
    if (held) {
      this.lastRenewal = now;
      if (!this.leading) {
        this.leading = new AbortController();
        this.options.logger.info(
          { lease: this.options.name, identity: this.options.identity },
          'became leader',
        );
        this.options.onStartedLeading(this.leading.signal);
      }
    } else if (this.leading && Date.now() - this.lastRenewal > this.renewDeadlineMs) {
      this.options.logger.warn(
        { lease: this.options.name },
        'could not renew the leader lease in time; stepping down',
      );
      this.stepDown();
    }
    // Jittered like client-go's wait.JitterUntil, so candidates do not move in lockstep.
    this.scheduleTick(this.retryPeriodMs * (1 + Math.random() * 0.2));
  }

  private stepDown(): void {
    this.leading?.abort();
    this.leading = undefined;
    this.options.onStoppedLeading?.();
  }

  /** One attempt: true when this candidate holds the Lease afterwards. */
  private async tryAcquireOrRenew(now: number): Promise<boolean> {
    const { api, namespace, name, identity } = this.options;
    const spec: k8s.V1LeaseSpec = {
      holderIdentity: identity,
      leaseDurationSeconds: Math.ceil(this.leaseDurationMs / 1000),
      renewTime: new Date(now),
    };
    let current: k8s.V1Lease;
    try {
      current = await api.readNamespacedLease({ name, namespace });
    } catch (err) {
      if (!(err instanceof k8s.ApiException && err.code === 404)) throw err;
      const created = await api.createNamespacedLease({
        namespace,
        body: {
          apiVersion: 'coordination.k8s.io/v1',
          kind: 'Lease',
          metadata: { name, namespace },
          spec: { ...spec, acquireTime: spec.renewTime, leaseTransitions: 0 },
        },
      });
      this.observed = { record: created, at: now };
      return true;
    }
    if (current.metadata?.resourceVersion !== this.observed?.record.metadata?.resourceVersion) {
      this.observed = { record: current, at: now };
    }
    const holder = current.spec?.holderIdentity ?? '';
    const lease = (current.spec?.leaseDurationSeconds ?? 0) * 1000;
    const observedAt = this.observed?.at ?? now;
    if (holder !== '' && holder !== identity && observedAt + lease > now) return false;
    const taken = holder !== identity;
    const updated = await api.replaceNamespacedLease({
      name,
      namespace,
      body: {
        ...current,
        spec: {
          ...current.spec,
          ...spec,
          acquireTime: taken ? spec.renewTime : current.spec?.acquireTime,
          leaseTransitions: (current.spec?.leaseTransitions ?? 0) + (taken && holder !== '' ? 1 : 0),
        },
      },
    });
    this.observed = { record: updated, at: now };
    return true;
  }
}
