/**
 * What the controllers know of the agents, through the hub: which agents have a session, what
 * each last reported of the objects it runs (its inventory at every connect, inventory changes,
 * job results), the objects each agent's inventory lists, the jobs in flight per object, and the
 * jobs an agent refused for good. Reconciles read it; controllers subscribe to `change` to queue
 * the objects a report concerns. It lives in memory only: after a restart every agent's Hello
 * reports its whole inventory again.
 */
import { EventEmitter } from 'node:events';
import { status as grpcStatus } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { isLoamError } from '../../crds/errors.js';
import type { ResourceRef } from '../../proto/gen/loam/agent/v1/agent.js';
import type { Hub } from '../hub/hub.js';
import { type AgentRef, agentKey } from '../hub/identity.js';
import type { AgentRole } from '../pki/certificates.js';

/** kind/namespace/name of an API object ("Instance/default/web"); namespace empty when cluster-scoped. */
export type ObjectKey = string;

export interface ObjectRef {
  kind: string;
  namespace: string;
  name: string;
}

export function refKey(ref: ObjectRef): ObjectKey {
  return `${ref.kind}/${ref.namespace}/${ref.name}`;
}

/** One agent's latest report on one object. */
export interface Observation {
  agent: AgentRef;
  /** The uid of the object the agent acted for; empty when it did not say. */
  uid: string;
  /** The agent's observed state (JSON); undefined when it reported none. */
  observed: unknown;
}

/** A job sent for an object and not answered yet. */
export interface InFlightJob {
  agent: AgentRef;
  type: string;
  object: { kind: string; metadata: { name: string; namespace?: string; uid?: string; generation?: number } };
}

/**
 * A job that failed, as its agent answered: refused for good (INVALID_ARGUMENT,
 * FAILED_PRECONDITION, or UNIMPLEMENTED: its driver does not do this), when sending it again cannot
 * help until the object changes; or failed in a way worth retrying.
 */
export interface JobFailure {
  agent: AgentRef;
  type: string;
  uid: string;
  generation: number;
  message: string;
  /** How many times in a row it failed, and when it may be sent again (retryable failures). */
  attempts: number;
  retryAt: number;
}

/** Backoff between retries of a failing job: 0.5 s doubling to 5 min, as a crash-looping pod. */
function retryDelayMs(attempts: number): number {
  return Math.min(500 * 2 ** (attempts - 1), 300_000);
}

export interface AgentStateEvents {
  /** Something about the object changed: a report, or a job's result. */
  change: [ref: ObjectRef];
  /** An agent connected or disconnected. */
  agent: [agent: AgentRef, connected: boolean];
  /** The objects an agent's inventory lists changed. */
  inventory: [agent: AgentRef];
}

const permanentCodes = new Set<number>([
  grpcStatus.INVALID_ARGUMENT,
  grpcStatus.FAILED_PRECONDITION,
  grpcStatus.UNIMPLEMENTED,
]);

function parseObserved(bytes: Uint8Array): unknown {
  if (bytes.length === 0) return undefined;
  try {
    return JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    return undefined;
  }
}

function objectRefOf({ kind, metadata }: InFlightJob['object']): ObjectRef {
  return { kind, namespace: metadata.namespace ?? '', name: metadata.name };
}

/** The object a job was for, read from the job's object as sent; undefined when it names none. */
function jobSubject(object: unknown): { ref: ObjectRef; uid: string } | undefined {
  const sent = (object ?? {}) as Partial<InFlightJob['object']>;
  if (typeof sent.kind !== 'string' || typeof sent.metadata?.name !== 'string') return undefined;
  return { ref: objectRefOf(sent as InFlightJob['object']), uid: sent.metadata.uid ?? '' };
}

function resourceKey(ref: ResourceRef): ObjectKey {
  return refKey({ kind: ref.kind, namespace: ref.namespace, name: ref.name });
}

/** An observation that records a finished deletion; it outlives the inventory entry's removal. */
function recordsDeletion(observation: Observation | undefined): boolean {
  return (observation?.observed as { deleted?: unknown } | undefined)?.deleted === true;
}

export class AgentState extends EventEmitter<AgentStateEvents> {
  private readonly connectedAgents: Record<AgentRole, Set<string>> = {
    libvirt: new Set(),
    network: new Set(),
  };
  /** Agents that said Hello since this process started: their inventory is known in full. */
  private readonly reported = new Set<string>();
  /** Per object, per agent key. */
  private readonly observations = new Map<ObjectKey, Map<string, Observation>>();
  private readonly inFlight = new Map<ObjectKey, Set<InFlightJob>>();
  /** Per object, the latest refusal per agent and job type. */
  private readonly rejections = new Map<ObjectKey, Map<string, JobFailure>>();
  /** Per object, the latest retryable failure per agent and job type, until one succeeds. */
  private readonly failures = new Map<ObjectKey, Map<string, JobFailure>>();
  /**
   * Per agent key, the objects its inventory lists (with their uids), apart from the observations,
   * which are forgotten once an object is gone from the API: what an agent still runs for an
   * object that is gone (an orphaned domain) stays listed until the agent says it is gone.
   */
  private readonly inventories = new Map<string, { agent: AgentRef; refs: Map<ObjectKey, ResourceRef> }>();

