/**
 * What a hypervisor keeps for itself, as kubelet's --system-reserved: Instances are scheduled
 * against its allocatable cpus and memory, capacity minus what is reserved. The agent reports
 * them as the facts allocatableCpus and allocatableMemory beside cpus and memory (capacity), and
 * the hub writes them into the Host's status.allocatable.
 */
import { LoamError } from '../../crds/errors.js';
import { parseQuantity } from '../../crds/quantity.js';
import { agentSettings, flagName } from '../runtime/config.js';

export interface Reserved {
  cpus: number;
  /** A quantity. */
  memory: string;
}

export interface AllocatableFacts {
  allocatableCpus: string;
  /** In Ki, as the fact memory. */
  allocatableMemory: string;
}

export const defaultReserved: Reserved = {
  cpus: agentSettings.reservedCpus.default,
  memory: agentSettings.reservedMemory.default,
};

/**
 * The allocatable facts of a host whose facts cpus and memory are `capacity`, keeping `reserved`.
 * A reservation that leaves the Instances no cpu or no memory is refused, as kubelet refuses to
 * start when its reservations exceed the node's capacity, so allocatable is never negative.
 */
export function allocatableFacts(
  capacity: { cpus: string; memory: string },
  reserved: Reserved,
): AllocatableFacts {
  const cpus = Number(capacity.cpus) - reserved.cpus;
  const memoryKi = (parseQuantity(capacity.memory) - parseQuantity(reserved.memory)) / 1024n;
  const problems = [
    ...(cpus < 1
      ? [`${flagName('reservedCpus')} ${reserved.cpus} leaves none of this host's ${capacity.cpus} cpus`]
      : []),
    ...(memoryKi < 1n
      ? [
          `${flagName('reservedMemory')} ${reserved.memory} leaves none of this host's ${capacity.memory} of memory`,
        ]
      : []),
  ];
  if (problems.length > 0) {
    throw new LoamError(
      'Invalid',
      `invalid agent configuration: ${problems.join('; ')} to Instances (to keep Instances off a Host, set its spec.unschedulable)`,
    );
  }
  return { allocatableCpus: String(cpus), allocatableMemory: `${memoryKi}Ki` };
}
