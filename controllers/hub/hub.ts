/**
 * The agent hub: one gRPC port (mutual TLS) that agents dial. EnrollmentService trades a
 * bootstrap token and a CSR for a client certificate; AgentService carries each agent's session
 * (Connect) and certificate renewal; the standard health service says whether the hub serves.
 *
 * Controllers reach agents through `dispatch` and hear from them through the hub's events
 * (inventory, lifecycle events, connects and disconnects), each tagged with the agent's identity
 * so a controller acts only on what the agent it scheduled a resource to says about it. Byte
 * streams (consoles) come through `openStream`: the agent opens them as OpenStream calls, a
 * reverse tunnel (streams.ts).
 *
 * The hub keeps each agent's Host or Router in step with its session: Ready=True with the
 * agent's facts on Hello (False while a check the agent reports and needs fails, such as libvirt
 * not answering), a Lease renewed on every heartbeat, and Ready=Unknown once the agent has been
 * gone longer than the grace period. The object is also the revocation list: deleted,
 * re-created or annotated loam.dev/revoked=true, the agent's certificate is refused and its
 * session closed.
 */
import { X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import {
  type handleUnaryCall,
  Server,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type ServiceDefinition,
  status as Status,
} from '@grpc/grpc-js';
import type { KubeConfig } from '@kubernetes/client-node';
import { HealthImplementation } from 'grpc-health-check';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { isLoamError, LoamError } from '../../crds/errors.js';
import { getCondition } from '../../crds/meta.js';
import {
  AgentServiceService,
  ConnectRequest,
  type ConnectResponse,
  EnrollmentServiceService,
  EnrollRequest,
  type EnrollResponse,
  type Hello,
  type JobResult,
  type LifecycleEvent,
  OpenStreamRequest,
  RenewCertificateRequest,
  type RenewCertificateResponse,
  type Resource,
  type ResourceRef,
} from '../../proto/gen/loam/agent/v1/agent.js';
import { bootstrapTokenId, consumeBootstrapToken } from '../pki/bootstrap-tokens.js';
import {
  agentRoles,
  type CertificateAuthority,
  issueCertificate,
  verifiedRequestKey,
} from '../pki/certificates.js';
import { isApiStatus, retryOnConflict } from '../runtime/retry.js';
import { optionalClientCertificateCredentials } from './credentials.js';
import {
  type AgentIdentity,
  type AgentRef,
  agentKey,
  agentSubject,
  isAgentName,
  revocationProblem,
  roleFromProto,
  verifyAgentCertificate,
} from './identity.js';
import { grpcStatus, MalformedMessage, tolerant } from './messages.js';
import { type HubMetrics, hubMetrics } from './metrics.js';
import { type AgentInformer, type AgentObject, AgentObjects } from './objects.js';
import { endCall, type JobRequest, Session } from './session.js';
import { type AgentObservation, nextAgentStatus } from './status.js';
import { type OpenStreamCall, StreamBroker, type StreamTarget } from './streams.js';

export type { JobRequest } from './session.js';
export type { StreamTarget } from './streams.js';

export interface HubTunables {
  /** Lifetime of agent client certificates (agents renew at ~80%). */
  certificateValiditySeconds: number;
  /** How often agents send a Heartbeat (told in Welcome). */
  heartbeatIntervalSeconds: number;
  /** How long an agent may be gone before its Ready becomes Unknown; also its Lease duration. */
  disconnectGraceSeconds: number;
  maxInflightJobsPerAgent: number;
  /** Larger messages fail with RESOURCE_EXHAUSTED. */
  maxMessageBytes: number;
  /** Byte streams (consoles) opening or open per agent. */
  maxStreamsPerAgent: number;
  /** How long an agent has to open a byte stream the hub asked for. */
  streamOpenTimeoutSeconds: number;
}

export const defaultHubTunables: HubTunables = {
  certificateValiditySeconds: 7 * 86_400,
  // As the kubelet's node lease: renewed every 10 s, 40 s before the node counts as gone.
  heartbeatIntervalSeconds: 10,
  disconnectGraceSeconds: 40,
  maxInflightJobsPerAgent: 64,
  maxMessageBytes: 4 * 1024 * 1024,
  maxStreamsPerAgent: 16,
  streamOpenTimeoutSeconds: 10,
};

export interface HubOptions {
  /** Where to listen; port 0 picks a free port. */
  host: string;
  port: number;
  /** The CA that signs agent certificates, and the hub's serving certificate from it. */
  ca: CertificateAuthority;
  certPem: string;
  keyPem: string;
  /** The Kubernetes API holding Hosts, Routers, Leases and bootstrap tokens. */
  kubeConfig: KubeConfig;
  logger: Logger;
  registry: Registry;
  tunables?: Partial<HubTunables>;
}

/** What the hub tells controllers, each tagged with the agent that said it. */
export interface HubEvents {
  /** A session opened; `inventory` is everything the agent runs, in full. */
  connected: [{ agent: AgentIdentity; inventory: Resource[] }];
  inventory: [{ agent: AgentIdentity; upserted: Resource[]; removed: ResourceRef[] }];
  lifecycle: [{ agent: AgentIdentity; event: LifecycleEvent }];
  /** An agent answered a job (any caller's), in order with the agent's other messages. */
  jobResult: [{ agent: AgentIdentity; job: JobRequest; result: JobResult }];
  disconnected: [{ agent: AgentIdentity }];
}

type AgentWrite = 'status update' | 'lease renewal';

/** What the hub knows of one agent (role and name), across its sessions. */
interface AgentRecord {
  identity: AgentIdentity;
  session?: Session;
  graceTimer?: NodeJS.Timeout;
  /** Gone for longer than the grace period, and not back. */
  graceExpired: boolean;
  sentJobs: Set<string>;
  /** The agent's API writes, one at a time, so the hub never races itself on its objects. */
  writes: Promise<void>;
  /** Writes queued and not started yet. */
  queued: Set<AgentWrite>;
  lastStatusSync: number;
}

type ConnectCall = ServerDuplexStream<ConnectRequest | MalformedMessage, ConnectResponse>;

const enrollmentService: ServiceDefinition = {
  enroll: { ...EnrollmentServiceService.enroll, requestDeserialize: tolerant(EnrollRequest.decode) },
};
const agentService: ServiceDefinition = {
  ...AgentServiceService,
  connect: { ...AgentServiceService.connect, requestDeserialize: tolerant(ConnectRequest.decode) },
  renewCertificate: {
    ...AgentServiceService.renewCertificate,
    requestDeserialize: tolerant(RenewCertificateRequest.decode),
  },
  openStream: { ...AgentServiceService.openStream, requestDeserialize: tolerant(OpenStreamRequest.decode) },
};

/** Status refreshes between heartbeats: an unchanged status is rewritten this often at most. */
const statusRefreshSeconds = 60;
/** A Connect stream must say Hello within this. */
const helloTimeoutMs = 30_000;
const shutdownGraceMs = 5_000;

export class Hub extends EventEmitter<HubEvents> {
  /** host:port the hub listens on, with the real port. */
  address = '';
  private readonly tunables: HubTunables;
  private readonly objects: AgentObjects;
  private readonly metrics: HubMetrics;
  private readonly caCert: X509Certificate;
  private readonly health = new HealthImplementation({ '': 'SERVING' });
  private readonly server: Server;
  private readonly records = new Map<string, AgentRecord>();
  private readonly streams: StreamBroker;
  private informers: AgentInformer[] = [];
  private closing = false;

  private constructor(private readonly options: HubOptions) {
    super();
    this.tunables = { ...defaultHubTunables, ...options.tunables };
    this.objects = new AgentObjects(options.kubeConfig);
    this.metrics = hubMetrics(options.registry);
    this.caCert = new X509Certificate(options.ca.certPem);
    this.server = new Server({
      'grpc.max_receive_message_length': this.tunables.maxMessageBytes,
      'grpc.max_send_message_length': this.tunables.maxMessageBytes,
      // Pings every 20 s, dropped after 10 s without an answer: a dead agent's session (and its
      // in-flight jobs) ends within half a minute even when no TCP reset ever arrives.
      'grpc.keepalive_time_ms': 20_000,
      'grpc.keepalive_timeout_ms': 10_000,
    });
    this.streams = new StreamBroker({
      maxStreamsPerAgent: this.tunables.maxStreamsPerAgent,
      openTimeoutMs: this.tunables.streamOpenTimeoutSeconds * 1000,
      maxMessageBytes: this.tunables.maxMessageBytes,
      metrics: this.metrics,
      logger: options.logger,
      authenticate: (call) => this.authenticate(call),
      authorize: (identity) => this.authorize(identity),
      logRefusal: (peer, err, fields) => this.logRefusal('OpenStream', peer, err, fields),
    });
    this.server.addService(enrollmentService, { enroll: this.unary('Enroll', (call) => this.enroll(call)) });
    this.server.addService(agentService, {
      connect: (call: ConnectCall) => this.connect(call),
      renewCertificate: this.unary('RenewCertificate', (call) => this.renew(call)),
      openStream: (call: OpenStreamCall) => this.streams.serve(call),
    });
    this.health.addToServer(this.server);
  }

  static async start(options: HubOptions): Promise<Hub> {
    const hub = new Hub(options);
    try {
      await hub.watch();
      await hub.listen();
    } catch (err) {
      await hub.close();
      throw err;
    }
    return hub;
  }

  /**
   * Sends `job` to the agent and resolves with its result (whatever its code); fails with
   * Unavailable at once when the agent has no session or too many jobs in flight, or when its
   * session ends first, with DeadlineExceeded when the deadline passes first, and with
   * RequestEntityTooLarge for an object too large for one message.
   */
  dispatch(agent: AgentRef, job: JobRequest): Promise<JobResult> {
    const session = this.records.get(agentKey(agent))?.session;
    if (!session) {
      return Promise.reject(
        new LoamError('Unavailable', `${agent.role} agent ${agent.name} is not connected`),
      );
    }
    return session.dispatch(job);
  }

  /**
   * Opens a byte stream (e.g. the console of an Instance) through the agent: what is written to
   * the Duplex goes to the agent, what the agent sends comes out of it, and either side ending
   * ends both. Fails with Unavailable at once when the agent has no session or too many streams,
   * or when its session ends first, and with DeadlineExceeded when the agent does not open the
   * stream in time. An open stream is destroyed with Unavailable when its call fails or the
   * agent's session ends. An agent whose driver does not serve `kind` opens a stream that ends at
   * once.
   */
  openStream(agent: AgentRef, target: StreamTarget): Promise<Duplex> {
    const session = this.records.get(agentKey(agent))?.session;
    if (!session) {
      return Promise.reject(
        new LoamError('Unavailable', `${agent.role} agent ${agent.name} is not connected`),
      );
    }
    return this.streams.open(session, target);
  }

  async close(): Promise<void> {
    this.closing = true;
    this.health.setStatus('', 'NOT_SERVING');
    for (const record of this.records.values()) {
      clearTimeout(record.graceTimer);
      record.session?.close(Status.UNAVAILABLE, 'the hub is shutting down');
    }
    this.streams.close();
    await Promise.all(this.informers.map((informer) => informer.stop()));
    await Promise.all([...this.records.values()].map((record) => record.writes));
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, shutdownGraceMs);
      this.server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
  }

  private get logger(): Logger {
    return this.options.logger;
  }

  private async listen(): Promise<void> {
    const { host } = this.options;
    const hostPart = isIP(host) === 6 ? `[${host}]` : host;
    const credentials = optionalClientCertificateCredentials({
      caPem: this.options.ca.certPem,
      certPem: this.options.certPem,
      keyPem: this.options.keyPem,
    });
    const port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(`${hostPart}:${this.options.port}`, credentials, (err, bound) =>
        err
          ? reject(new Error(`cannot listen for agents on ${hostPart}:${this.options.port}: ${err.message}`))
          : resolve(bound),
      ),
    );
    this.address = `${hostPart}:${port}`;
    this.logger.info({ address: this.address }, 'agent hub listening');
  }

  /**
   * Informers over Hosts and Routers: a change that revokes an agent closes its session. Objects
   * whose agent was connected when the hub last wrote them (Ready True, or False for a failing
   * check) get the grace period to reconnect, like any agent whose session just ended.
   */
  private async watch(): Promise<void> {
    for (const role of agentRoles) {
      const informer = this.objects.informer(role);
      this.informers.push(informer);
      const check = (deleted: boolean) => (object: AgentObject) => {
        const name = object.metadata?.name ?? '';
        const session = this.records.get(agentKey({ role, name }))?.session;
        if (!session) return;
        const problem = revocationProblem(session.identity, deleted ? undefined : object);
        if (problem) this.refuse(session, Status.PERMISSION_DENIED, problem);
      };
      informer.on('add', check(false));
      informer.on('update', check(false));
      informer.on('delete', check(true));
      // client-node leaves restarting an informer to its user after an error.
      informer.on('error', (err) => {
        if (this.closing) return;
        this.logger.warn({ err, role }, 'agent object informer failed; restarting');
        setTimeout(() => {
          if (!this.closing) informer.start().catch(() => {});
        }, 1000).unref();
      });
      await informer.start();
      for (const object of informer.list()) {
        const name = object.metadata?.name;
        const uid = object.metadata?.uid;
        const ready = getCondition(object.status?.conditions, 'Ready')?.status;
        if (!name || !uid || (ready !== 'True' && ready !== 'False')) continue;
        const record = this.record({ role, name, uid });
        if (!record.session) this.startGraceTimer(record);
      }
    }
  }

  private record(identity: AgentIdentity): AgentRecord {
    const key = agentKey(identity);
    let record = this.records.get(key);
    if (!record) {
      record = {
        identity,
        graceExpired: false,
        sentJobs: new Set(),
        writes: Promise.resolve(),
        queued: new Set(),
        lastStatusSync: 0,
      };
      this.records.set(key, record);
    }
    return record;
  }

  private unary<Request, Response>(
    method: string,
    handler: (call: ServerUnaryCall<Request, Response>) => Promise<Response>,
  ): handleUnaryCall<Request, Response> {
    return (call, callback) => {
      handler(call).then(
        (response) => callback(null, response),
        (err: unknown) => {
          this.logRefusal(method, call.getPeer(), err);
          callback(grpcStatus(err));
        },
      );
    };
  }

  private logRefusal(method: string, peer: string, err: unknown, fields: Record<string, unknown> = {}): void {
    if (isLoamError(err) && err.code !== 'Internal') {
      // Reasons name token ids, never secrets; the cause (an API failure) says why it was Unavailable.
      const cause = err.cause === undefined ? {} : { cause: String(err.cause) };
      this.logger.warn(
        { method, peer, ...fields, code: err.code, reason: err.message, ...cause },
        `${method} refused`,
      );
    } else {
      this.logger.error({ method, peer, ...fields, err }, `${method} failed`);
    }
  }

  private issue(identity: AgentIdentity, publicKeyPem: string): string {
    return issueCertificate(this.options.ca, {
      ...agentSubject(identity),
      usage: 'client',
      validityDays: 0,
      validitySeconds: this.tunables.certificateValiditySeconds,
      publicKeyPem,
    });
  }

  /** The agent a call's client certificate proves; Unauthorized without a valid one. */
  private authenticate(call: { getAuthContext(): { sslPeerCertificate?: { raw?: Buffer } } | null }) {
    const der = call.getAuthContext()?.sslPeerCertificate?.raw;
    if (!der) throw new LoamError('Unauthorized', 'no client certificate verified by the control-plane CA');
    const verified = verifyAgentCertificate(der, this.caCert, new Date());
    if ('problem' in verified) throw new LoamError('Unauthorized', verified.problem);
    return verified.identity;
  }

  /** Forbidden unless the agent's object still stands for `identity`. */
  private async authorize(identity: AgentIdentity): Promise<void> {
    let object: AgentObject | undefined;
    try {
      object = await this.objects.get(identity);
    } catch (err) {
      throw new LoamError('Unavailable', 'cannot read agent objects', { cause: err });
    }
    const problem = revocationProblem(identity, object);
    if (problem) throw new LoamError('Forbidden', problem);
  }

  private async enroll(call: ServerUnaryCall<EnrollRequest | MalformedMessage, EnrollResponse>) {
    const request = call.request;
    if (request instanceof MalformedMessage) throw new LoamError('BadRequest', request.reason);
    const role = roleFromProto(request.role);
    if (!role) throw new LoamError('BadRequest', 'role must be ROLE_LIBVIRT or ROLE_NETWORK');
    if (!isAgentName(request.name)) {
      throw new LoamError(
        'BadRequest',
        `name ${JSON.stringify(request.name.slice(0, 80))} is not a DNS label`,
      );
    }
    const publicKeyPem = verifiedRequestKey(request.csrPem);
    if (!publicKeyPem)
      throw new LoamError('BadRequest', 'csr_pem is not a PKCS#10 request signed by its key');
    const agent = { role, name: request.name };
    const tokenId = bootstrapTokenId(request.token);
    await consumeBootstrapToken(this.objects.objectApi, request.token, role);
    let object: AgentObject;
    try {
      object = await this.objects.ensure(agent);
    } catch (err) {
      throw new LoamError(
        'Unavailable',
        `cannot create the agent's ${role === 'libvirt' ? 'Host' : 'Router'}`,
        {
          cause: err,
        },
      );
    }
    const identity = { ...agent, uid: object.metadata?.uid ?? '' };
    const problem = revocationProblem(identity, object);
    if (problem) throw new LoamError('Forbidden', problem);
    this.logger.info({ agent: identity, tokenId, peer: call.getPeer() }, 'agent enrolled');
    return { certificatePem: this.issue(identity, publicKeyPem), caBundlePem: this.options.ca.certPem };
  }

  private async renew(
    call: ServerUnaryCall<RenewCertificateRequest | MalformedMessage, RenewCertificateResponse>,
  ): Promise<RenewCertificateResponse> {
    const identity = this.authenticate(call);
    await this.authorize(identity);
    const request = call.request;
    if (request instanceof MalformedMessage) throw new LoamError('BadRequest', request.reason);
    const publicKeyPem = verifiedRequestKey(request.csrPem);
    if (!publicKeyPem)
      throw new LoamError('BadRequest', 'csr_pem is not a PKCS#10 request signed by its key');
    this.logger.info({ agent: identity }, 'agent certificate renewed');
    return { certificatePem: this.issue(identity, publicKeyPem), caBundlePem: this.options.ca.certPem };
  }

  private connect(call: ConnectCall): void {
    this.openSession(call).catch((err: unknown) => {
      this.logRefusal('Connect', call.getPeer(), err);
      const { code, details } = grpcStatus(err);
      endCall(call, code, details);
    });
  }

  /** Checks the caller, then waits for its Hello to open the session. */
  private async openSession(call: ConnectCall): Promise<void> {
    const identity = this.authenticate(call);
    await this.authorize(identity);
    if (call.cancelled) return;
    // Messages wait in the stream's buffer until this listener is attached.
    let session: Session | undefined;
    const helloTimer = setTimeout(
      () => endCall(call, Status.INVALID_ARGUMENT, 'no Hello in time'),
      helloTimeoutMs,
    );
    call.on('data', (message: ConnectRequest | MalformedMessage) => {
      try {
        if (session) {
          this.receive(session, message);
          return;
        }
        clearTimeout(helloTimer);
        if (message instanceof MalformedMessage) throw new LoamError('BadRequest', message.reason);
        if (message.message?.$case !== 'hello')
          throw new LoamError('BadRequest', 'the first message must be Hello');
        session = this.startSession(identity, call, message.message.value);
      } catch (err) {
        this.logRefusal('Connect', call.getPeer(), err, { agent: identity });
        const { code, details } = grpcStatus(err);
        if (session) session.close(code, details);
        else endCall(call, code, details);
      }
    });
    call.on('end', () => {
      clearTimeout(helloTimer);
      if (session) session.close(Status.OK, 'the agent ended the session');
      else endCall(call, Status.OK, '');
    });
    call.on('cancelled', () => {
      clearTimeout(helloTimer);
      session?.close(Status.CANCELLED, 'the agent went away');
    });
  }

  private refuse(session: Session, code: Status, details: string): void {
    this.logger.warn(
      { agent: session.identity, code: Status[code], reason: details },
      'agent session closed',
    );
    session.close(code, details);
  }

  private startSession(identity: AgentIdentity, call: ConnectCall, hello: Hello): Session {
    const record = this.record(identity);
    record.identity = identity;
    clearTimeout(record.graceTimer);
    record.graceExpired = false;
    const previous = record.session;
    const session = new Session(identity, hello, call, {
      maxInflightJobs: this.tunables.maxInflightJobsPerAgent,
      maxMessageBytes: this.tunables.maxMessageBytes,
      metrics: this.metrics,
      sentJobs: record.sentJobs,
      onClosed: (closed, details) => this.sessionClosed(closed, details),
      onResult: (answered, job, result) => this.emit('jobResult', { agent: answered.identity, job, result }),
    });
    record.session = session;
    this.metrics.connected.inc({ role: identity.role });
    previous?.close(Status.CANCELLED, 'replaced by a newer session of the same agent');
    session.send({
      message: {
        $case: 'welcome',
        value: { heartbeatIntervalSeconds: this.tunables.heartbeatIntervalSeconds },
      },
    });
    this.enqueue(record, 'status update');
    this.enqueue(record, 'lease renewal');
    this.logger.info({ agent: identity, version: hello.version }, 'agent connected');
    this.emit('connected', { agent: identity, inventory: hello.inventory });
    return session;
  }

  private receive(session: Session, message: ConnectRequest | MalformedMessage): void {
    if (message instanceof MalformedMessage) throw new LoamError('BadRequest', message.reason);
    const agent = session.identity;
    const body = message.message;
    switch (body?.$case) {
      case 'jobResult':
        if (!session.complete(body.value)) {
          throw new LoamError(
            'Forbidden',
            `result for job ${JSON.stringify(body.value.jobId)}, never sent to this agent`,
          );
        }
        return;
      case 'inventoryChange':
        this.emit('inventory', { agent, upserted: body.value.upserted, removed: body.value.removed });
        return;
      case 'lifecycleEvent':
        this.emit('lifecycle', { agent, event: body.value });
        return;
      case 'heartbeat': {
        const record = this.record(agent);
        this.enqueue(record, 'lease renewal');
        if (Date.now() - record.lastStatusSync >= statusRefreshSeconds * 1000) {
          this.enqueue(record, 'status update');
        }
        return;
      }
      case 'conditions':
        session.conditions = body.value.conditions;
        this.enqueue(this.record(agent), 'status update');
        return;
      case 'hello':
        throw new LoamError('BadRequest', 'Hello again in an open session');
      default:
        throw new LoamError('BadRequest', 'empty message');
    }
  }

  private sessionClosed(session: Session, details: string): void {
    const { identity } = session;
    this.metrics.connected.dec({ role: identity.role });
    this.streams.closeSession(session, details);
    const record = this.records.get(agentKey(identity));
    // A session replaced by a newer one leaves the agent connected.
    if (!record || record.session !== session) return;
    record.session = undefined;
    this.logger.info({ agent: identity }, 'agent disconnected');
    this.emit('disconnected', { agent: identity });
    if (!this.closing) this.startGraceTimer(record);
  }

  private startGraceTimer(record: AgentRecord): void {
    clearTimeout(record.graceTimer);
    record.graceTimer = setTimeout(() => {
      record.graceExpired = true;
      this.enqueue(record, 'status update');
    }, this.tunables.disconnectGraceSeconds * 1000);
  }

  /**
   * Queues a write of the agent's status or Lease behind its others. A kind already waiting is
   * not queued twice (each reads the state it writes when it runs), so a slow API never piles up
   * heartbeats.
   */
  private enqueue(record: AgentRecord, what: AgentWrite): void {
    if (record.queued.has(what)) return;
    record.queued.add(what);
    record.writes = record.writes
      .then(() => {
        record.queued.delete(what);
        if (this.closing) return;
        return what === 'status update' ? this.syncStatus(record) : this.renewLease(record.identity);
      })
      .catch((err: unknown) => this.logger.warn({ err, agent: record.identity }, `${what} failed`));
  }

  private renewLease(agent: AgentRef): Promise<void> {
    return this.objects.renewLease(agent, this.tunables.disconnectGraceSeconds, new Date());
  }

  /**
   * Brings the agent's Host or Router status in line with what the hub observes now (level
   * based: whatever was decided before, this reads the current state), and closes the session
   * of an agent whose object no longer stands for it.
   */
  private async syncStatus(record: AgentRecord): Promise<void> {
    const observed: AgentObservation | undefined = record.session
      ? { connected: true, hello: record.session.hello, conditions: record.session.conditions }
      : record.graceExpired
        ? { connected: false, graceSeconds: this.tunables.disconnectGraceSeconds }
        : undefined;
    if (!observed) return;
    record.lastStatusSync = Date.now();
    await retryOnConflict(async () => {
      const { identity } = record;
      const object = await this.objects.get(identity);
      const problem = revocationProblem(identity, object);
      if (problem || !object) {
        if (record.session && problem) this.refuse(record.session, Status.PERMISSION_DENIED, problem);
        return;
      }
      const status = nextAgentStatus(
        identity.role,
        object.status,
        observed,
        new Date(),
        statusRefreshSeconds,
      );
      if (status) await this.objects.replaceStatus(identity.role, { ...object, status });
    }).catch((err: unknown) => {
      // Deleted between the read and the write: the informer closes the session.
      if (!isApiStatus(err, 404)) throw err;
    });
  }
}
