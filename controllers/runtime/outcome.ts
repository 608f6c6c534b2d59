/**
 * Carrying out what a pure reconcile core decided, the same way for every controller that keeps
 * an object with a finalizer and sends jobs for it: add the finalizer, write the status, dispatch
 * the jobs, record the Events; or, when the finalizer goes, only that and the Events (the object
 * then disappears). Each write carries the resourceVersion read, and its response is assumed, so
 * the next reconcile decides on it even before the informer has it.
 */
import type { Logger } from 'pino';
import type { KindInfo } from '../../crds/kind.js';
import type { AgentRef } from '../hub/identity.js';
import type { AgentState, InFlightJob } from './agent-state.js';
import type { AssumedObjects } from './assumed.js';
import type { ApiObject } from './controller.js';
import type { EventRecorder, ObjectWriter, RecordedEvent } from './writes.js';

export interface ReconcileOutcome {
  status?: unknown;
  finalizer?: 'add' | 'remove';
  jobs: readonly { agent: AgentRef; job: { type: string; object: InFlightJob['object'] } }[];
  events: readonly RecordedEvent[];
}

export interface OutcomeContext<T extends ApiObject> {
  kind: KindInfo;
  finalizer: string;
  writer: ObjectWriter;
  agents: AgentState;
  events: EventRecorder;
  assumed: AssumedObjects<T>;
  jobDeadlineMs: number;
  logger: Logger;
}

export async function carryOut<T extends ApiObject>(
  object: T,
  outcome: ReconcileOutcome,
  context: OutcomeContext<T>,
): Promise<void> {
  const { kind, finalizer, writer, agents, events, assumed } = context;
  const finalizers = object.metadata?.finalizers ?? [];
  if (outcome.finalizer === 'remove') {
    // Assumed, so a reconcile before the informer sees the object go finds it released, not
    // still waiting for a cleanup that is done; its reports are forgotten once it is gone.
    assumed.assume(
      await writer.replaceFinalizers(
        kind,
        object,
        finalizers.filter((f) => f !== finalizer),
      ),
    );
    for (const event of outcome.events) events.record(object, event);
    context.logger.info('cleanup done; finalizer removed');
    return;
  }
  let current = object;
  if (outcome.finalizer === 'add') {
    current = await writer.replaceFinalizers(kind, current, [...finalizers, finalizer]);
    assumed.assume(current);
  }
  if (outcome.status) {
    current = await writer.replaceStatus(kind, current, outcome.status);
    assumed.assume(current);
  }
  for (const { agent, job } of outcome.jobs) {
    context.logger.debug({ job: job.type, agent: agent.name }, 'dispatching');
    agents.dispatch({ agent, type: job.type, object: job.object }, context.jobDeadlineMs);
  }
  for (const event of outcome.events) events.record(current, event);
}
