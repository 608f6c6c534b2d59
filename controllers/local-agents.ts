/**
 * The agents of the control plane's own machine, run inside `loam up` so one command gives a
 * working system: each enrolls over loopback like any other agent (the control plane makes a
 * one-use bootstrap token for it on first start; later starts reuse the identity in its data dir)
 * and then talks to the hub through the same mTLS session a remote agent would.
 */
import { hostname } from 'node:os';
import { join } from 'node:path';
import { type KubeConfig, KubernetesObjectApi } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { Agent } from '../agents/runtime/agent.js';
import type { AgentConfig } from '../agents/runtime/config.js';
import type { Driver } from '../agents/runtime/driver.js';
import { loadIdentity } from '../agents/runtime/identity.js';
import { createBootstrapToken } from './pki/bootstrap-tokens.js';
import { type AgentRole, caPin } from './pki/certificates.js';

export interface LocalAgent {
  role: AgentRole;
  driver: Driver;
  /** Where its /metrics and /healthz listen; port 0 picks a free port. */
  metricsAddress: string;
  /** Releases what the driver holds (a virsh session), once the agent has stopped. */
  close?: () => Promise<void>;
}

export interface LocalAgentsOptions {
  agents: LocalAgent[];
  /** The hub's port on this machine; agents dial it on loopback. */
  hubPort: number;
  caCertPem: string;
  kubeConfig: KubeConfig;
  /** Each agent keeps its identity in <dataDir>/agents/<role>. */
  dataDir: string;
  logger: Logger;
  version: string;
}

/** The first label of this machine's name, as a remote agent names itself by default. */
function machineName(): string {
  return (hostname().split('.')[0] ?? 'localhost').toLowerCase();
}

export async function startLocalAgents(options: LocalAgentsOptions): Promise<{ stop(): Promise<void> }> {
  const running: { agent: Agent; local: LocalAgent }[] = [];
  for (const local of options.agents) {
    const dataDir = join(options.dataDir, 'agents', local.role);
    const enrolled = loadIdentity(dataDir) !== undefined;
    const token = enrolled
      ? undefined
      : (
          await createBootstrapToken(KubernetesObjectApi.makeApiClient(options.kubeConfig), {
            ttlSeconds: 600,
            usages: 1,
            role: local.role,
          })
        ).token;
    const config: AgentConfig = {
      role: local.role,
      server: `127.0.0.1:${options.hubPort}`,
      ...(token ? { token } : {}),
      caPin: caPin(options.caCertPem),
      dataDir,
      name: machineName(),
      metricsAddress: local.metricsAddress,
      logLevel: 'info',
      renewAt: 0.8,
      backoff: { initialMs: 500, maxMs: 30_000 },
    };
    const logger = options.logger.child({ component: `${local.role}-agent` });
    const agent = new Agent({ config, driver: local.driver, logger, version: options.version });
    agent.run().catch((err: unknown) => logger.error({ err }, 'the local agent stopped'));
    running.push({ agent, local });
  }
  return {
    async stop() {
      await Promise.all(
        running.map(async ({ agent, local }) => {
          await agent.stop();
          await local.close?.();
        }),
      );
    },
  };
}
