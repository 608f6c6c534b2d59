/**
 * The agent's local observability endpoint: /metrics (Prometheus, a private registry) and
 * /healthz (200 while a session with the hub is open, 503 otherwise), on a loopback address by
 * default since it carries no authentication.
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { status } from '@grpc/grpc-js';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { LoamError } from '../../crds/errors.js';
import { splitHostPort } from './config.js';

export interface AgentMetrics {
  registry: Registry;
  connected: Gauge;
  jobs: Counter<'type' | 'result'>;
  jobDuration: Histogram<'type'>;
  certificateExpiry: Gauge;
}

export function agentMetrics(): AgentMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    connected: new Gauge({
      name: 'loam_agent_session_connected',
      help: '1 while a session with the hub is open (Welcome received), 0 otherwise.',
      registers: [registry],
    }),
    jobs: new Counter({
      name: 'loam_agent_jobs_total',
      help: 'Jobs finished, by job type and result (the gRPC code name of the JobResult).',
      labelNames: ['type', 'result'],
      registers: [registry],
    }),
    jobDuration: new Histogram({
      name: 'loam_agent_job_duration_seconds',
      help: 'How long the driver took per job, by job type.',
      labelNames: ['type'],
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
      registers: [registry],
    }),
    certificateExpiry: new Gauge({
      name: 'loam_agent_certificate_expiry_timestamp_seconds',
      help: "When the agent's client certificate expires, in seconds since the Unix epoch.",
      registers: [registry],
    }),
  };
}

/** Counts a finished job (the executor's onResult). */
export function recordJob(
  metrics: AgentMetrics,
  type: string,
  code: status,
  seconds: number | undefined,
): void {
  metrics.jobs.inc({ type, result: status[code] ?? String(code) });
  if (seconds !== undefined) metrics.jobDuration.observe({ type }, seconds);
}

/** Serves /metrics and /healthz on `address` (HOST:PORT, port 0 for any); resolves once listening. */
export async function serveMetrics(
  address: string,
  metrics: AgentMetrics,
  healthy: () => boolean,
): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://agent').pathname;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
    } else if (path === '/metrics') {
      metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
        () => res.writeHead(500).end(),
      );
    } else if (path === '/healthz') {
      const ok = healthy();
      res
        .writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' })
        .end(ok ? 'ok\n' : 'not connected to the hub\n');
    } else {
      res.writeHead(404).end();
    }
  });
  const { host, port } = splitHostPort(address) ?? { host: address, port: 0 };
  server.listen(port, host);
  try {
    await once(server, 'listening');
  } catch (err) {
    throw new LoamError(
      'Unavailable',
      `cannot serve /metrics on --metrics-address ${address}: ${(err as Error).message}`,
    );
  }
  const bound = server.address() as AddressInfo;
  const shown = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
  return { server, url: `http://${shown}:${bound.port}` };
}
