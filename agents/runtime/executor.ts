/**
 * Runs the hub's jobs through the driver: one at a time per resource, so a delete never overtakes
 * the apply before it, and different resources in parallel up to a bound. Every job gets exactly
 * one result: the driver's, DEADLINE_EXCEEDED once its deadline passes (whether it started or
 * not), INVALID_ARGUMENT for an object it cannot read, the code of a thrown LoamError or INTERNAL
 * for any other exception. A job queued for a session that has ended is dropped unrun: the hub
 * dispatches it again on the next session.
 */
import { performance } from 'node:perf_hooks';
import { status } from '@grpc/grpc-js';
import { z } from 'zod';
import { errorCodes, isLoamError } from '../../crds/errors.js';
import type { Job, JobResult } from '../../proto/gen/loam/agent/v1/agent.js';
import type { AgentJob, JobOutcome } from './driver.js';

const objectSchema = z.looseObject({
  kind: z.string().min(1),
  metadata: z.looseObject({ name: z.string().min(1), namespace: z.string().optional() }),
});

/** The job as a driver sees it, or the INVALID_ARGUMENT outcome of one whose object is unreadable. */
export function parseJob(job: Job): AgentJob | JobOutcome {
  let json: unknown;
  try {
    json = JSON.parse(job.objectJson.toString('utf8'));
  } catch (err) {
    return { code: status.INVALID_ARGUMENT, message: `object is not JSON: ${(err as Error).message}` };
  }
  const parsed = objectSchema.safeParse(json);
  if (!parsed.success) {
    return { code: status.INVALID_ARGUMENT, message: 'object must have a kind and a metadata.name' };
  }
  const object = parsed.data;
  return {
    id: job.id,
    type: job.type,
    ...(job.deadline ? { deadline: job.deadline } : {}),
    object,
    key: `${object.kind}/${object.metadata.namespace ?? ''}/${object.metadata.name}`,
  };
}

/** A driver's exception as an outcome: a LoamError keeps its code, anything else is INTERNAL. */
export function outcomeOfError(err: unknown): JobOutcome {
  if (isLoamError(err)) return { code: errorCodes[err.code].grpc, message: err.message };
  return {
    code: status.INTERNAL,
    message: `driver failed: ${err instanceof Error ? err.message : String(err)}`,
  };
}

function toResult(jobId: string, outcome: JobOutcome): JobResult {
  return {
    jobId,
    code: outcome.code,
    message: outcome.message ?? '',
    observedJson: Buffer.from(outcome.observed === undefined ? '' : JSON.stringify(outcome.observed)),
  };
}

function isOutcome(value: unknown): value is JobOutcome {
  const code = (value as Partial<JobOutcome> | undefined)?.code;
  return Number.isInteger(code) && (code as number) >= 0 && (code as number) <= 16;
}

export type JobHandler = (job: AgentJob, signal: AbortSignal) => Promise<JobOutcome>;

export interface ExecutorOptions {
  handler: JobHandler;
  /** Jobs running at once, over all resources. */
  concurrency: number;
  /** Once per job, with the code of its result; `seconds` is how long it ran, undefined if it never did. */
  onResult?: (type: string, code: status, seconds: number | undefined) => void;
}

type Deliver = (result: JobResult) => void;

interface Task {
  job: AgentJob;
  /** Aborted when the session the job came on has ended. */
  session: AbortSignal;
  deliver: Deliver;
}

export class JobExecutor {
  private readonly queue: Task[] = [];
  private readonly busyKeys = new Set<string>();
  private running = 0;
  private closing = false;
  private readonly idleWaiters: (() => void)[] = [];

  constructor(private readonly options: ExecutorOptions) {}

  /** Queues `job`; `deliver` receives its one result. */
  submit(job: Job, session: AbortSignal, deliver: Deliver): void {
    const parsed = parseJob(job);
    if (!('key' in parsed)) {
      this.answer(job.type, job.id, deliver, parsed);
      return;
    }
    if (this.closing) {
      this.answer(job.type, job.id, deliver, {
        code: status.UNAVAILABLE,
        message: 'the agent is shutting down',
      });
      return;
    }
    this.queue.push({ job: parsed, session, deliver });
    this.pump();
  }

  /** Jobs running now and waiting to run. */
  get size(): number {
    return this.running + this.queue.length;
  }

  /**
   * Takes no more jobs (they get UNAVAILABLE, as do the queued ones) and waits up to `timeoutMs`
   * for the running ones; false if some were still running then.
   */
  async close(timeoutMs: number): Promise<boolean> {
    this.closing = true;
    for (const task of this.queue.splice(0)) {
      this.answer(task.job.type, task.job.id, task.deliver, {
        code: status.UNAVAILABLE,
        message: 'the agent is shutting down',
      });
    }
    if (this.running === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([
      new Promise<true>((resolve) => this.idleWaiters.push(() => resolve(true))),
      new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    return drained;
  }

  private answer(type: string, jobId: string, deliver: Deliver, outcome: JobOutcome, seconds?: number): void {
    let result: JobResult;
    try {
      result = toResult(jobId, outcome);
    } catch (err) {
      // An observed value JSON cannot express (a cycle, a BigInt) fails the job, not the agent.
      outcome = {
        code: status.INTERNAL,
        message: `the driver's observed state is not JSON: ${(err as Error).message}`,
      };
      result = toResult(jobId, outcome);
    }
    this.options.onResult?.(type, outcome.code, seconds);
    deliver(result);
  }

  // Starts every queued job whose resource is idle, oldest first, while slots are free.
  private pump(): void {
    for (let i = 0; i < this.queue.length && this.running < this.options.concurrency; ) {
      const task = this.queue[i] as Task;
      if (task.session.aborted) {
        this.queue.splice(i, 1);
      } else if (this.busyKeys.has(task.job.key)) {
        i++;
      } else {
        this.queue.splice(i, 1);
        const { deadline } = task.job;
        if (deadline && deadline.getTime() <= Date.now()) {
          this.answer(task.job.type, task.job.id, task.deliver, {
            code: status.DEADLINE_EXCEEDED,
            message: `the deadline ${deadline.toISOString()} passed before the job could start`,
          });
        } else {
          void this.run(task);
        }
      }
    }
    if (this.running === 0 && this.queue.length === 0) {
      for (const wake of this.idleWaiters.splice(0)) wake();
    }
  }

  private async run(task: Task): Promise<void> {
    const { job } = task;
    this.running++;
    this.busyKeys.add(job.key);
    const started = performance.now();
    const deadlineReached = new AbortController();
    let answered = false;
    const answer = (outcome: JobOutcome) => {
      if (answered) return;
      answered = true;
      this.answer(job.type, job.id, task.deliver, outcome, (performance.now() - started) / 1000);
    };
    // The hub stops waiting at the deadline, so answer then; the resource stays busy until the
    // driver returns, so the next job for it cannot overlap this one.
    const timer =
      job.deadline &&
      setTimeout(() => {
        deadlineReached.abort();
        answer({
          code: status.DEADLINE_EXCEEDED,
          message: `the deadline ${job.deadline?.toISOString()} passed while the job ran`,
        });
      }, job.deadline.getTime() - Date.now());
    try {
      const outcome = await this.options.handler(job, deadlineReached.signal);
      if (!isOutcome(outcome)) throw new Error('the driver returned no outcome with a gRPC code');
      answer(outcome);
    } catch (err) {
      answer(outcomeOfError(err));
    } finally {
      clearTimeout(timer);
      this.busyKeys.delete(job.key);
      this.running--;
      this.pump();
    }
  }
}
