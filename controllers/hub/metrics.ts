/** The hub's Prometheus metrics, in the control plane's registry. */
import { Gauge, Histogram, type Registry } from 'prom-client';
import { agentRoles } from '../pki/certificates.js';

export interface HubMetrics {
  connected: Gauge<'role'>;
  jobDuration: Histogram<'kind' | 'result'>;
  jobsInflight: Gauge;
  streamsOpen: Gauge<'role'>;
}

export function hubMetrics(registry: Registry): HubMetrics {
  const connected = new Gauge({
    name: 'loam_agent_connected',
    help: 'Agents with an open session to the hub, by role.',
    labelNames: ['role'],
    registers: [registry],
  });
  const streamsOpen = new Gauge({
    name: 'loam_agent_streams_open',
    help: 'Byte streams (consoles) open through agents, by role.',
    labelNames: ['role'],
    registers: [registry],
  });
  // Both roles from the start, so a dashboard shows 0 rather than no series.
  for (const role of agentRoles) {
    connected.set({ role }, 0);
    streamsOpen.set({ role }, 0);
  }
  return {
    connected,
    jobDuration: new Histogram({
      name: 'loam_agent_job_duration_seconds',
      help: 'Time from dispatching a job to its result, by job type and gRPC status name (OK on success).',
      labelNames: ['kind', 'result'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300],
      registers: [registry],
    }),
    jobsInflight: new Gauge({
      name: 'loam_agent_jobs_inflight',
      help: 'Jobs sent to agents and not yet answered.',
      registers: [registry],
    }),
    streamsOpen,
  };
}