  constructor(
    private readonly hub: Hub,
    private readonly logger: Logger,
  ) {
    super();
    hub.on('connected', ({ agent, inventory }) => {
      this.connectedAgents[agent.role].add(agent.name);
      this.reported.add(agentKey(agent));
      const present = new Set(inventory.map((resource) => resourceKey(resource.ref ?? emptyRef)));
      for (const [key, byAgent] of this.observations) {
        if (!present.has(key) && byAgent.has(agentKey(agent))) this.forget(key, agent);
      }
      for (const resource of inventory) this.record(resource.ref ?? emptyRef, agent, resource.observedJson);
      const refs = inventory.map((resource) => resource.ref ?? emptyRef);
      this.inventories.set(agentKey(agent), {
        agent,
        refs: new Map(refs.map((ref) => [resourceKey(ref), ref])),
      });
      this.emit('inventory', agent);
      this.emit('agent', agent, true);
    });
    hub.on('inventory', ({ agent, upserted, removed }) => {
      for (const resource of upserted) this.record(resource.ref ?? emptyRef, agent, resource.observedJson);
      for (const ref of removed) this.forget(resourceKey(ref), agent);
      const listed = this.inventories.get(agentKey(agent))?.refs;
      if (!listed) return;
      let changed = false;
      for (const { ref = emptyRef } of upserted) {
        const key = resourceKey(ref);
        changed ||= listed.get(key)?.uid !== ref.uid;
        listed.set(key, ref);
      }
      for (const ref of removed) changed = listed.delete(resourceKey(ref)) || changed;
      if (changed) this.emit('inventory', agent);
    });
    // Any caller's jobs (also the API server's power actions): the newest word on the object,
    // recorded in the order the agent said it, before or after its inventory changes.
    hub.on('jobResult', ({ agent, job, result }) => {
      const subject = jobSubject(job.object);
      if (result.code !== grpcStatus.OK || subject === undefined) return;
      const key = refKey(subject.ref);
      const observation: Observation = {
        agent,
        uid: subject.uid,
        observed: parseObserved(result.observedJson),
      };
      this.store(key, observation);
      // Its removal from the inventory may be reported later (by polling), after the object
      // is gone from the API: it must not look like something left behind meanwhile.
      if (recordsDeletion(observation)) this.unlist(agent, key, observation.uid);
    });
    hub.on('lifecycle', ({ event }) => {
      if (event.resource) this.emitChange(resourceKey(event.resource));
    });
    hub.on('disconnected', ({ agent }) => {
      this.connectedAgents[agent.role].delete(agent.name);
      this.emit('agent', agent, false);
    });
  }

  /** Names of the agents of `role` that have a session now. */
  connected(role: AgentRole): ReadonlySet<string> {
    return this.connectedAgents[role];
  }

  /** Whether `agent` said Hello since this process started, so a missing observation means absent. */
  hasReported(agent: AgentRef): boolean {
    return this.reported.has(agentKey(agent));
  }

  /** What `agent` runs, as its inventory says; undefined until it said Hello since this process started. */
  inventory(agent: AgentRef): ResourceRef[] | undefined {
    const listed = this.inventories.get(agentKey(agent));
    return listed && [...listed.refs.values()];
  }

  /** The agents whose inventory lists the object. */
  listing(ref: ObjectRef): AgentRef[] {
    const key = refKey(ref);
    return [...this.inventories.values()].filter(({ refs }) => refs.has(key)).map(({ agent }) => agent);
  }

  /** What `agent` last reported of the object. */
  observation(ref: ObjectRef, agent: AgentRef): Observation | undefined {
    return this.observations.get(refKey(ref))?.get(agentKey(agent));
  }

  /** Every agent's latest report on the object. */
  observationsOf(ref: ObjectRef): Observation[] {
    return [...(this.observations.get(refKey(ref))?.values() ?? [])];
  }

  jobsInFlight(ref: ObjectRef): InFlightJob[] {
    return [...(this.inFlight.get(refKey(ref)) ?? [])];
  }

  /** Jobs in flight for the object with this uid, as reconcile cores take them. */
  jobsFor(
    ref: ObjectRef,
    uid: string,
  ): { agent: AgentRef; job: { type: string; object: InFlightJob['object'] } }[] {
    return this.jobsInFlight(ref)
      .filter((job) => job.object.metadata.uid === uid)
      .map(({ agent, type, object }) => ({ agent, job: { type, object } }));
  }

  /** The refusals of jobs for this generation of the object (a new generation may fare better). */
  rejectionsOf(ref: ObjectRef, uid: string, generation: number): JobFailure[] {
    return [...(this.rejections.get(refKey(ref))?.values() ?? [])].filter(
      (rejection) => rejection.uid === uid && rejection.generation === generation,
    );
  }

  /** The retryable failures of jobs for this generation of the object not followed by a success. */
  failuresOf(ref: ObjectRef, uid: string, generation: number): JobFailure[] {
    return [...(this.failures.get(refKey(ref))?.values() ?? [])].filter(
      (failure) => failure.uid === uid && failure.generation === generation,
    );
  }

