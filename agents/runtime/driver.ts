/**
 * What an agent plugs into the runtime: a Driver does the machine-specific work (libvirt
 * domains, router configuration); the runtime does enrollment, the session, job ordering,
 * deadlines, rotation and shutdown around it.
 */
import { arch, availableParallelism, hostname, release, totalmem, type } from 'node:os';
import type { Duplex } from 'node:stream';
import type { status } from '@grpc/grpc-js';
import type { Registry } from 'prom-client';
import type { AgentCondition, ResourceRef, StreamRequest } from '../../proto/gen/loam/agent/v1/agent.js';

export type { AgentCondition, ResourceRef, StreamRequest };

/** The desired object a job carries: a Kubernetes-style object with at least kind and name. */
export interface DesiredObject {
  apiVersion?: string;
  kind: string;
  metadata: { name: string; namespace?: string; uid?: string; [field: string]: unknown };
  [field: string]: unknown;
}

export interface AgentJob {
  id: string;
  /** What to do, e.g. "instance.apply". */
  type: string;
  /** The hub stops waiting for the result after this. */
  deadline?: Date;
  object: DesiredObject;
  /** kind/namespace/name: jobs with the same key run one at a time, in the order they came. */
  key: string;
}

/** A job's result: a gRPC status code (OK, or why it failed) and what the driver observed. */
export interface JobOutcome {
  code: status;
  message?: string;
  /** JSON-serialisable, e.g. an Instance's status as the agent sees it. */
  observed?: unknown;
}

/** Something the agent runs that Loam created, with what the driver observes of it. */
export interface InventoryItem {
  ref: ResourceRef;
  observed?: unknown;
}

export interface InventoryUpdate {
  upserted?: InventoryItem[];
  removed?: ResourceRef[];
}

export interface LifecycleNotice {
  resource: ResourceRef;
  type: 'Normal' | 'Warning';
  /** UpperCamelCase, e.g. Started, Stopped, Crashed. */
  reason: string;
  message: string;
  time?: Date;
}

/**
 * How a driver reports what changes on its own (a domain crashed, a lease appeared). Reports made
 * while the agent is disconnected are dropped: the next session's Hello carries the full
 * inventory, which is what the controllers converge on.
 */
export interface DriverEvents {
  inventoryChanged(update: InventoryUpdate): void;
  lifecycle(notice: LifecycleNotice): void;
}

export interface Driver {
  /** What this agent can do, e.g. "kvm", "tcg", "vxlan", "wireguard". */
  readonly capabilities: readonly string[];
  /** Facts beyond the host facts the runtime always reports (hostFacts). */
  facts(): Promise<Record<string, string>>;
  /** Everything the agent runs that Loam created; sent in full on every (re)connect. */
  inventory(): Promise<InventoryItem[]>;
  /**
   * What the agent's own checks of its machine find now (libvirt answers, the storage is
   * writable): conditions of its Host or Router, a failing `required` one making it not Ready.
   * Asked for every Hello and again with every heartbeat, whose interval it must answer within;
   * the hub hears of them again whenever they change.
   */
  conditions?(): Promise<AgentCondition[]>;
  /**
   * Makes the job's object real, idempotently: the same job may arrive again after a reconnect.
   * `signal` aborts when the deadline passes (the hub has stopped waiting). A thrown LoamError
   * becomes its gRPC code, any other exception INTERNAL.
   */
  handle(job: AgentJob, signal: AbortSignal): Promise<JobOutcome>;
  /** Called once before the first session, with the channel for unprompted reports. */
  start?(events: DriverEvents): Promise<void>;
  /** Called once at shutdown, after the last job finished. */
  stop?(): Promise<void>;
  /**
   * Registers the driver's own metrics (per-domain stats, WireGuard peers) in the agent's
   * registry, served on its /metrics; called once, before the first session.
   */
  registerMetrics?(registry: Registry): void;
  /**
   * The local end of a byte stream the hub asked for (a console); bytes written to it go to the
   * hub and the hub's bytes are written into it. Undefined when the driver does not serve the
   * request's kind.
   */
  openStream?(request: StreamRequest): Duplex | undefined;
}

/** This machine's cpus and memory, as the facts cpus and memory report them. */
export function hostCapacity(): { cpus: string; memory: string } {
  return {
    cpus: String(availableParallelism()),
    // As kubelet reports node capacity: a Kubernetes quantity in Ki.
    memory: `${Math.floor(totalmem() / 1024)}Ki`,
  };
}

/** Facts every agent reports, whatever its driver. */
export function hostFacts(agentVersion: string): Record<string, string> {
  return {
    hostname: hostname(),
    os: type(),
    arch: arch(),
    kernel: release(),
    agentVersion,
    ...hostCapacity(),
  };
}
