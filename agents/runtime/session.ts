/**
 * One Connect stream with the hub: Hello (facts, capabilities, full inventory, the driver's checks
 * of its machine) up, Welcome down, then jobs down and results, reports and heartbeats up, until
 * either side ends it. With every heartbeat the driver's checks run again, and the hub hears of
 * them when they changed, as a kubelet reports its node's conditions with its status updates.
 * Reports the driver makes before Welcome wait for it, so nothing that changed while the Hello's
 * inventory was being gathered is lost.
 */
import type { Duplex } from 'node:stream';
import { isDeepStrictEqual } from 'node:util';
import { type ClientDuplexStream, type StatusObject, status } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type {
  AgentCondition,
  AgentServiceClient,
  ConnectRequest,
  ConnectResponse,
  Job,
  JobResult,
  Resource,
  StreamRequest,
} from '../../proto/gen/loam/agent/v1/agent.js';
import { type Driver, hostFacts, type InventoryItem } from './driver.js';
import type { JobExecutor } from './executor.js';
import { openByteStream } from './streams.js';

/** Heartbeat interval when the hub's Welcome names none. */
const defaultHeartbeatSeconds = 10;

export function toResource(item: InventoryItem): Resource {
  return {
    ref: item.ref,
    observedJson: Buffer.from(item.observed === undefined ? '' : JSON.stringify(item.observed)),
  };
}

export interface SessionOptions {
  client: AgentServiceClient;
  driver: Driver;
  executor: JobExecutor;
  version: string;
  logger: Logger;
  /** How long the hub may take to answer Hello with Welcome. */
  welcomeTimeoutMs: number;
  /** The hub welcomed the session. */
  onOpen: () => void;
}

export interface SessionEnd {
  welcomed: boolean;
  reason: string;
}

export class Session {
  private call: ClientDuplexStream<ConnectRequest, ConnectResponse> | undefined;
  private welcomed = false;
  private ending = false;
  /** Aborted when the stream is over: the executor drops this session's queued jobs. */
  private readonly over = new AbortController();
  private readonly early: ConnectRequest[] = [];
  private heartbeat: NodeJS.Timeout | undefined;
  private finished: Promise<SessionEnd> | undefined;
  /** The checks the hub last heard of. */
  private conditions: AgentCondition[] = [];
  /** A check of the driver's conditions is under way: a slow one is never run twice at once. */
  private checking = false;

  constructor(private readonly options: SessionOptions) {}

  get client(): AgentServiceClient {
    return this.options.client;
  }

  /** Runs the session to its end (at most once). */
  run(): Promise<SessionEnd> {
    this.finished ??= this.open();
    return this.finished;
  }

  /** Sends an unprompted report: now if welcomed, after Welcome if not yet. */
  report(message: ConnectRequest): void {
    if (this.over.signal.aborted) return;
    if (this.welcomed) this.call?.write(message);
    else this.early.push(message);
  }

  /** Half-closes the stream so the hub ends it cleanly; cancels it if the hub has not within `timeoutMs`. */
  async end(timeoutMs: number): Promise<void> {
    this.ending = true;
    if (!this.finished || this.over.signal.aborted) return;
    this.call?.end();
    const timer = setTimeout(() => this.call?.cancel(), timeoutMs);
    await this.finished;
    clearTimeout(timer);
  }

