/**
 * What a Host's or Router's status says about its agent: facts from the agent's Hello, the time
 * of its last report, and the Ready condition (True while a session is open, Unknown once it has
 * been gone longer than the grace period). Pure: the hub reads the object, asks for the next
 * status, and writes only when there is one.
 */
import { isDeepStrictEqual } from 'node:util';
import type { z } from 'zod';
import { type Condition, formatTimestamp, setCondition } from '../../crds/meta.js';
import { hostStatusSchema, routerStatusSchema } from '../../crds/v1alpha1/index.js';
import type { Hello } from '../../proto/gen/loam/agent/v1/agent.js';
import type { AgentRole } from '../pki/certificates.js';

/** The part of a Host or Router status the hub maintains (other fields pass through). */
export interface AgentStatus {
  facts?: Record<string, string>;
  capacity?: { cpus: number; memory: string | number };
  heartbeatTime?: string;
  conditions?: Condition[];
  [field: string]: unknown;
}

export type AgentObservation = { connected: true; hello: Hello } | { connected: false; graceSeconds: number };

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

/** A Host's capacity from the facts cpus and memory (a quantity), when both are there and valid. */
export function reportedCapacity(hello: Hello): AgentStatus['capacity'] {
  const parsed = hostStatusSchema.shape.capacity
    .unwrap()
    .safeParse({ cpus: Number(hello.facts.cpus), memory: hello.facts.memory });
  return parsed.success ? parsed.data : undefined;
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
    next = {
      ...base,
      facts: reportedFacts(role, observed.hello),
      ...(capacity ? { capacity } : {}),
      heartbeatTime: formatTimestamp(now),
      conditions: setCondition(
        base.conditions,
        {
          type: 'Ready',
          status: 'True',
          reason: 'AgentConnected',
          message: `agent ${observed.hello.version || '(unknown version)'} connected`,
        },
        now,
      ),
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
