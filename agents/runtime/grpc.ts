/** The agent's side of gRPC: channel settings shared by every client, and unary calls as promises. */
import type { CallOptions, ServiceError } from '@grpc/grpc-js';
import { type ChannelOptions, credentials } from '@grpc/grpc-js';
import { AgentServiceClient } from '../../proto/gen/loam/agent/v1/agent.js';

/**
 * Keepalive pings notice a dead path (a NAT that forgot the flow, a hub that vanished) within
 * about 30 s even when the session is quiet between heartbeats. The channel's own reconnect
 * backoff (grpc-js: up to 120 s) is capped at 5 s: the agent paces its attempts itself, and a hub
 * that comes back (a new leader, say) must not wait on a long channel backoff.
 */
export const channelOptions: ChannelOptions = {
  'grpc.keepalive_time_ms': 20_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.initial_reconnect_backoff_ms': 500,
  'grpc.max_reconnect_backoff_ms': 5_000,
};

/** An AgentService client over mutual TLS with `identity`'s key and certificate. */
export function agentClient(
  server: string,
  identity: { keyPem: string; certPem: string; caPem: string },
): AgentServiceClient {
  const creds = credentials.createSsl(
    Buffer.from(identity.caPem),
    Buffer.from(identity.keyPem),
    Buffer.from(identity.certPem),
  );
  return new AgentServiceClient(server, creds, channelOptions);
}

/** A unary call with a deadline, as a promise. */
export function unary<Response>(
  invoke: (options: Partial<CallOptions>, done: (err: ServiceError | null, res: Response) => void) => void,
  timeoutMs: number,
): Promise<Response> {
  return new Promise((resolve, reject) => {
    invoke({ deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(res)));
  });
}
