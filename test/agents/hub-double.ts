/**
 * A test double of the control plane's agent hub: the loam.agent.v1 protocol over real TLS on
 * 127.0.0.1, with a CA of its own, enrollment by one bootstrap token, client certificates checked
 * on every AgentService call, and a record of everything agents sent. Tests drive it (dispatch a
 * job, drop the sessions, restart) and poll its records.
 */
import { randomUUID, X509Certificate } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PeerCertificate } from 'node:tls';
import {
  Server,
  ServerCredentials,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type sendUnaryData,
  status,
} from '@grpc/grpc-js';
import { pino } from 'pino';
import { Agent, type AgentOptions } from '../../agents/runtime/agent.js';
import type { AgentConfig } from '../../agents/runtime/config.js';
import type { Driver } from '../../agents/runtime/driver.js';
import { TestDriver } from '../../agents/runtime/testing/driver.js';
import {
  type CertificateAuthority,
  caPin,
  createCertificateAuthority,
  generateKeyPair,
  issueCertificate,
  verifiedRequestKey,
} from '../../controllers/pki/certificates.js';
import {
  type AgentCondition,
  AgentServiceService,
  type ConnectRequest,
  type ConnectResponse,
  EnrollmentServiceService,
  type EnrollRequest,
  type EnrollResponse,
  type Hello,
  type InventoryChange,
  type JobResult,
  type LifecycleEvent,
  type OpenStreamRequest,
  type OpenStreamResponse,
  type RenewCertificateRequest,
  type RenewCertificateResponse,
  Role,
} from '../../proto/gen/loam/agent/v1/agent.js';
import { pollUntil } from '../harness/poll.js';

/**
 * TLS where a client certificate is asked for but not required (Enroll has none): Node verifies
 * what is offered, and grpc-js exposes only a verified certificate through getAuthContext().
 */
class OptionalClientCertificate extends ServerCredentials {
  constructor(tls: { ca: string; chain: string; key: string }) {
    super({ requestCert: true, rejectUnauthorized: false }, { ca: tls.ca, cert: tls.chain, key: tls.key });
  }

  override _equals(other: ServerCredentials): boolean {
    return other === this;
  }
}

export interface SessionRecord {
  hello: Hello;
  /** The verified client certificate the session came with. */
  peer: PeerCertificate;
  heartbeats: number;
  results: Map<string, JobResult>;
  inventoryChanges: InventoryChange[];
  lifecycleEvents: LifecycleEvent[];
  /** The agent's checks of its machine each time it reported them changed (after Hello). */
  conditionReports: AgentCondition[][];
  /** Set when the stream is over; 'agent' when the agent half-closed it. */
  endedBy?: 'agent' | 'hub' | 'cancelled';
  call: ServerDuplexStream<ConnectRequest, ConnectResponse>;
}

export interface StreamRecord {
  sessionId: string;
  received: Buffer[];
  call: ServerDuplexStream<OpenStreamRequest, OpenStreamResponse>;
  ended: boolean;
}

export interface HubDoubleOptions {
  /** Lifetime of the client certificates it issues (default one day). */
  certificateSeconds?: number;
  heartbeatIntervalSeconds?: number;
  /** 0 (default) picks a free port. */
  port?: number;
}

// Making RSA keys costs up to a few hundred milliseconds each: every double in the test process
// shares one CA and one serving certificate (a test wanting another CA makes its own).
let sharedPki: { ca: CertificateAuthority; chain: string; key: string } | undefined;

function fixturePki(): { ca: CertificateAuthority; chain: string; key: string } {
  if (!sharedPki) {
    const ca = createCertificateAuthority('hub-double-ca');
    const keys = generateKeyPair();
    const leaf = issueCertificate(ca, {
      commonName: 'hub-double',
      dnsNames: ['localhost'],
      ipAddresses: ['127.0.0.1'],
      usage: 'server',
      validityDays: 1,
      publicKeyPem: keys.publicKeyPem,
    });
    // The CA goes in the chain, as agents need it to check their pin (OpenSSL would add it anyway
    // from the CA the server trusts for client certificates).
    sharedPki = { ca, chain: leaf + ca.certPem, key: keys.privateKeyPem };
  }
  return sharedPki;
}

