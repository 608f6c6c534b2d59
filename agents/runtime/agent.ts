/**
 * The agent runtime both agents share. `new Agent(...).run()` serves /metrics and /healthz,
 * enrolls on first start (or loads the identity in the data dir), then keeps a session with the
 * hub open until `stop()`: reconnecting forever with jittered backoff, renewing its certificate at
 * the configured fraction of its lifetime, and running jobs through the driver.
 *
 * Rotation never drops the session: a renewed certificate is saved, and a new channel with it
 * serves every later call and session, while the running session keeps the channel it opened on
 * (an established TLS connection is not re-checked) until it ends; that channel is closed then.
 */
import { Metadata } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { createCertificateSigningRequest, generateKeyPair } from '../../controllers/pki/certificates.js';
import type { AgentServiceClient, RenewCertificateResponse } from '../../proto/gen/loam/agent/v1/agent.js';
import { backoffDelay, pause } from './backoff.js';
import type { AgentConfig } from './config.js';
import type { Driver, DriverEvents } from './driver.js';
import { enroll } from './enroll.js';
import { JobExecutor } from './executor.js';
import { agentClient, unary } from './grpc.js';
import {
  certificateValidity,
  certifiesKey,
  checkIdentity,
  type Identity,
  identityDir,
  loadIdentity,
  pemCertificates,
  renewalTime,
  saveIdentity,
} from './identity.js';
import { type AgentMetrics, agentMetrics, recordJob, serveMetrics } from './metrics.js';
import { Session, toResource } from './session.js';

export interface AgentOptions {
  config: AgentConfig;
  driver: Driver;
  logger: Logger;
  /** Reported in Hello, e.g. 0.1.0. */
  version: string;
  /** Jobs running at once over all resources (default 8). */
  maxConcurrentJobs?: number;
  /** How long shutdown waits for running jobs (default 10 s). */
  shutdownTimeoutMs?: number;
  /** How long the hub may take to answer Hello (default 10 s): each connect attempt is bounded. */
  welcomeTimeoutMs?: number;
}

const callTimeoutMs = 15_000;
// setTimeout holds at most ~24.8 days; a longer wait re-arms when it wakes.
const longestTimerMs = 2 ** 31 - 1;

export class Agent {
  readonly metrics: AgentMetrics = agentMetrics();
  private readonly executor: JobExecutor;
  private readonly shutdown = new AbortController();
  private identity: Identity | undefined;
  private client: AgentServiceClient | undefined;
  private session: Session | undefined;
  private connected = false;
  private renewTimer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private url: string | undefined;
  private readonly logger: Logger;

  constructor(private readonly options: AgentOptions) {
    this.logger = options.logger.child({ agent: options.config.name, role: options.config.role });
    this.executor = new JobExecutor({
      handler: (job, signal) => options.driver.handle(job, signal),
      concurrency: options.maxConcurrentJobs ?? 8,
      onResult: (type, code, seconds) => recordJob(this.metrics, type, code, seconds),
    });
    options.driver.registerMetrics?.(this.metrics.registry);
  }

  /** Where /metrics and /healthz are served, once they are. */
  get metricsUrl(): string | undefined {
    return this.url;
  }

  /** Whether a session with the hub is open now. */
  get isConnected(): boolean {
    return this.connected;
  }

  /** Runs until stop(); rejects on what retrying cannot fix (a wrong pin, a refused token, a foreign data dir). */
  run(): Promise<void> {
    this.running ??= this.main();
    return this.running;
  }

  /**
   * Takes no more jobs, lets the running ones finish (bounded) and report, closes the session,
   * and resolves once run() has returned.
   */
  async stop(): Promise<void> {
    if (!this.shutdown.signal.aborted) {
      this.shutdown.abort();
      const timeoutMs = this.options.shutdownTimeoutMs ?? 10_000;
      if (!(await this.executor.close(timeoutMs))) {
        this.logger.warn({ timeoutMs }, 'jobs still running at shutdown; their results are lost');
      }
      await this.session?.end(5_000);
    }
    await this.running?.catch(() => {});
  }

  private async main(): Promise<void> {
    const { config, driver } = this.options;
    const { logger } = this;
    const endpoint = await serveMetrics(config.metricsAddress, this.metrics, () => this.connected);
    this.url = endpoint.url;
    logger.info({ url: endpoint.url }, 'serving /metrics and /healthz');
    let driverStarted = false;
    try {
      const identity = await this.loadOrEnroll();
      if (!identity || this.shutdown.signal.aborted) return;
      this.adopt(identity);
      await driver.start?.(this.events);
      driverStarted = true;
      await this.connectLoop();
    } finally {
      clearTimeout(this.renewTimer);
      this.client?.close();
      if (driverStarted) await driver.stop?.();
      await new Promise((resolve) => endpoint.server.close(resolve));
    }
  }

