/**
 * A minimal agent for hub tests: the generated grpc-js clients over TLS on loopback, each call
 * with a deadline, and a Connect session that records what the hub sends and how it ends.
 */
import {
  type ChannelCredentials,
  type ClientDuplexStream,
  credentials,
  Metadata,
  makeGenericClientConstructor,
  type ServiceError,
  status as Status,
  type StatusObject,
} from '@grpc/grpc-js';
import {
  createCertificateSigningRequest,
  generateKeyPair,
  type KeyPair,
} from '../../controllers/pki/certificates.js';
import {
  AgentServiceClient,
  AgentServiceService,
  type ConnectRequest,
  type ConnectResponse,
  EnrollmentServiceClient,
  type EnrollResponse,
  type Hello,
  type Job,
  Role,
} from '../../proto/gen/loam/agent/v1/agent.js';
import { pollUntil } from '../harness/poll.js';

const callTimeoutMs = 10_000;
// Each test agent gets its own connection, as real agents on separate machines have.
const channelOptions = { 'grpc.use_local_subchannel_pool': 1 };

/**
 * Generating RSA keys and signing requests is the slow part of enrolling; tests that need many
 * agents share one key, and one request for it (the hub ignores the request's subject).
 */
export const sharedKeys: KeyPair = generateKeyPair();
const sharedRequest = createCertificateSigningRequest(sharedKeys, 'test-agent');

export interface AgentCredentials {
  caPem: string;
  keys: KeyPair;
  certPem: string;
}

export function tlsCredentials(
  caPem: string,
  client?: { keyPem: string; certPem: string },
): ChannelCredentials {
  return client
    ? credentials.createSsl(Buffer.from(caPem), Buffer.from(client.keyPem), Buffer.from(client.certPem))
    : credentials.createSsl(Buffer.from(caPem));
}

/** The status of a failed call; fails the test when the call succeeded. */
export async function refusal(call: Promise<unknown>): Promise<{ code: Status; details: string }> {
  try {
    await call;
  } catch (err) {
    const { code, details } = err as ServiceError;
    return { code, details };
  }
  throw new Error('expected the call to fail');
}

export function enrollCall(
  address: string,
  caPem: string,
  request: { token: string; name: string; role: Role; csrPem: string },
): Promise<EnrollResponse> {
  const client = new EnrollmentServiceClient(address, tlsCredentials(caPem), channelOptions);
  return new Promise<EnrollResponse>((resolve, reject) =>
    client.enroll(request, new Metadata(), { deadline: Date.now() + callTimeoutMs }, (err, res) =>
      err ? reject(err) : resolve(res),
    ),
  ).finally(() => client.close());
}

/** Enrolls `name` with `token`, with `keys` (fresh ones unless given). */
export async function enroll(
  address: string,
  caPem: string,
  options: { token: string; name: string; role?: 'libvirt' | 'network'; keys?: KeyPair },
): Promise<AgentCredentials> {
  const keys = options.keys ?? generateKeyPair();
  const response = await enrollCall(address, caPem, {
    token: options.token,
    name: options.name,
    role: options.role === 'network' ? Role.ROLE_NETWORK : Role.ROLE_LIBVIRT,
    csrPem: keys === sharedKeys ? sharedRequest : createCertificateSigningRequest(keys, options.name),
  });
  return { caPem, keys, certPem: response.certificatePem };
}

export function agentServiceClient(
  address: string,
  caPem: string,
  client?: { keyPem: string; certPem: string },
): AgentServiceClient {
  return new AgentServiceClient(address, tlsCredentials(caPem, client), channelOptions);
}

export const defaultHello: Hello = {
  version: '0.1.0-test',
  capabilities: ['tcg'],
  facts: { hostname: 'test-host', arch: 'x86_64', cpus: '4', memory: '8Gi' },
  inventory: [],
  conditions: [],
};

/** Answers each job OK with the job's object as what it observed. */
export function answerOk(job: Job): ConnectRequest {
  return {
    message: {
      $case: 'jobResult',
      value: { jobId: job.id, code: Status.OK, message: '', observedJson: job.objectJson },
    },
  };
}

/** One Connect stream of a test agent. */
export class TestSession {
  readonly received: ConnectResponse[] = [];
  /** The call's final status, once it has ended. */
  status: StatusObject | undefined;
  readonly ended: Promise<StatusObject>;

  constructor(
    client: AgentServiceClient,
    readonly stream: ClientDuplexStream<ConnectRequest, ConnectResponse>,
    answer?: (job: Job) => ConnectRequest | undefined,
  ) {
    this.ended = new Promise((resolve) =>
      stream.on('status', (status: StatusObject) => {
        this.status = status;
        client.close();
        resolve(status);
      }),
    );
    // A failed call also emits 'error'; its status is what the tests look at.
    stream.on('error', () => {});
    stream.on('data', (message: ConnectResponse) => {
      this.received.push(message);
      if (message.message?.$case !== 'job' || !answer) return;
      const reply = answer(message.message.value);
      if (reply) stream.write(reply);
    });
  }

  /** Opens a session and sends `first` (a Hello unless the test says otherwise). */
  static open(
    address: string,
    agent: { caPem: string; keys?: KeyPair; certPem?: string },
    options: { first?: ConnectRequest; answer?: (job: Job) => ConnectRequest | undefined } = {},
  ): TestSession {
    const client = agentServiceClient(
      address,
      agent.caPem,
      agent.keys && agent.certPem ? { keyPem: agent.keys.privateKeyPem, certPem: agent.certPem } : undefined,
    );
    const session = new TestSession(client, client.connect(), options.answer);
    session.stream.write(options.first ?? { message: { $case: 'hello', value: defaultHello } });
    return session;
  }

  get jobs(): Job[] {
    return this.received.flatMap((m) => (m.message?.$case === 'job' ? [m.message.value] : []));
  }

  /** Resolves once the hub has welcomed the session; fails if it ended instead. */
  async welcomed(timeoutMs = 10_000): Promise<void> {
    await pollUntil(
      () => this.status !== undefined || this.received.some((m) => m.message?.$case === 'welcome'),
      {
        timeoutMs,
        what: 'Welcome',
      },
    );
    if (this.status) throw new Error(`session ended: ${Status[this.status.code]} ${this.status.details}`);
  }

  send(message: ConnectRequest): void {
    this.stream.write(message);
  }

  /** Ends the session from the agent's side, as a clean shutdown does. */
  async end(): Promise<StatusObject> {
    this.stream.end();
    return this.ended;
  }

  /** Drops the session as a crashed agent would. */
  cancel(): void {
    this.stream.cancel();
  }
}

/** A client that sends Connect messages as raw bytes, for what the generated client cannot send. */
export function rawConnect(address: string, agent: AgentCredentials, bytes: Buffer): Promise<StatusObject> {
  const RawClient = makeGenericClientConstructor(
    { connect: { ...AgentServiceService.connect, requestSerialize: (value: Buffer) => value } },
    'raw',
  );
  const client = new RawClient(
    address,
    tlsCredentials(agent.caPem, { keyPem: agent.keys.privateKeyPem, certPem: agent.certPem }),
    channelOptions,
  );
  const stream = (client as unknown as { connect(): ClientDuplexStream<Buffer, unknown> }).connect();
  stream.on('error', () => {});
  stream.on('data', () => {});
  stream.write(bytes);
  return new Promise((resolve) =>
    stream.on('status', (status: StatusObject) => {
      client.close();
      resolve(status);
    }),
  );
}
