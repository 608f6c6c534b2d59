/**
 * One agent's open Connect stream: jobs go down it, each with an id, a deadline and the whole
 * desired object, and wait for the agent's result. Bounded in-flight jobs; a session that ends
 * fails what is still waiting as Unavailable, so callers retry once the agent is back.
 */
import { randomUUID } from 'node:crypto';
import { type ServerDuplexStream, status as Status } from '@grpc/grpc-js';
import { errorCodes, LoamError } from '../../crds/errors.js';
import type {
  AgentCondition,
  ConnectResponse,
  Hello,
  JobResult,
} from '../../proto/gen/loam/agent/v1/agent.js';
import type { AgentIdentity } from './identity.js';
import type { HubMetrics } from './metrics.js';

export interface JobRequest {
  /** What to do, e.g. instance.apply. */
  type: string;
  /** The whole desired object; sent as JSON. */
  object: unknown;
  /** When the result is no longer wanted: the job then fails with DeadlineExceeded. */
  deadline: Date;
}

interface PendingJob {
  job: JobRequest;
  started: number;
  timer: NodeJS.Timeout;
  resolve(result: JobResult): void;
  reject(err: LoamError): void;
}

export interface SessionOptions {
  maxInflightJobs: number;
  /** The largest message the stream may carry: a bigger job would end the whole session. */
  maxMessageBytes: number;
  metrics: HubMetrics;
  /**
   * Ids of jobs recently sent to this agent, kept across its sessions: a result for one of them
   * that nobody awaits any more is late, a result for any other id is for a job never sent.
   */
  sentJobs: Set<string>;
  /** The session ended, with why. */
  onClosed(session: Session, details: string): void;
  /**
   * The agent answered `job`; called as its message arrives, before the dispatch resolves, so
   * what the answer reports is ordered with the agent's other messages (an inventory change sent
   * after it must not be overtaken by it).
   */
  onResult(session: Session, job: JobRequest, result: JobResult): void;
}

/** How many job ids an agent's sentJobs keeps. */
const rememberedJobs = 4096;
/** Room in a Job message for what is not the object: id, type, deadline, framing. */
const jobEnvelopeBytes = 4096;

/** Ends a server stream with a status (OK: a clean end), unless it has ended already. */
export function endCall(call: ServerDuplexStream<unknown, unknown>, code: Status, details: string): void {
  if (call.cancelled || call.destroyed || call.writableEnded) return;
  // grpc-js turns an 'error' carrying a code into the call's final status.
  if (code === Status.OK) call.end();
  else call.emit('error', { code, details });
}

export class Session {
  private readonly inflight = new Map<string, PendingJob>();
  private closed = false;
  /** The agent's latest checks of its machine: the Hello's until it reports others. */
  conditions: AgentCondition[];

  constructor(
    readonly identity: AgentIdentity,
    readonly hello: Hello,
    private readonly call: ServerDuplexStream<unknown, ConnectResponse>,
    private readonly options: SessionOptions,
  ) {
    this.conditions = hello.conditions;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  send(message: ConnectResponse): void {
    if (!this.closed) this.call.write(message);
  }

  dispatch(job: JobRequest): Promise<JobResult> {
    const agent = `${this.identity.role} agent ${this.identity.name}`;
    if (this.closed) return Promise.reject(new LoamError('Unavailable', `${agent} is not connected`));
    if (this.inflight.size >= this.options.maxInflightJobs) {
      return Promise.reject(
        new LoamError('Unavailable', `${agent} has ${this.inflight.size} jobs in flight, the most allowed`),
      );
    }
    const timeout = job.deadline.getTime() - Date.now();
    if (timeout <= 0)
      return Promise.reject(new LoamError('DeadlineExceeded', `job ${job.type} is past its deadline`));
    const objectJson = Buffer.from(JSON.stringify(job.object));
    if (objectJson.length > this.options.maxMessageBytes - jobEnvelopeBytes) {
      return Promise.reject(
        new LoamError(
          'RequestEntityTooLarge',
          `job ${job.type}: object of ${objectJson.length} bytes is too large`,
        ),
      );
    }
    const id = randomUUID();
    return new Promise<JobResult>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          this.settle(
            id,
            new LoamError('DeadlineExceeded', `${agent} did not answer job ${id} (${job.type}) in time`),
          ),
        timeout,
      );
      this.inflight.set(id, { job, started: performance.now(), timer, resolve, reject });
      this.options.metrics.jobsInflight.inc();
      const { sentJobs } = this.options;
      sentJobs.add(id);
      if (sentJobs.size > rememberedJobs) sentJobs.delete(sentJobs.values().next().value as string);
      this.call.write({
        message: {
          $case: 'job',
          value: {
            id,
            type: job.type,
            deadline: job.deadline,
            objectJson,
          },
        },
      });
    });
  }

  /** Hands a result to its waiting dispatch; false when no job of that id was ever sent to this agent. */
  complete(result: JobResult): boolean {
    if (this.inflight.has(result.jobId)) {
      this.settle(result.jobId, result);
      return true;
    }
    // Known but not awaited: it came after its deadline or after its session ended.
    return this.options.sentJobs.has(result.jobId);
  }

  /** Ends the session once: fails its in-flight jobs and ends the stream with `code`. */
  close(code: Status, details: string): void {
    if (this.closed) return;
    this.closed = true;
    for (const id of [...this.inflight.keys()]) {
      this.settle(id, new LoamError('Unavailable', `session of ${this.identity.name} ended: ${details}`));
    }
    endCall(this.call, code, details);
    this.options.onClosed(this, details);
  }

  private settle(id: string, outcome: JobResult | LoamError): void {
    const pending = this.inflight.get(id);
    if (!pending) return;
    this.inflight.delete(id);
    clearTimeout(pending.timer);
    const { metrics } = this.options;
    metrics.jobsInflight.dec();
    const code = outcome instanceof LoamError ? errorCodes[outcome.code].grpc : outcome.code;
    metrics.jobDuration.observe(
      { kind: pending.job.type, result: Status[code] ?? 'UNKNOWN' },
      (performance.now() - pending.started) / 1000,
    );
    if (outcome instanceof LoamError) pending.reject(outcome);
    else {
      try {
        this.options.onResult(this, pending.job, outcome);
      } finally {
        pending.resolve(outcome); // whatever a listener did: the job is answered
      }
    }
  }
}
