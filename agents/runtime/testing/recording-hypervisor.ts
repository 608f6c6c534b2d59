/**
 * A test double of the libvirt driver, for testing the controllers before and without libvirt:
 * it keeps "domains" in memory (and, given a file, on disk, so they survive an agent restart as
 * libvirt's do), answers instance.apply and instance.delete as the libvirt driver does, reports
 * its domains as inventory in the shape the Instance controller reads (ObservedInstance), and
 * records every job. Tests can hold jobs and crash or stop domains behind the controller's back.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { status } from '@grpc/grpc-js';
import type { InstanceJobObject, ObservedInstance } from '../../../controllers/instance/reconcile.js';
import { allocatableFacts, type Reserved } from '../../libvirt/reserved.js';
import {
  type AgentJob,
  type Driver,
  type DriverEvents,
  hostCapacity,
  type InventoryItem,
  type JobOutcome,
} from '../driver.js';

interface Domain {
  ref: { kind: string; namespace: string; name: string; uid: string };
  observed: ObservedInstance;
}

export class RecordingHypervisor implements Driver {
  readonly capabilities = ['tcg'];
  /** Every job handed to the driver, in the order it started. */
  readonly jobs: AgentJob[] = [];
  /** Runs before each job is answered; a test may hold the job or make it throw. */
  beforeAnswer: (job: AgentJob) => void | Promise<void> = () => {};
  private readonly domains = new Map<string, Domain>();
  private events: DriverEvents | undefined;

  private readonly stateFile: string | undefined;
  private readonly capacity: { cpus: number; memory: string } | undefined;
  private readonly reserved: Reserved | undefined;

  /**
   * `stateFile`: where domains are kept across restarts of the agent (memory only without it);
   * `capacity`: what the Host reports instead of this machine's cpus and memory; `reserved`: what
   * it keeps for itself, reported as allocatable as the libvirt driver does (none without).
   */
  constructor(
    options: { stateFile?: string; capacity?: { cpus: number; memory: string }; reserved?: Reserved } = {},
  ) {
    const { stateFile } = options;
    this.stateFile = stateFile;
    this.capacity = options.capacity;
    this.reserved = options.reserved;
    if (stateFile && existsSync(stateFile)) {
      for (const domain of JSON.parse(readFileSync(stateFile, 'utf8')) as Domain[]) {
        this.domains.set(domain.ref.uid, domain);
      }
    }
  }

  async facts(): Promise<Record<string, string>> {
    const capacity = this.capacity && { cpus: String(this.capacity.cpus), memory: this.capacity.memory };
    const allocatable = this.reserved && allocatableFacts(capacity ?? hostCapacity(), this.reserved);
    return { driver: 'recording', ...capacity, ...allocatable };
  }

  async start(events: DriverEvents): Promise<void> {
    this.events = events;
  }

  async inventory(): Promise<InventoryItem[]> {
    return [...this.domains.values()].map(({ ref, observed }) => ({ ref, observed }));
  }

  /** The domains now, by namespace/name. */
  running(): Map<string, ObservedInstance> {
    return new Map([...this.domains.values()].map((d) => [`${d.ref.namespace}/${d.ref.name}`, d.observed]));
  }

  /** Changes a domain's state as if the guest did it (crashed, powered off), and reports it. */
  setState(uid: string, state: ObservedInstance['state']): void {
    const domain = this.domains.get(uid);
    if (!domain) throw new Error(`no domain ${uid}`);
    domain.observed = { ...domain.observed, state };
    this.save();
    this.events?.inventoryChanged({ upserted: [{ ref: domain.ref, observed: domain.observed }] });
  }

  /** Removes a domain behind the controller's back, as a person with virsh would, and reports it. */
  remove(uid: string): void {
    const domain = this.domains.get(uid);
    if (!domain) throw new Error(`no domain ${uid}`);
    this.domains.delete(uid);
    this.save();
    this.events?.inventoryChanged({ removed: [domain.ref] });
  }

  async handle(job: AgentJob): Promise<JobOutcome> {
    this.jobs.push(job);
    await this.beforeAnswer(job);
    const object = job.object as unknown as InstanceJobObject;
    const { namespace, name, uid, generation } = object.metadata;
    const ref = { kind: 'Instance', namespace, name, uid };
    if (job.type === 'instance.delete') {
      this.domains.delete(uid);
      this.save();
      this.events?.inventoryChanged({ removed: [ref] });
      return { code: status.OK, observed: { state: 'absent', deleted: true } satisfies ObservedInstance };
    }
    if (job.type !== 'instance.apply') return { code: status.UNIMPLEMENTED, message: `no ${job.type} here` };
    const previous = this.domains.get(uid)?.observed.state;
    const strategy = object.spec.runStrategy;
    const state =
      strategy === 'Halted'
        ? 'stopped'
        : strategy === 'Manual' && previous !== undefined
          ? previous
          : strategy === 'RerunOnFailure' && previous === 'stopped'
            ? 'stopped'
            : 'running';
    const observed: ObservedInstance = {
      state,
      generation,
      interfaces: object.status.interfaces.map((nic) => ({ mac: nic.mac })),
    };
    this.domains.set(uid, { ref, observed });
    this.save();
    return { code: status.OK, observed };
  }

  private save(): void {
    if (this.stateFile) writeFileSync(this.stateFile, JSON.stringify([...this.domains.values()]));
  }
}