  private async open(): Promise<SessionEnd> {
    const { driver, logger } = this.options;
    let hello: ConnectRequest;
    try {
      const [facts, inventory, conditions] = await Promise.all([
        driver.facts(),
        driver.inventory(),
        driver.conditions?.() ?? [],
      ]);
      this.conditions = conditions;
      hello = {
        message: {
          $case: 'hello',
          value: {
            version: this.options.version,
            capabilities: [...driver.capabilities],
            facts: { ...hostFacts(this.options.version), ...facts },
            inventory: inventory.map(toResource),
            conditions,
          },
        },
      };
    } catch (err) {
      this.over.abort();
      return {
        welcomed: false,
        reason: `the driver could not report its facts or inventory: ${(err as Error).message}`,
      };
    }
    if (this.ending) {
      this.over.abort();
      return { welcomed: false, reason: 'the agent is shutting down' };
    }
    const call = this.options.client.connect();
    this.call = call;
    let localReason: string | undefined;
    const welcomeTimer = setTimeout(() => {
      localReason = `no Welcome within ${this.options.welcomeTimeoutMs} ms`;
      call.cancel();
    }, this.options.welcomeTimeoutMs);
    return new Promise((resolve) => {
      // Failures arrive as 'status' too; this only keeps 'error' from being unhandled.
      call.on('error', () => {});
      call.on('data', (message: ConnectResponse) => this.receive(message, welcomeTimer));
      call.on('status', (end: StatusObject) => {
        clearTimeout(welcomeTimer);
        clearInterval(this.heartbeat);
        this.over.abort();
        resolve({ welcomed: this.welcomed, reason: localReason ?? `${status[end.code]}: ${end.details}` });
      });
      call.write(hello);
      logger.debug('hello sent');
    });
  }

  private receive(message: ConnectResponse, welcomeTimer: NodeJS.Timeout): void {
    switch (message.message?.$case) {
      case 'welcome': {
        if (this.welcomed) return;
        clearTimeout(welcomeTimer);
        this.welcomed = true;
        // Bounded, since timers longer than 2^31 ms fire at once instead.
        const seconds = Math.min(
          message.message.value.heartbeatIntervalSeconds || defaultHeartbeatSeconds,
          3600,
        );
        this.heartbeat = setInterval(() => {
          this.call?.write({ message: { $case: 'heartbeat', value: { time: new Date() } } });
          void this.checkConditions();
        }, seconds * 1000);
        for (const early of this.early.splice(0)) this.call?.write(early);
        this.options.onOpen();
        return;
      }
      case 'job':
        this.dispatch(message.message.value);
        return;
      case 'streamRequest':
        this.openStream(message.message.value);
        return;
      default:
        // A message a newer hub added: ignore it, as proto3 peers do.
        this.options.logger.debug('ignoring an unknown message from the hub');
    }
  }

  /** Runs the driver's checks again and tells the hub when they changed. */
  private async checkConditions(): Promise<void> {
    const { driver, logger } = this.options;
    if (driver.conditions === undefined || this.checking) return;
    this.checking = true;
    try {
      const conditions = await driver.conditions();
      if (this.over.signal.aborted || isDeepStrictEqual(conditions, this.conditions)) return;
      this.conditions = conditions;
      this.call?.write({ message: { $case: 'conditions', value: { conditions } } });
      const failing = conditions.filter((condition) => condition.required && condition.status === 'False');
      if (failing.length > 0) logger.warn({ conditions: failing }, failing.map((c) => c.message).join('; '));
      else logger.info('every check this agent needs passes');
    } catch (err) {
      logger.warn({ err: (err as Error).message }, 'the driver could not check its machine');
    } finally {
      this.checking = false;
    }
  }

  private dispatch(job: Job): void {
    const log = this.options.logger.child({ job: job.id, type: job.type });
    log.debug('job received');
    this.options.executor.submit(job, this.over.signal, (result: JobResult) => {
      if (this.over.signal.aborted) {
        // The hub dispatches it again on the next session.
        log.info({ code: status[result.code] }, 'dropping the result of a job whose session ended');
        return;
      }
      log.debug({ code: status[result.code] }, 'job done');
      this.call?.write({ message: { $case: 'jobResult', value: result } });
    });
  }

  private openStream(request: StreamRequest): void {
    const { driver, client, logger } = this.options;
    let local: Duplex | undefined;
    try {
      local = driver.openStream?.(request);
    } catch (err) {
      logger.warn({ err: (err as Error).message, kind: request.kind }, 'the driver failed to open a stream');
    }
    openByteStream(client, request, local, logger);
  }
}