  /**
   * Holds back jobs whose last try failed until their backoff has passed (a controller's queue
   * forgets a key's failures once a reconcile succeeds, so it cannot pace them): the jobs that may
   * go now, and when to look again for the others.
   */
  paced<J extends { agent: AgentRef; job: { type: string } }>(
    ref: ObjectRef,
    jobs: readonly J[],
  ): { jobs: J[]; requeueAfterMs?: number } {
    const failures = this.failures.get(refKey(ref));
    const now = Date.now();
    let wait: number | undefined;
    const due = jobs.filter(({ agent, job }) => {
      const failure = failures?.get(`${agentKey(agent)} ${job.type}`);
      if (failure === undefined || failure.retryAt <= now) return true;
      wait = Math.min(wait ?? Number.POSITIVE_INFINITY, failure.retryAt - now);
      return false;
    });
    return { jobs: due, ...(wait === undefined ? {} : { requeueAfterMs: wait }) };
  }

  /** Forgets every report on an object that is gone from the API. */
  clear(ref: ObjectRef): void {
    const key = refKey(ref);
    this.observations.delete(key);
    this.rejections.delete(key);
    this.failures.delete(key);
  }

  /**
   * Sends the job without waiting for it: its result updates the observations and emits
   * `change` for the object, so the controller reconciles it again.
   */
  dispatch(job: InFlightJob, deadlineMs: number): void {
    const key = refKey(objectRefOf(job.object));
    const jobs = this.inFlight.get(key) ?? new Set();
    jobs.add(job);
    this.inFlight.set(key, jobs);
    const log = this.logger.child({ agent: agentKey(job.agent), job: job.type, object: key });
    const outcome = (book: Map<ObjectKey, Map<string, JobFailure>>, message?: string) => {
      const byJob = book.get(key) ?? new Map<string, JobFailure>();
      const jobKey = `${agentKey(job.agent)} ${job.type}`;
      if (message === undefined) byJob.delete(jobKey);
      else {
        const attempts = (byJob.get(jobKey)?.attempts ?? 0) + 1;
        byJob.set(jobKey, {
          agent: job.agent,
          type: job.type,
          uid: job.object.metadata.uid ?? '',
          generation: job.object.metadata.generation ?? 0,
          message,
          attempts,
          retryAt: Date.now() + retryDelayMs(attempts),
        });
      }
      if (byJob.size > 0) book.set(key, byJob);
      else book.delete(key);
    };
    const settle = () => {
      jobs.delete(job);
      if (jobs.size === 0 && this.inFlight.get(key) === jobs) this.inFlight.delete(key);
      this.emitChange(key);
    };
    this.hub
      .dispatch(job.agent, {
        type: job.type,
        object: job.object,
        deadline: new Date(Date.now() + deadlineMs),
      })
      .then(
        (result) => {
          if (result.code === grpcStatus.OK) {
            // What it observed is recorded already, as it arrived (the hub's jobResult).
            outcome(this.failures);
            settle();
          } else if (permanentCodes.has(result.code)) {
            log.warn({ code: result.code, message: result.message }, 'agent refused the job');
            outcome(this.rejections, result.message);
            settle();
          } else {
            log.warn({ code: result.code, message: result.message }, 'job failed; will retry');
            outcome(this.failures, result.message);
            settle();
          }
        },
        (err: unknown) => {
          const message = isLoamError(err) ? err.message : String(err);
          log.warn({ err: message }, 'job not delivered; will retry');
          outcome(this.failures, message);
          settle();
        },
      );
  }

  private unlist(agent: AgentRef, key: ObjectKey, uid: string): void {
    const listed = this.inventories.get(agentKey(agent))?.refs;
    if (listed?.get(key)?.uid !== uid) return;
    listed.delete(key);
    this.emit('inventory', agent);
  }

  private record(ref: ResourceRef, agent: AgentRef, observedJson: Uint8Array): void {
    this.store(resourceKey(ref), { agent, uid: ref.uid, observed: parseObserved(observedJson) });
  }

  private store(key: ObjectKey, observation: Observation): void {
    const byAgent = this.observations.get(key) ?? new Map<string, Observation>();
    byAgent.set(agentKey(observation.agent), observation);
    this.observations.set(key, byAgent);
    this.emitChange(key);
  }

  /** The agent no longer runs the object; a report that it deleted it is kept as the answer. */
  private forget(key: ObjectKey, agent: AgentRef): void {
    const byAgent = this.observations.get(key);
    if (!byAgent || recordsDeletion(byAgent.get(agentKey(agent)))) return;
    byAgent.delete(agentKey(agent));
    if (byAgent.size === 0) this.observations.delete(key);
    this.emitChange(key);
  }

  private emitChange(key: ObjectKey): void {
    const [kind = '', namespace = '', ...name] = key.split('/');
    this.emit('change', { kind, namespace, name: name.join('/') });
  }
}

const emptyRef: ResourceRef = { kind: '', namespace: '', name: '', uid: '' };
