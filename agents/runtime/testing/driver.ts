/**
 * A driver for tests of the runtime and of the hub: it records every job, answers as the test
 * says (OK with the job's object as observed state, unless `respond` is replaced), tracks how many
 * jobs run at once, and serves byte streams as an echo.
 */
import { type Duplex, PassThrough } from 'node:stream';
import { status } from '@grpc/grpc-js';
import { Gauge, type Registry } from 'prom-client';
import type {
  AgentCondition,
  AgentJob,
  Driver,
  DriverEvents,
  InventoryItem,
  JobOutcome,
  StreamRequest,
} from '../driver.js';

export class TestDriver implements Driver {
  capabilities: string[] = ['test'];
  extraFacts: Record<string, string> = { driver: 'test' };
  inventoryItems: InventoryItem[] = [];
  /** What its checks of the machine find; a test changes it to see the change reported. */
  checks: AgentCondition[] = [];
  /** Decides each job's outcome; may wait, throw, or watch the deadline signal. */
  respond: (job: AgentJob, signal: AbortSignal) => JobOutcome | Promise<JobOutcome> = (job) => ({
    code: status.OK,
    observed: { handled: job.object.metadata.name },
  });
  /** Every job handed to the driver, in the order it started. */
  readonly jobs: AgentJob[] = [];
  /** "start <id>" and "end <id>" in the order they happened. */
  readonly log: string[] = [];
  /** Ids of the jobs running now. */
  readonly running = new Set<string>();
  /** The most jobs that ran at once. */
  maxRunning = 0;
  /** Set once the runtime started the driver: reports go through it. */
  events: DriverEvents | undefined;
  /** The byte streams the hub asked for, with the local end each was given. */
  readonly streams: { request: StreamRequest; local: Duplex }[] = [];

  async facts(): Promise<Record<string, string>> {
    return this.extraFacts;
  }

  /** A driver metric, as real drivers export theirs: the jobs it was handed. */
  registerMetrics(registry: Registry): void {
    const jobs = this.jobs;
    new Gauge({
      name: 'loam_test_driver_jobs',
      help: 'Jobs handed to the test driver.',
      registers: [registry],
      collect() {
        this.set(jobs.length);
      },
    });
  }

  async inventory(): Promise<InventoryItem[]> {
    return this.inventoryItems;
  }

  async conditions(): Promise<AgentCondition[]> {
    return this.checks;
  }

  async start(events: DriverEvents): Promise<void> {
    this.events = events;
  }

  async handle(job: AgentJob, signal: AbortSignal): Promise<JobOutcome> {
    this.jobs.push(job);
    this.log.push(`start ${job.id}`);
    this.running.add(job.id);
    this.maxRunning = Math.max(this.maxRunning, this.running.size);
    try {
      return await this.respond(job, signal);
    } finally {
      this.running.delete(job.id);
      this.log.push(`end ${job.id}`);
    }
  }

  /** Makes the local end of each stream; an echo unless a test replaces it. */
  makeStream: () => Duplex = () => new PassThrough();

  openStream(request: StreamRequest): Duplex {
    const local = this.makeStream();
    this.streams.push({ request, local });
    return local;
  }
}

/** A promise a test settles by hand: hold a job until the test lets it finish. */
export function gate<T = void>(): { promise: Promise<T>; open: (value: T) => void } {
  let open!: (value: T) => void;
  const promise = new Promise<T>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}
