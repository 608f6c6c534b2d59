/**
 * A real agent runtime (in the test process) joined to a control plane the test started: enrolled
 * with a bootstrap token against the CA pin of `<planeDir>/pki`, connected before it is returned.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AgentConfig } from '../../agents/runtime/config.js';
import type { Driver } from '../../agents/runtime/driver.js';
import type { AgentRole } from '../../controllers/pki/certificates.js';
import { caPin } from '../../controllers/pki/certificates.js';
import { startAgent, type TestAgent } from '../agents/hub-double.js';
import { pollUntil } from './poll.js';

export interface JoinOptions<D extends Driver> {
  role: AgentRole;
  name: string;
  driver: D;
  /** The plane's data dir, whose pki/ca.crt the agent pins. */
  planeDir: string;
  agentPort: number;
  token: string;
  /** The agent keeps its identity in <dataDir>/<name>. */
  dataDir: string;
  /** Settings other than the test defaults (quick reconnects, silent logs). */
  config?: Partial<AgentConfig>;
}

export async function joinAgent<D extends Driver>(options: JoinOptions<D>): Promise<TestAgent<D>> {
  const running = startAgent(
    {
      role: options.role,
      server: `127.0.0.1:${options.agentPort}`,
      token: options.token,
      caPin: caPin(readFileSync(join(options.planeDir, 'pki', 'ca.crt'), 'utf8')),
      dataDir: join(options.dataDir, options.name),
      name: options.name,
      metricsAddress: '127.0.0.1:0',
      logLevel: 'silent',
      renewAt: 0.8,
      backoff: { initialMs: 50, maxMs: 300 },
      ...options.config,
    },
    { driver: options.driver, shutdownTimeoutMs: 200 },
  );
  await pollUntil(() => running.agent.isConnected, {
    timeoutMs: 15_000,
    what: `agent ${options.name} to connect`,
  });
  return running;
}