  private async loadOrEnroll(): Promise<Identity | undefined> {
    const { config } = this.options;
    const { logger } = this;
    const existing = loadIdentity(config.dataDir);
    if (!existing) {
      const enrolled = await enroll(config, this.shutdown.signal, logger);
      if (enrolled) saveIdentity(config.dataDir, enrolled);
      return enrolled;
    }
    checkIdentity(existing, config);
    const { notAfter } = certificateValidity(existing.certPem);
    if (notAfter.getTime() <= Date.now()) {
      logger.error(
        { notAfter, identity: identityDir(config.dataDir) },
        'the certificate has expired and the hub will refuse it: remove the identity directory and enroll again with a new --token',
      );
    }
    logger.info({ notAfter }, 'using the saved identity');
    return existing;
  }

  /** Makes `identity` the one future calls and sessions use, and schedules its renewal. */
  private adopt(identity: Identity): void {
    const previous = this.client;
    this.identity = identity;
    this.client = agentClient(this.options.config.server, identity);
    if (previous && this.session?.client !== previous) previous.close();
    const validity = certificateValidity(identity.certPem);
    this.metrics.certificateExpiry.set(validity.notAfter.getTime() / 1000);
    this.scheduleRenewal(renewalTime(validity, this.options.config.renewAt).getTime(), 0);
  }

  private scheduleRenewal(at: number, attempt: number): void {
    clearTimeout(this.renewTimer);
    if (this.shutdown.signal.aborted) return;
    const delay = Math.min(Math.max(0, at - Date.now()), longestTimerMs);
    this.renewTimer = setTimeout(() => {
      if (Date.now() < at) this.scheduleRenewal(at, attempt);
      else void this.renew(attempt);
    }, delay);
  }

  // A new key, a CSR for it, RenewCertificate over mTLS with the current certificate; then save
  // and switch. A failure retries with backoff while the current certificate lasts.
  private async renew(attempt: number): Promise<void> {
    const { config } = this.options;
    const { logger } = this;
    const identity = this.identity as Identity;
    const client = this.client as AgentServiceClient;
    try {
      const keys = generateKeyPair();
      const request = { csrPem: createCertificateSigningRequest(keys, identity.name) };
      const response = await unary<RenewCertificateResponse>(
        (options, done) => client.renewCertificate(request, new Metadata(), options, done),
        callTimeoutMs,
      );
      if (!certifiesKey(response.certificatePem, keys.publicKeyPem)) {
        throw new Error('the hub answered with a certificate for another key');
      }
      if (this.shutdown.signal.aborted) return;
      const renewed: Identity = {
        ...identity,
        keyPem: keys.privateKeyPem,
        certPem: response.certificatePem,
        caPem: pemCertificates(response.caBundlePem).length > 0 ? response.caBundlePem : identity.caPem,
      };
      saveIdentity(config.dataDir, renewed);
      this.adopt(renewed);
      logger.info({ notAfter: certificateValidity(renewed.certPem).notAfter }, 'certificate renewed');
    } catch (err) {
      const delay = backoffDelay(attempt, config.backoff);
      logger.warn({ err: (err as Error).message, retryInMs: delay }, 'certificate renewal failed');
      this.scheduleRenewal(Date.now() + delay, attempt + 1);
    }
  }

  private async connectLoop(): Promise<void> {
    const { config, driver, version } = this.options;
    const { logger } = this;
    let attempt = 0;
    for (let n = 1; !this.shutdown.signal.aborted; n++) {
      const client = this.client as AgentServiceClient;
      const log = logger.child({ session: n });
      const session = new Session({
        client,
        driver,
        executor: this.executor,
        version,
        logger: log,
        welcomeTimeoutMs: this.options.welcomeTimeoutMs ?? 10_000,
        onOpen: () => {
          this.connected = true;
          this.metrics.connected.set(1);
          attempt = 0;
          log.info({ server: config.server }, 'connected');
        },
      });
      this.session = session;
      const end = await session.run();
      this.session = undefined;
      this.connected = false;
      this.metrics.connected.set(0);
      // A rotation during the session left this channel to it alone.
      if (client !== this.client) client.close();
      if (this.shutdown.signal.aborted) {
        log.info('session closed');
        return;
      }
      const delay = backoffDelay(attempt++, config.backoff);
      log.warn({ reason: end.reason, retryInMs: delay }, end.welcomed ? 'session ended' : 'cannot connect');
      await pause(delay, this.shutdown.signal);
    }
  }

  private readonly events: DriverEvents = {
    inventoryChanged: (update) =>
      this.session?.report({
        message: {
          $case: 'inventoryChange',
          value: { upserted: (update.upserted ?? []).map(toResource), removed: update.removed ?? [] },
        },
      }),
    lifecycle: (notice) =>
      this.session?.report({
        message: { $case: 'lifecycleEvent', value: { ...notice, time: notice.time ?? new Date() } },
      }),
  };
}
