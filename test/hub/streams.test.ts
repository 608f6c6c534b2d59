/**
 * Byte streams (consoles) through the hub's reverse tunnel, over real gRPC and TLS on loopback
 * against `up()`: the hub asks the agent's session for a stream, the agent opens it with
 * OpenStream, bytes go both ways. With the real agent runtime (its test driver echoes) and, for
 * what a well-behaved agent never sends, raw OpenStream calls with enrolled certificates.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { Duplex, PassThrough } from 'node:stream';
import {
  type ClientDuplexStream,
  type Client as GrpcClient,
  makeGenericClientConstructor,
  status as Status,
  type StatusObject,
} from '@grpc/grpc-js';
import { revokedAnnotation } from '../../controllers/hub/identity.js';
import { caPin } from '../../controllers/pki/certificates.js';
import { isLoamError } from '../../crds/errors.js';
import {
  AgentServiceService,
  OpenStreamRequest,
  type OpenStreamResponse,
  type ResourceRef,
  type StreamRequest,
} from '../../proto/gen/loam/agent/v1/agent.js';
import { startAgent, type TestAgent } from '../agents/hub-double.js';
import { apiClient } from '../harness/https.js';
import { tempDir } from '../harness/plane.js';
import { pollUntil } from '../harness/poll.js';
import { type AgentCredentials, enroll, sharedKeys, TestSession, tlsCredentials } from './agent-client.js';
import { type HubPlane, startHubPlane } from './fixture.js';

const maxStreams = 3;
const openTimeoutSeconds = 2;
const maxMessageBytes = 64 * 1024;
const web: ResourceRef = { kind: 'Instance', namespace: 'default', name: 'web', uid: 'uid-web' };
const consoleTarget = { kind: 'console', resource: web };
const wait = { timeoutMs: 10_000 };

/** What came out of a stream, and how it ended. */
class Reader {
  private readonly chunks: Buffer[] = [];
  ended = false;
  closed = false;
  error: Error | undefined;

  constructor(readonly stream: Duplex) {
    stream.on('data', (chunk: Buffer) => this.chunks.push(chunk));
    stream.on('end', () => {
      this.ended = true;
    });
    stream.on('error', (err: Error) => {
      this.error = err;
    });
    stream.on('close', () => {
      this.closed = true;
    });
  }

  get bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }

  get text(): string {
    return this.bytes.toString();
  }

  receives(text: string): Promise<void> {
    return pollUntil(() => this.text === text || this.closed, { ...wait, what: JSON.stringify(text) }).then(
      () => assert.equal(this.text, text),
    );
  }

  /** Resolves once the stream has closed, with the error it closed with, if any. */
  async close(): Promise<Error | undefined> {
    await pollUntil(() => this.closed, { ...wait, what: 'the stream to close' });
    return this.error;
  }
}

type RawRequest = OpenStreamRequest | Buffer;
type RawCall = ClientDuplexStream<RawRequest, OpenStreamResponse>;

/** An AgentService client whose OpenStream also sends raw bytes, for what the agent never sends. */
const RawAgentClient = makeGenericClientConstructor(
  {
    openStream: {
      ...AgentServiceService.openStream,
      requestSerialize: (value: RawRequest) =>
        Buffer.isBuffer(value) ? value : Buffer.from(OpenStreamRequest.encode(value).finish()),
    },
  },
  'RawAgentService',
);

/** One OpenStream call made by hand. */
class RawStream {
  readonly received: Buffer[] = [];
  status: StatusObject | undefined;
  readonly ended: Promise<StatusObject>;

  private constructor(readonly call: RawCall) {
    call.on('data', (message: OpenStreamResponse) => this.received.push(message.data));
    call.on('error', () => {});
    this.ended = new Promise((resolve) =>
      call.on('status', (status: StatusObject) => {
        this.status = status;
        resolve(status);
      }),
    );
  }

  /** Opens the call on `client` and sends `first` (nothing unless given). */
  static open(client: GrpcClient, first?: RawRequest): RawStream {
    const call = (client as unknown as { openStream(): RawCall }).openStream();
    const stream = new RawStream(call);
    if (first) call.write(first);
    return stream;
  }

  get text(): string {
    return Buffer.concat(this.received).toString();
  }

  write(text: string): void {
    this.call.write({ sessionId: '', data: Buffer.from(text) });
  }

  async code(): Promise<string> {
    return Status[(await this.ended).code] ?? 'UNKNOWN';
  }
}

function first(sessionId: string, data = ''): OpenStreamRequest {
  return { sessionId, data: Buffer.from(data) };
}