export class AgentHubDouble {
  readonly ca: CertificateAuthority = fixturePki().ca;
  readonly pin = caPin(this.ca.certPem);
  readonly token = 'abcdef.0123456789abcdef';
  readonly enrollments: EnrollRequest[] = [];
  /** Serial numbers (upper-case hex, as Node prints them) of the certificates issued by renewal. */
  readonly renewals: string[] = [];
  readonly sessions: SessionRecord[] = [];
  readonly streams: StreamRecord[] = [];
  private server: Server | undefined;
  port = 0;

  private constructor(private readonly options: HubDoubleOptions) {
    this.port = options.port ?? 0;
  }

  static async start(options: HubDoubleOptions = {}): Promise<AgentHubDouble> {
    const hub = new AgentHubDouble(options);
    await hub.listen();
    return hub;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** The newest session that is still open. */
  get current(): SessionRecord | undefined {
    return [...this.sessions].reverse().find((session) => session.endedBy === undefined);
  }

  async listen(): Promise<void> {
    const server = new Server();
    server.addService(EnrollmentServiceService, { enroll: this.enroll });
    server.addService(AgentServiceService, {
      connect: this.connect,
      renewCertificate: this.renew,
      openStream: this.openStream,
    });
    const { chain, key } = fixturePki();
    const credentials = new OptionalClientCertificate({ ca: this.ca.certPem, chain, key });
    this.port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`127.0.0.1:${this.port}`, credentials, (err, port) =>
        err ? reject(err) : resolve(port),
      ),
    );
    this.server = server;
  }

  /** Drops every connection at once, as a crashed hub would. */
  stop(): void {
    this.server?.forceShutdown();
    this.server = undefined;
    for (const session of this.sessions) session.endedBy ??= 'hub';
  }

  async restart(): Promise<void> {
    this.stop();
    await this.listen();
  }

  /** Sends a job to the current session. */
  dispatch(job: { id: string; type?: string; object: unknown; deadline?: Date }): void {
    const session = this.current;
    if (!session) throw new Error('no agent is connected to the hub double');
    session.call.write({
      message: {
        $case: 'job',
        value: {
          id: job.id,
          type: job.type ?? 'instance.apply',
          deadline: job.deadline,
          objectJson: Buffer.from(JSON.stringify(job.object)),
        },
      },
    });
  }

  /** The result of `jobId`, from whichever session reported it. */
  findResult(jobId: string): JobResult | undefined {
    for (const session of this.sessions) {
      const result = session.results.get(jobId);
      if (result) return result;
    }
    return undefined;
  }

  async result(jobId: string, timeoutMs = 10_000): Promise<JobResult> {
    await pollUntil(() => this.findResult(jobId) !== undefined, {
      timeoutMs,
      what: `the result of ${jobId}`,
    });
    return this.findResult(jobId) as JobResult;
  }

  private issue(name: string, role: string, csrPem: string): string | undefined {
    const publicKeyPem = verifiedRequestKey(csrPem);
    if (!publicKeyPem) return undefined;
    return issueCertificate(this.ca, {
      commonName: name,
      organizations: [role],
      organizationalUnits: [randomUUID()],
      usage: 'client',
      validityDays: 1,
      ...(this.options.certificateSeconds ? { validitySeconds: this.options.certificateSeconds } : {}),
      publicKeyPem,
    });
  }

  private readonly enroll = (
    call: ServerUnaryCall<EnrollRequest, EnrollResponse>,
    callback: sendUnaryData<EnrollResponse>,
  ) => {
    const request = call.request;
    this.enrollments.push(request);
    if (request.token !== this.token) {
      callback({ code: status.UNAUTHENTICATED, details: 'unknown bootstrap token' });
      return;
    }
    const role = request.role === Role.ROLE_LIBVIRT ? 'libvirt' : 'network';
    const certificatePem = this.issue(request.name, role, request.csrPem);
    if (!certificatePem) {
      callback({ code: status.INVALID_ARGUMENT, details: 'bad CSR' });
      return;
    }
    callback(null, { certificatePem, caBundlePem: this.ca.certPem });
  };

  private readonly renew = (
    call: ServerUnaryCall<RenewCertificateRequest, RenewCertificateResponse>,
    callback: sendUnaryData<RenewCertificateResponse>,
  ) => {
    const peer = call.getAuthContext()?.sslPeerCertificate;
    if (!peer) {
      callback({ code: status.UNAUTHENTICATED, details: 'a client certificate is required' });
      return;
    }
    const certificatePem = this.issue(String(peer.subject.CN), String(peer.subject.O), call.request.csrPem);
    if (!certificatePem) {
      callback({ code: status.INVALID_ARGUMENT, details: 'bad CSR' });
      return;
    }
    this.renewals.push(new X509Certificate(certificatePem).serialNumber);
    callback(null, { certificatePem, caBundlePem: this.ca.certPem });
  };

  private readonly connect = (call: ServerDuplexStream<ConnectRequest, ConnectResponse>) => {
    const peer = call.getAuthContext()?.sslPeerCertificate;
    if (!peer) {
      call.emit('error', { code: status.UNAUTHENTICATED, details: 'a client certificate is required' });
      return;
    }
    let session: SessionRecord | undefined;
    call.on('data', (request: ConnectRequest) => {
      const message = request.message;
      if (message?.$case === 'hello') {
        session = {
          hello: message.value,
          peer,
          heartbeats: 0,
          results: new Map(),
          inventoryChanges: [],
          lifecycleEvents: [],
          conditionReports: [],
          call,
        };
        this.sessions.push(session);
        call.write({
          message: {
            $case: 'welcome',
            value: { heartbeatIntervalSeconds: this.options.heartbeatIntervalSeconds ?? 1 },
          },
        });
        return;
      }
      if (!session) return;
      if (message?.$case === 'heartbeat') session.heartbeats++;
      else if (message?.$case === 'jobResult') session.results.set(message.value.jobId, message.value);
      else if (message?.$case === 'inventoryChange') session.inventoryChanges.push(message.value);
      else if (message?.$case === 'lifecycleEvent') session.lifecycleEvents.push(message.value);
      else if (message?.$case === 'conditions') session.conditionReports.push(message.value.conditions);
    });
    call.on('end', () => {
      if (session) session.endedBy ??= 'agent';
      call.end();
    });
    call.on('cancelled', () => {
      if (session) session.endedBy ??= 'cancelled';
    });
    call.on('error', () => {});
  };

  private readonly openStream = (call: ServerDuplexStream<OpenStreamRequest, OpenStreamResponse>) => {
    let stream: StreamRecord | undefined;
    call.on('data', (request: OpenStreamRequest) => {
      if (!stream) {
        stream = { sessionId: request.sessionId, received: [], call, ended: false };
        this.streams.push(stream);
      }
      if (request.data.length > 0) stream.received.push(request.data);
    });
    call.on('end', () => {
      if (stream) stream.ended = true;
      call.end();
    });
    call.on('error', () => {});
  };
}

