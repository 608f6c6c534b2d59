/**
 * What a Host's or Router's status says about its agent: facts from the agent's Hello (and a
 * Host's capacity and allocatable), the time of its last report, the conditions the agent's own checks of its machine report (preflight:
 * LibvirtReachable, say), and the Ready condition: True while a session is open and no check the
 * agent needs fails, False (with the failing check's reason) while one does, Unknown once the
 * agent has been gone longer than the grace period. Pure: the hub reads the object, asks for the
 * next status, and writes only when there is one.
 */
import { isDeepStrictEqual } from 'node:util';
import type { z } from 'zod';
import { type Condition, conditionSchema, formatTimestamp, setCondition } from '../../crds/meta.js';
import { parseQuantity } from '../../crds/quantity.js';
import { hostStatusSchema, routerStatusSchema } from '../../crds/v1alpha1/index.js';
import type { AgentCondition, Hello } from '../../proto/gen/loam/agent/v1/agent.js';
import type { AgentRole } from '../pki/certificates.js';

type Resources = { cpus: number; memory: string | number };

/** The part of a Host or Router status the hub maintains (other fields pass through). */
export interface AgentStatus {
  facts?: Record<string, string>;
  capacity?: Resources;
  allocatable?: Resources;
  heartbeatTime?: string;
  conditions?: Condition[];
  [field: string]: unknown;
}

export type AgentObservation =
  | {
      connected: true;
      hello: Hello;
      /** The agent's latest checks: the Hello's until it reports others. */
      conditions?: AgentCondition[];
    }
  | { connected: false; graceSeconds: number };

const agentConditionSchema = conditionSchema.pick({ type: true, status: true, reason: true, message: true });

/** A check of the agent's machine as its object shows it. */
type Check = z.infer<typeof agentConditionSchema> & { required: boolean };

/** The checks an agent reports that a status can hold: valid conditions, none of them Ready (the hub's). */
export function reportedConditions(reported: readonly AgentCondition[]): Check[] {
  return reported.flatMap(({ required, ...condition }) => {
    const parsed = agentConditionSchema.safeParse(condition);
    return parsed.success && parsed.data.type !== 'Ready' ? [{ ...parsed.data, required }] : [];
  });
}

/** Ready of a connected agent: False with the reasons of the checks it needs that fail. */
function readiness(hello: Hello, checks: readonly Check[]): Omit<Condition, 'lastTransitionTime'> {
  const agent = `agent ${hello.version || '(unknown version)'}`;
  const failing = checks.filter((check) => check.required && check.status === 'False');
  const [first] = failing;
  if (first === undefined) {
    return { type: 'Ready', status: 'True', reason: 'AgentConnected', message: `${agent} connected` };
  }
  return {
    type: 'Ready',
    status: 'False',
    reason: first.reason,
    message: `${agent} connected, but ${failing.map((check) => `${check.type} is False: ${check.message}`).join('; ')}`,
  };
}

const factsShapes: Record<AgentRole, Record<string, z.ZodType>> = {
  libvirt: hostStatusSchema.shape.facts.unwrap().shape,
  network: routerStatusSchema.shape.facts.unwrap().shape,
};

/** kvm when the agent has hardware virtualization, qemu (TCG) when it can only emulate. */
function domainType(capabilities: string[]): string | undefined {
  if (capabilities.includes('kvm')) return 'kvm';
  return capabilities.includes('tcg') ? 'qemu' : undefined;
}

/** The facts of `hello` that the role's status schema has a field for, and valid for it. */
export function reportedFacts(role: AgentRole, hello: Hello): Record<string, string> {
  const candidates: Record<string, string | undefined> = {
    ...hello.facts,
    agentVersion: hello.version || undefined,
    domainType: hello.facts.domainType ?? domainType(hello.capabilities),
  };
  return Object.fromEntries(
    Object.entries(factsShapes[role]).flatMap(([key, schema]) => {
      const value = candidates[key];
      return value !== undefined && schema.safeParse(value).success ? [[key, value]] : [];
    }),
  );
}

/** Resources from a count of cpus and a quantity of memory, when both are there and valid. */
function reportedResources(cpus: string | undefined, memory: string | undefined): Resources | undefined {
  const parsed = hostStatusSchema.shape.capacity.unwrap().safeParse({ cpus: Number(cpus), memory });
  return parsed.success ? parsed.data : undefined;
}

/** A Host's capacity from the facts cpus and memory. */
export function reportedCapacity(hello: Hello): Resources | undefined {
  return reportedResources(hello.facts.cpus, hello.facts.memory);
}

/**
 * A Host's allocatable from the facts allocatableCpus and allocatableMemory: its capacity minus
 * what the agent keeps for the host (agents/libvirt/reserved.ts). The schema admits no negative
 * value, so a report of one is left out, as is one above capacity.
 */
export function reportedAllocatable(hello: Hello, capacity: Resources): Resources | undefined {
  const allocatable = reportedResources(hello.facts.allocatableCpus, hello.facts.allocatableMemory);
  const fits =
    allocatable !== undefined &&
    allocatable.cpus <= capacity.cpus &&
    parseQuantity(allocatable.memory) <= parseQuantity(capacity.memory);
  return fits ? allocatable : undefined;
}

/**
 * The status to write for what the hub observes of the agent now, or undefined when `current`
 * already says it. heartbeatTime alone is refreshed only every `refreshSeconds`, as the kubelet
 * reports an unchanged node status rarely and leaves liveness to its Lease.
 */
export function nextAgentStatus(
  role: AgentRole,
  current: AgentStatus | undefined,
  observed: AgentObservation,
  now: Date,
  refreshSeconds: number,
): AgentStatus | undefined {
  const base: AgentStatus = current ?? {};
  let next: AgentStatus;
  if (observed.connected) {
    const capacity = role === 'libvirt' ? reportedCapacity(observed.hello) : undefined;
    const allocatable = capacity && reportedAllocatable(observed.hello, capacity);
    const checks = reportedConditions(observed.conditions ?? observed.hello.conditions);
    const conditions = checks.reduce(
      (all, { required: _, ...condition }) => setCondition(all, condition, now),
      setCondition(base.conditions, readiness(observed.hello, checks), now),
    );
    next = {
      ...base,
      facts: reportedFacts(role, observed.hello),
      ...(capacity ? { capacity } : {}),
      ...(allocatable ? { allocatable } : {}),
      heartbeatTime: formatTimestamp(now),
      conditions,
    };
  } else {
    next = {
      ...base,
      conditions: setCondition(
        base.conditions,
        {
          type: 'Ready',
          status: 'Unknown',
          reason: 'AgentDisconnected',
          message: `agent disconnected and did not reconnect within ${observed.graceSeconds}s`,
        },
        now,
      ),
    };
  }
  const { heartbeatTime: previousHeartbeat, ...before } = base;
  const { heartbeatTime: _, ...after } = next;
  const heartbeatStale =
    observed.connected &&
    (previousHeartbeat === undefined ||
      now.getTime() - Date.parse(previousHeartbeat) >= refreshSeconds * 1000);
  return heartbeatStale || !isDeepStrictEqual(before, after) ? next : undefined;
}