describe('agent byte streams', function () {
  this.timeout(60_000);
  let hub: HubPlane;
  let dir: string;
  const logs: string[] = [];
  const agents: TestAgent[] = [];
  const clients: GrpcClient[] = [];
  const hv1 = { role: 'libvirt', name: 'hv1' } as const;
  let rawA: AgentCredentials;
  let rawB: AgentCredentials;

  const open = (agent: { role: 'libvirt' | 'network'; name: string } = hv1) =>
    hub.plane.hub.openStream(agent, consoleTarget);

  /** A real agent on the runtime, with the echoing test driver, connected. */
  const startRealAgent = async (name: string): Promise<TestAgent> => {
    const running = startAgent({
      role: 'libvirt',
      server: hub.address,
      token: await hub.token({ role: 'libvirt' }),
      caPin: caPin(hub.caPem),
      dataDir: join(dir, name),
      name,
      metricsAddress: '127.0.0.1:0',
      logLevel: 'silent',
      renewAt: 0.8,
      backoff: { initialMs: 50, maxMs: 300 },
    });
    agents.push(running);
    await pollUntil(() => running.agent.isConnected, { timeoutMs: 15_000, what: `${name} to connect` });
    return running;
  };

  const rawClient = (agent: { caPem: string; keys?: { privateKeyPem: string }; certPem?: string }) => {
    const client = new RawAgentClient(
      hub.address,
      tlsCredentials(
        agent.caPem,
        agent.keys && agent.certPem
          ? { keyPem: agent.keys.privateKeyPem, certPem: agent.certPem }
          : undefined,
      ),
      { 'grpc.use_local_subchannel_pool': 1 },
    );
    clients.push(client);
    return client;
  };

  /** The session id of the `index`th stream the hub asked of a raw agent's session. */
  const requested = async (session: TestSession, index: number): Promise<StreamRequest> => {
    const requests = () =>
      session.received.flatMap((m) => (m.message?.$case === 'streamRequest' ? [m.message.value] : []));
    await pollUntil(() => requests().length > index, { ...wait, what: 'a StreamRequest' });
    return requests()[index] as StreamRequest;
  };

  const streamsOpen = async (): Promise<number> => {
    const metrics = (await apiClient(hub.plane.kubeconfigPath)('GET', '/metrics')).text;
    return Number(/^loam_agent_streams_open\{role="libvirt"\} (\d+)$/m.exec(metrics)?.[1]);
  };
  const waitStreamsOpen = (count: number) =>
    pollUntil(async () => (await streamsOpen()) === count, { ...wait, what: `${count} streams open` });

  before(async () => {
    dir = tempDir('hub-streams-agents');
    hub = await startHubPlane(
      'hub-streams',
      { maxStreamsPerAgent: maxStreams, streamOpenTimeoutSeconds: openTimeoutSeconds, maxMessageBytes },
      logs,
    );
    await startRealAgent('hv1');
    const token = () => hub.token({ role: 'libvirt' });
    rawA = await enroll(hub.address, hub.caPem, { token: await token(), name: 'raw-a', keys: sharedKeys });
    rawB = await enroll(hub.address, hub.caPem, { token: await token(), name: 'raw-b', keys: sharedKeys });
  });
  after(async () => {
    for (const client of clients) client.close();
    await Promise.all(agents.map((running) => running.agent.stop()));
    await hub?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('opens a console through the agent: bytes written come back echoed, and ending it closes both ends', async () => {
    const driver = agents[0]?.driver;
    assert.ok(driver);
    const stream = await open();
    const reader = new Reader(stream);
    assert.equal(driver.streams.length, 1);
    assert.equal(driver.streams[0]?.request.kind, 'console');
    assert.deepEqual(driver.streams[0]?.request.resource, web);
    assert.equal(await streamsOpen(), 1);

    stream.write('hello, ');
    stream.write('console\n');
    await reader.receives('hello, console\n');
    stream.end();
    assert.equal(await reader.close(), undefined, 'a clean end');
    assert.ok(reader.ended);
    await pollUntil(() => driver.streams[0]?.local.writableEnded === true, {
      ...wait,
      what: 'the agent to see the end',
    });
    await waitStreamsOpen(0);
  });

  it('releases a console whose output outlives its input once the hub ends the stream', async () => {
    const driver = agents[0]?.driver;
    assert.ok(driver);
    // Like a console socket: its output does not end because its input did.
    driver.makeStream = () => new Duplex({ read() {}, write: (_chunk, _encoding, done) => done() });
    try {
      const stream = await open();
      const local = driver.streams.at(-1)?.local;
      stream.end();
      await pollUntil(() => local?.destroyed === true, { ...wait, what: 'the agent to release the console' });
    } finally {
      driver.makeStream = () => new PassThrough();
    }
    await waitStreamsOpen(0);
  });

  it('keeps concurrent streams apart, and cuts writes larger than a message into chunks', async () => {
    const [one, two] = await Promise.all([open(), open()]);
    assert.ok(one && two);
    const readers = [new Reader(one), new Reader(two)];
    assert.equal(await streamsOpen(), 2);
    const big = randomBytes(3 * maxMessageBytes + 17);
    for (let i = 0; i < 5; i++) {
      one.write(`a${i};`);
      two.write(`b${i};`);
    }
    two.write(big);
    await readers[0]?.receives('a0;a1;a2;a3;a4;');
    const expected = Buffer.concat([Buffer.from('b0;b1;b2;b3;b4;'), big]);
    await pollUntil(() => (readers[1]?.bytes.length ?? 0) >= expected.length || readers[1]?.closed === true, {
      ...wait,
      what: 'the large write echoed',
    });
    assert.ok(readers[1]?.bytes.equals(expected), 'the same bytes, in order');
    one.end();
    two.end();
    for (const reader of readers) assert.equal(await reader.close(), undefined);
    await waitStreamsOpen(0);
  });

  it('fails at once with Unavailable for an agent that is not connected', async () => {
    for (const agent of [
      { role: 'libvirt', name: 'nobody' },
      // Enrolled, with no session.
      { role: 'libvirt', name: 'raw-b' },
    ] as const) {
      const started = Date.now();
      const err = await open(agent).catch((e: unknown) => e);
      assert.ok(isLoamError(err, 'Unavailable'), String(err));
      assert.match(String(err), /not connected/);
      assert.ok(Date.now() - started < 1000, 'at once');
    }
  });

  it(`bounds the streams open or opening per agent (${maxStreams})`, async () => {
    const streams = await Promise.all(Array.from({ length: maxStreams }, () => open()));
    const over = await open().catch((e: unknown) => e);
    assert.ok(isLoamError(over, 'Unavailable'), String(over));
    assert.match(String(over), /the most allowed/);

    // Ending one makes room for another.
    const [firstStream, ...rest] = streams;
    assert.ok(firstStream);
    const reader = new Reader(firstStream);
    firstStream.end();
    await reader.close();
    await waitStreamsOpen(maxStreams - 1);
    const again = await open();
    for (const stream of [again, ...rest]) {
      const r = new Reader(stream);
      stream.end();
      assert.equal(await r.close(), undefined);
    }
    await waitStreamsOpen(0);
  });

  it('refuses OpenStream without a certificate, a session id, with an unknown one or another agent’s; a session id is good once', async () => {
    const session = TestSession.open(hub.address, rawA);
    await session.welcomed();
    const opening = open({ role: 'libvirt', name: 'raw-a' });
    const request = await requested(session, 0);
    assert.equal(request.kind, 'console');
    assert.deepEqual(request.resource, web);
    const id = request.sessionId;
    assert.match(id, /^[A-Za-z0-9_-]{43}$/, '256 random bits');

    const a = rawClient(rawA);
    const refusals: [string, RawStream, string][] = [
      [
        'no client certificate',
        RawStream.open(rawClient({ caPem: hub.caPem }), first(id)),
        'UNAUTHENTICATED',
      ],
      ['no session id', RawStream.open(a, first('', 'data')), 'INVALID_ARGUMENT'],
      ['an unknown session id', RawStream.open(a, first(randomBytes(32).toString('base64url'))), 'NOT_FOUND'],
      ['a malformed first message', RawStream.open(a, Buffer.from([0x0a, 0xff])), 'INVALID_ARGUMENT'],
      ['another agent’s session id', RawStream.open(rawClient(rawB), first(id)), 'PERMISSION_DENIED'],
    ];
    for (const [what, call, code] of refusals) assert.equal(await call.code(), code, what);

    // Refusing another agent did not spend it: the agent it was sent to opens the stream.
    const raw = RawStream.open(a, first(id, 'first '));
    const stream = await opening;
    const reader = new Reader(stream);
    await reader.receives('first ');
    stream.write('down');
    await pollUntil(() => raw.text === 'down', { ...wait, what: 'bytes down' });
    assert.equal(await RawStream.open(a, first(id)).code(), 'NOT_FOUND', 'used already');
    raw.write('up');
    await reader.receives('first up');
    // The agent ending its side ends the stream, and the call ends OK.
    raw.call.end();
    assert.equal(await reader.close(), undefined);
    assert.ok(reader.ended);
    assert.equal(await raw.code(), 'OK');
    await session.end();

    const refused = logs
      .map((line) => JSON.parse(line) as { msg: string; reason?: string })
      .filter((entry) => entry.msg === 'OpenStream refused');
    assert.ok(refused.some((e) => /another agent/.test(e.reason ?? '')));
    assert.ok(refused.some((e) => /no client certificate/.test(e.reason ?? '')));
    assert.ok(!logs.some((line) => line.includes(id)), 'session ids are never logged');
  });

  it('fails a stream whose agent sends a message over the size limit', async () => {
    const session = TestSession.open(hub.address, rawA);
    await session.welcomed();
    const opening = open({ role: 'libvirt', name: 'raw-a' });
    const raw = RawStream.open(rawClient(rawA), first((await requested(session, 0)).sessionId));
    const reader = new Reader(await opening);
    raw.write('x'.repeat(maxMessageBytes));
    assert.equal(await raw.code(), 'RESOURCE_EXHAUSTED');
    const err = await reader.close();
    assert.ok(isLoamError(err, 'Unavailable'), String(err));
    assert.equal(reader.text, '');
    await waitStreamsOpen(0);
    await session.end();
  });

  it('fails with DeadlineExceeded when the agent does not open the stream in time; its id is then unknown', async () => {
    const session = TestSession.open(hub.address, rawA);
    await session.welcomed();
    const started = Date.now();
    const opening = open({ role: 'libvirt', name: 'raw-a' }).catch((e: unknown) => e);
    const { sessionId } = await requested(session, 0);
    const err = await opening;
    assert.ok(isLoamError(err, 'DeadlineExceeded'), String(err));
    assert.ok(Date.now() - started >= openTimeoutSeconds * 1000 - 100);
    assert.equal(await RawStream.open(rawClient(rawA), first(sessionId)).code(), 'NOT_FOUND');
    await session.end();
  });

  it('bounds OpenStream calls that name no session, and ends them when they do not in time', async () => {
    const client = rawClient(rawA);
    const silent = Array.from({ length: maxStreams }, () => RawStream.open(client));
    // The same connection, so the hub sees this call after the others.
    assert.equal(await RawStream.open(client).code(), 'RESOURCE_EXHAUSTED');
    for (const call of silent) assert.equal(await call.code(), 'DEADLINE_EXCEEDED');
    // Room again.
    assert.equal(await RawStream.open(client, first('unknown')).code(), 'NOT_FOUND');
  });

  it('closes streams open or opening when the agent’s session is replaced or the agent revoked', async () => {
    const old = TestSession.open(hub.address, rawA);
    await old.welcomed();
    const raw = { role: 'libvirt', name: 'raw-a' } as const;
    const opened = open(raw);
    const call = RawStream.open(rawClient(rawA), first((await requested(old, 0)).sessionId));
    const reader = new Reader(await opened);
    const opening = open(raw).catch((e: unknown) => e);
    await requested(old, 1);

    const replacement = TestSession.open(hub.address, rawA);
    await replacement.welcomed();
    const err = await reader.close();
    assert.ok(isLoamError(err, 'Unavailable'), String(err));
    assert.match(String(err), /replaced/);
    assert.equal(await call.code(), 'UNAVAILABLE');
    const pending = await opening;
    assert.ok(isLoamError(pending, 'Unavailable'), String(pending));
    assert.equal(Status[(await old.ended).code], 'CANCELLED');

    // Revoked: the session closes, and its streams with it.
    const next = open(raw);
    const revokedCall = RawStream.open(rawClient(rawA), first((await requested(replacement, 0)).sessionId));
    const revokedReader = new Reader(await next);
    await hub.mergePatch({
      apiVersion: 'loam.dev/v1alpha1',
      kind: 'Host',
      metadata: { name: 'raw-a', annotations: { [revokedAnnotation]: 'true' } },
    });
    const revoked = await revokedReader.close();
    assert.ok(isLoamError(revoked, 'Unavailable'), String(revoked));
    assert.equal(await revokedCall.code(), 'UNAVAILABLE');
    assert.equal(Status[(await replacement.ended).code], 'PERMISSION_DENIED');
    await waitStreamsOpen(0);
  });

  it('closes the stream when the agent’s session ends', async () => {
    const hv2 = await startRealAgent('hv2');
    const stream = await open({ role: 'libvirt', name: 'hv2' });
    const reader = new Reader(stream);
    stream.write('ping');
    await reader.receives('ping');
    await hv2.agent.stop();
    const err = await reader.close();
    assert.ok(isLoamError(err, 'Unavailable'), String(err));
    await waitStreamsOpen(0);
  });

  it('closes open streams when the hub shuts down', async () => {
    const stream = await open();
    const reader = new Reader(stream);
    stream.write('ping');
    await reader.receives('ping');
    await hub.restart();
    const err = await reader.close();
    assert.ok(isLoamError(err, 'Unavailable'), String(err));
    assert.match(String(err), /shutting down/);
    // The agent comes back to the new hub by itself, and streams open again.
    await pollUntil(
      () =>
        open().then(
          (again) => {
            again.destroy();
            return true;
          },
          () => false,
        ),
      { timeoutMs: 15_000, what: 'a stream through the reconnected agent' },
    );
  });
});