/** A running agent with a test driver, for tests against the double. */
export interface TestAgent<D extends Driver = TestDriver> {
  agent: Agent;
  driver: D;
  config: AgentConfig;
  /** run()'s promise, settled when the agent stops or fails. */
  done: Promise<void>;
}

export async function tempDataDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'loam-agent-'));
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

export function testConfig(
  hub: AgentHubDouble,
  dataDir: string,
  overrides: Partial<AgentConfig> = {},
): AgentConfig {
  return {
    role: 'libvirt',
    server: hub.address,
    token: hub.token,
    caPin: hub.pin,
    dataDir,
    name: 'hv1',
    metricsAddress: '127.0.0.1:0',
    logLevel: 'silent',
    renewAt: 0.8,
    backoff: { initialMs: 50, maxMs: 300 },
    ...overrides,
  };
}

export const testLogger = pino({ level: process.env.LOAM_TEST_LOG ?? 'silent' });

export function startAgent<D extends Driver = TestDriver>(
  config: AgentConfig,
  options: { driver?: D } & Partial<Omit<AgentOptions, 'config' | 'driver'>> = {},
): TestAgent<D> {
  const driver = options.driver ?? (new TestDriver() as Driver as D);
  const agent = new Agent({ logger: testLogger, version: '0.0.0-test', ...options, config, driver });
  const done = agent.run();
  // Tests that expect a failure await `done` themselves; this only keeps it from going unhandled.
  done.catch(() => {});
  return { agent, driver, config, done };
}
