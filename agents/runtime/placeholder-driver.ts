/**
 * The driver both roles run until their real drivers land: it reports the host facts and an
 * empty inventory, and answers every job UNIMPLEMENTED so the controllers see why nothing happens.
 */
import { status } from '@grpc/grpc-js';
import type { AgentRole } from '../../controllers/pki/certificates.js';
import type { Driver } from './driver.js';

export function placeholderDriver(role: AgentRole): Driver {
  return {
    capabilities: [],
    facts: async () => ({}),
    inventory: async () => [],
    handle: async (job) => ({
      code: status.UNIMPLEMENTED,
      message: `the ${role} agent cannot run ${job.type} jobs yet: its driver is not implemented`,
    }),
  };
}
