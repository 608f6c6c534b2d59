/** What the hub writes to a Host's or Router's status for what it observes of the agent: a table. */
import assert from 'node:assert/strict';
import { nextAgentStatus, reportedFacts } from '../../controllers/hub/status.js';
import type { Hello } from '../../proto/gen/loam/agent/v1/agent.js';

describe('agent status', () => {
  const now = new Date('2025-01-01T12:00:00Z');
  const hello: Hello = {
    version: '0.1.0',
    capabilities: ['kvm', 'vxlan'],
    facts: { hostname: 'hv1', arch: 'x86_64', cpus: '8', memory: '32Gi', unknown: 'dropped' },
    inventory: [],
    conditions: [],
  };
  const connected = { connected: true as const, hello };
  const withFacts = (facts: Record<string, string>) => ({
    connected: true as const,
    hello: { ...hello, facts: { ...hello.facts, ...facts } },
  });
  const libvirtDown = {
    type: 'LibvirtReachable',
    status: 'False',
    reason: 'LibvirtUnreachable',
    message: 'cannot reach libvirt at qemu:///system: virsh version: failed to connect. Start libvirtd',
    required: true,
  };
  const libvirtUp = {
    ...libvirtDown,
    status: 'True',
    reason: 'Connected',
    message: 'libvirt 9.0.0 at qemu:///system',
  };
  // Not required: a Host without KVM runs instances with TCG.
  const kvmSlow = {
    type: 'KVMUsable',
    status: 'False',
    reason: 'KVMTooSlow',
    message: 'slow',
    required: false,
  };
  // Dropped: an agent cannot set Ready, nor write what a condition cannot hold.
  const bogus = { type: 'Ready', status: 'True', reason: 'Fine', message: '', required: false };
  const check = ({ required: _, ...condition }: typeof libvirtDown) => condition;
  const ready = (
    status: 'True' | 'False' | 'Unknown',
    reason: string,
    message: string,
    at = '2025-01-01T12:00:00Z',
  ) => [{ type: 'Ready', status, reason, message, lastTransitionTime: at }];
  const connectedStatus = {
    facts: { hostname: 'hv1', arch: 'x86_64', domainType: 'kvm', agentVersion: '0.1.0' },
    capacity: { cpus: 8, memory: '32Gi' },
    heartbeatTime: '2025-01-01T12:00:00Z',
    conditions: ready('True', 'AgentConnected', 'agent 0.1.0 connected'),
  };

  it('keeps only the facts the status schema has a field for, valid for it', () => {
    assert.deepEqual(reportedFacts('network', { ...hello, facts: { hostname: 'r', driverVersion: 'x' } }), {
      hostname: 'r',
      driverVersion: 'x',
      agentVersion: '0.1.0',
    });
    assert.deepEqual(reportedFacts('libvirt', { ...hello, capabilities: [], facts: { domainType: 'xen' } }), {
      agentVersion: '0.1.0',
    });
  });

  const rows: {
    name: string;
    role?: 'libvirt' | 'network';
    current: Record<string, unknown> | undefined;
    observed: Parameters<typeof nextAgentStatus>[2];
    at?: Date;
    next: Record<string, unknown> | undefined;
  }[] = [
    {
      name: 'a new Host whose agent connects',
      current: undefined,
      observed: connected,
      next: connectedStatus,
    },
    {
      name: 'a Host whose agent keeps some of it for itself (allocatable)',
      current: undefined,
      observed: withFacts({ allocatableCpus: '7', allocatableMemory: '31Gi' }),
      next: { ...connectedStatus, allocatable: { cpus: 7, memory: '31Gi' } },
    },
    {
      name: 'a Host whose agent reports a negative allocatable (left out)',
      current: undefined,
      observed: withFacts({ allocatableCpus: '-1', allocatableMemory: '-1Gi' }),
      next: connectedStatus,
    },
    {
      name: 'a Host whose agent reports more allocatable than capacity (left out)',
      current: undefined,
      observed: withFacts({ allocatableCpus: '8', allocatableMemory: '33Gi' }),
      next: connectedStatus,
    },
    {
      name: 'a Router whose agent connects (no capacity)',
      role: 'network',
      current: { networks: 2 },
      observed: { connected: true, hello: { ...hello, facts: { hostname: 'r1' } } },
      next: {
        networks: 2,
        facts: { hostname: 'r1', agentVersion: '0.1.0' },
        heartbeatTime: '2025-01-01T12:00:00Z',
        conditions: ready('True', 'AgentConnected', 'agent 0.1.0 connected'),
      },
    },
    {
      name: 'an unchanged status with a recent heartbeat (no write)',
      current: connectedStatus,
      observed: connected,
      at: new Date('2025-01-01T12:00:30Z'),
      next: undefined,
    },
    {
      name: 'an unchanged status with a stale heartbeat (heartbeat refreshed)',
      current: connectedStatus,
      observed: connected,
      at: new Date('2025-01-01T12:01:00Z'),
      next: { ...connectedStatus, heartbeatTime: '2025-01-01T12:01:00Z' },
    },
    {
      name: 'an agent gone past the grace period (Unknown; facts kept)',
      current: connectedStatus,
      observed: { connected: false, graceSeconds: 40 },
      at: new Date('2025-01-01T12:00:40Z'),
      next: {
        ...connectedStatus,
        conditions: ready(
          'Unknown',
          'AgentDisconnected',
          'agent disconnected and did not reconnect within 40s',
          '2025-01-01T12:00:40Z',
        ),
      },
    },
    {
      name: 'an agent whose libvirt does not answer (not Ready: the failing check says why)',
      current: connectedStatus,
      observed: { ...connected, conditions: [libvirtDown, kvmSlow, bogus] },
      at: new Date('2025-01-01T12:00:10Z'),
      next: {
        ...connectedStatus,
        heartbeatTime: '2025-01-01T12:00:10Z',
        conditions: [
          ...ready(
            'False',
            'LibvirtUnreachable',
            `agent 0.1.0 connected, but LibvirtReachable is False: ${libvirtDown.message}`,
            '2025-01-01T12:00:10Z',
          ),
          { ...check(libvirtDown), lastTransitionTime: '2025-01-01T12:00:10Z' },
          { ...check(kvmSlow), lastTransitionTime: '2025-01-01T12:00:10Z' },
        ],
      },
    },
    {
      name: 'an agent whose libvirt answers again (Ready; the checks keep their history)',
      current: {
        ...connectedStatus,
        conditions: [
          ...ready('False', 'LibvirtUnreachable', 'down', '2025-01-01T12:00:10Z'),
          { ...check(libvirtDown), lastTransitionTime: '2025-01-01T12:00:10Z' },
          { ...check(kvmSlow), lastTransitionTime: '2025-01-01T12:00:10Z' },
        ],
      },
      observed: { ...connected, conditions: [libvirtUp, kvmSlow] },
      at: new Date('2025-01-01T12:00:20Z'),
      next: {
        ...connectedStatus,
        heartbeatTime: '2025-01-01T12:00:20Z',
        conditions: [
          ...ready('True', 'AgentConnected', 'agent 0.1.0 connected', '2025-01-01T12:00:20Z'),
          { ...check(libvirtUp), lastTransitionTime: '2025-01-01T12:00:20Z' },
          { ...check(kvmSlow), lastTransitionTime: '2025-01-01T12:00:10Z' },
        ],
      },
    },
    {
      name: 'checks from the Hello, before any other report',
      current: undefined,
      observed: { connected: true, hello: { ...hello, conditions: [libvirtDown] } },
      next: {
        ...connectedStatus,
        conditions: [
          ...ready(
            'False',
            'LibvirtUnreachable',
            `agent 0.1.0 connected, but LibvirtReachable is False: ${libvirtDown.message}`,
          ),
          { ...check(libvirtDown), lastTransitionTime: '2025-01-01T12:00:00Z' },
        ],
      },
    },
    {
      name: 'an agent already marked gone (no write)',
      current: {
        ...connectedStatus,
        conditions: ready(
          'Unknown',
          'AgentDisconnected',
          'agent disconnected and did not reconnect within 40s',
        ),
      },
      observed: { connected: false, graceSeconds: 40 },
      at: new Date('2025-01-01T12:05:00Z'),
      next: undefined,
    },
  ];
  for (const row of rows) {
    it(`writes ${row.next ? 'a new status' : 'nothing'} for ${row.name}`, () => {
      assert.deepEqual(
        nextAgentStatus(row.role ?? 'libvirt', row.current, row.observed, row.at ?? now, 60),
        row.next,
      );
    });
  }
});
