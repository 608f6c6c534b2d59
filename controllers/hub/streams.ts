/**
 * Byte streams to agents (consoles) through a reverse tunnel, so the control plane never dials
 * into a hypervisor's network. The hub sends a StreamRequest with a fresh session id down the
 * agent's Connect session; the agent calls OpenStream and names that id in its first message; the
 * call then carries bytes both ways. Whoever asked gets a Duplex: what it writes goes down to the
 * agent as OpenStreamResponse.data, what the agent sends comes out of it.
 *
 * A session id is a 256-bit random secret, good for one call, only from the agent it was sent to
 * (the same role, name and Host/Router uid, as its client certificate proves), only within the open
 * timeout and only while the session it was sent on lasts. Streams opening and open are bounded
 * per agent, and so are OpenStream calls that have not named their session yet. A session that
 * ends (the agent left, was replaced or revoked, or the hub closes) closes its streams.
 */
import { randomBytes } from 'node:crypto';
import { Duplex } from 'node:stream';
import { type ServerDuplexStream, status as Status } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { LoamError } from '../../crds/errors.js';
import type {
  OpenStreamRequest,
  OpenStreamResponse,
  ResourceRef,
} from '../../proto/gen/loam/agent/v1/agent.js';
import { type AgentIdentity, agentKey } from './identity.js';
import { grpcStatus, MalformedMessage } from './messages.js';
import type { HubMetrics } from './metrics.js';
import { endCall, type Session } from './session.js';

export type OpenStreamCall = ServerDuplexStream<OpenStreamRequest | MalformedMessage, OpenStreamResponse>;

/** What to stream from the agent, e.g. the console of an Instance. */
export interface StreamTarget {
  /** e.g. "console". */
  kind: string;
  resource: ResourceRef;
}

export interface StreamBrokerOptions {
  /** Streams opening or open per agent; also OpenStream calls per agent that have not named a session. */
  maxStreamsPerAgent: number;
  /** How long the agent has to open a requested stream, and an OpenStream call to name its session. */
  openTimeoutMs: number;
  /** The largest message a call may carry: writes are cut into chunks that fit. */
  maxMessageBytes: number;
  metrics: HubMetrics;
  logger: Logger;
  /** The agent the call's client certificate proves; throws a LoamError without one. */
  authenticate(call: OpenStreamCall): AgentIdentity;
  /** Throws a LoamError unless the agent's object still stands for `identity`. */
  authorize(identity: AgentIdentity): Promise<void>;
  /** Logs a refused call, as the hub logs every refusal. */
  logRefusal(peer: string, err: unknown, fields: Record<string, unknown>): void;
}

/** Room in an OpenStreamResponse for what is not data: a tag and a length. */
const envelopeBytes = 16;
/** The most data one message carries: big enough for a console, small enough to interleave. */
const chunkBytes = 64 * 1024;

interface PendingStream {
  id: string;
  session: Session;
  streams: SessionStreams;
  target: StreamTarget;
  timer: NodeJS.Timeout;
  resolve(stream: Duplex): void;
  reject(err: LoamError): void;
}

/** One session's streams: asked for and not opened yet, and open. */
interface SessionStreams {
  pending: Map<string, PendingStream>;
  open: Set<Tunnel>;
}

function describeAgent(agent: AgentIdentity): string {
  return `${agent.role} agent ${agent.name}`;
}

function sameAgent(a: AgentIdentity, b: AgentIdentity): boolean {
  return a.role === b.role && a.name === b.name && a.uid === b.uid;
}

export class StreamBroker {
  /** Streams asked for and not opened yet, by session id, across all agents. */
  private readonly pending = new Map<string, PendingStream>();
  private readonly sessions = new Map<Session, SessionStreams>();
  /** OpenStream calls that have not named their session yet, counted per agent. */
  private readonly unnamed = new Set<OpenStreamCall>();
  private readonly unnamedPerAgent = new Map<string, number>();
  private closed = false;

  constructor(private readonly options: StreamBrokerOptions) {}

  /**
   * Asks the agent of `session` for a byte stream and resolves with it once the agent has opened
   * it; fails with Unavailable at once when the session is over or the agent has too many streams,
   * or when the session ends first, and with DeadlineExceeded when the agent does not open it in
   * time.
   */
  open(session: Session, target: StreamTarget): Promise<Duplex> {
    const agent = describeAgent(session.identity);
    if (this.closed || session.isClosed) {
      return Promise.reject(new LoamError('Unavailable', `${agent} is not connected`));
    }
    if (!target.kind) return Promise.reject(new LoamError('BadRequest', 'a stream needs a kind'));
    const streams = this.streamsOf(session);
    const count = streams.pending.size + streams.open.size;
    if (count >= this.options.maxStreamsPerAgent) {
      return Promise.reject(
        new LoamError('Unavailable', `${agent} has ${count} streams open or opening, the most allowed`),
      );
    }
    const id = randomBytes(32).toString('base64url');
    const { openTimeoutMs } = this.options;
    return new Promise<Duplex>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.forget(pending);
        reject(
          new LoamError(
            'DeadlineExceeded',
            `${agent} did not open the ${target.kind} stream within ${openTimeoutMs} ms`,
          ),
        );
      }, openTimeoutMs);
      const pending: PendingStream = { id, session, streams, target, timer, resolve, reject };
      this.pending.set(id, pending);
      streams.pending.set(id, pending);
      session.send({
        message: {
          $case: 'streamRequest',
          value: { sessionId: id, kind: target.kind, resource: target.resource },
        },
      });
    });
  }

  /**
   * Serves one OpenStream call: the caller's certificate and object are checked as on every
   * AgentService call, then its first message must name a session asked of that same agent.
   */
  serve(call: OpenStreamCall): void {
    const peer = call.getPeer();
    let identity: AgentIdentity;
    try {
      if (this.closed) throw new LoamError('Unavailable', 'the hub is shutting down');
      identity = this.options.authenticate(call);
    } catch (err) {
      this.refuse(call, peer, err, {});
      return;
    }
    const fields = { agent: identity };
    const key = agentKey(identity);
    const waiting = this.unnamedPerAgent.get(key) ?? 0;
    if (waiting >= this.options.maxStreamsPerAgent) {
      const details = `${waiting} streams of this agent have not named their session yet, the most allowed`;
      this.options.logger.warn(
        { method: 'OpenStream', peer, ...fields, code: 'RESOURCE_EXHAUSTED', reason: details },
        'OpenStream refused',
      );
      endCall(call, Status.RESOURCE_EXHAUSTED, details);
      return;
    }
    this.unnamed.add(call);
    this.unnamedPerAgent.set(key, waiting + 1);
    // Set once the call named its session or ended without: it no longer counts as unnamed.
    let settled = false;
    const settle = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      this.unnamed.delete(call);
      const left = (this.unnamedPerAgent.get(key) ?? 1) - 1;
      if (left > 0) this.unnamedPerAgent.set(key, left);
      else this.unnamedPerAgent.delete(key);
    };
    const timer = setTimeout(() => {
      settle();
      this.refuse(
        call,
        peer,
        new LoamError('DeadlineExceeded', `no session named within ${this.options.openTimeoutMs} ms`),
        fields,
      );
    }, this.options.openTimeoutMs);
    // grpc-js destroys the call once its status is sent or it is cancelled.
    call.once('close', settle);
    let tunnel: Tunnel | undefined;
    this.options.authorize(identity).then(
      () => {
        if (settled) return;
        // Messages wait in the call's buffer until this listener is attached.
        call.on('data', (message: OpenStreamRequest | MalformedMessage) => {
          if (tunnel) {
            tunnel.receive(message);
            return;
          }
          if (settled) return;
          settle();
          try {
            tunnel = this.connect(identity, call, message);
          } catch (err) {
            this.refuse(call, peer, err, fields);
          }
        });
        call.on('end', () => {
          if (tunnel) {
            tunnel.agentEnded();
          } else if (!settled) {
            settle();
            this.refuse(
              call,
              peer,
              new LoamError('BadRequest', 'the stream ended before naming its session'),
              fields,
            );
          }
        });
      },
      (err: unknown) => {
        settle();
        this.refuse(call, peer, err, fields);
      },
    );
  }

  /** Fails what was asked of the session's agent and closes its open streams. */
  closeSession(session: Session, details: string): void {
    const streams = this.sessions.get(session);
    if (!streams) return;
    this.sessions.delete(session);
    for (const pending of [...streams.pending.values()]) {
      this.forget(pending);
      pending.reject(
        new LoamError(
          'Unavailable',
          `the session of ${describeAgent(session.identity)} ended before it opened the stream: ${details}`,
        ),
      );
    }
    for (const tunnel of [...streams.open]) {
      tunnel.abort(
        Status.UNAVAILABLE,
        `the agent's session ended: ${details}`,
        new LoamError('Unavailable', `the session of ${describeAgent(session.identity)} ended: ${details}`),
      );
    }
  }

  /** Closes every stream and refuses new ones. */
  close(): void {
    this.closed = true;
    for (const session of [...this.sessions.keys()]) this.closeSession(session, 'the hub is shutting down');
    for (const call of [...this.unnamed]) endCall(call, Status.UNAVAILABLE, 'the hub is shutting down');
  }

  private streamsOf(session: Session): SessionStreams {
    let streams = this.sessions.get(session);
    if (!streams) {
      streams = { pending: new Map(), open: new Set() };
      this.sessions.set(session, streams);
    }
    return streams;
  }

  private forget(pending: PendingStream): void {
    clearTimeout(pending.timer);
    this.pending.delete(pending.id);
    pending.streams.pending.delete(pending.id);
  }

  /** Matches a call's first message to the stream asked for; throws a LoamError when it may not. */
  private connect(
    identity: AgentIdentity,
    call: OpenStreamCall,
    first: OpenStreamRequest | MalformedMessage,
  ): Tunnel {
    if (first instanceof MalformedMessage) throw new LoamError('BadRequest', first.reason);
    if (!first.sessionId) throw new LoamError('BadRequest', 'the first message must name the stream session');
    const pending = this.pending.get(first.sessionId);
    // The id itself is a secret: it is neither logged nor echoed.
    if (!pending) throw new LoamError('NotFound', 'no such stream session (unknown, expired or used)');
    // Refused without spending the id: one that leaked must not let another agent close the
    // stream of the one it was sent to.
    if (!sameAgent(pending.session.identity, identity)) {
      throw new LoamError('Forbidden', 'the stream session was asked of another agent');
    }
    if (call.destroyed) throw new LoamError('Unavailable', 'the call ended');
    this.forget(pending);
    const { metrics, logger } = this.options;
    const { role } = identity;
    const { streams, target } = pending;
    const log = logger.child({ agent: identity, kind: target.kind, resource: target.resource });
    const tunnel = new Tunnel(
      call,
      Math.max(1, Math.min(chunkBytes, this.options.maxMessageBytes - envelopeBytes)),
      () => {
        streams.open.delete(tunnel);
        metrics.streamsOpen.dec({ role });
        log.debug('agent stream closed');
      },
    );
    streams.open.add(tunnel);
    metrics.streamsOpen.inc({ role });
    if (first.data.length > 0) tunnel.receive(first);
    log.info('agent stream opened');
    pending.resolve(tunnel);
    return tunnel;
  }

  private refuse(call: OpenStreamCall, peer: string, err: unknown, fields: Record<string, unknown>): void {
    this.options.logRefusal(peer, err, fields);
    const { code, details } = grpcStatus(err);
    endCall(call, code, details);
  }
}

/**
 * One open stream, as its user sees it. Ending it ends the call (gRPC has no half-close from the
 * server) and so its readable side too; the agent ending its side ends both sides as well, once
 * what was written before has gone down. The call failing (the agent cancelled it, its connection
 * dropped, a message over the size limit) destroys it with Unavailable; destroying it ends the
 * call.
 */
class Tunnel extends Duplex {
  /** The call is over: its status was sent, or it was cancelled. */
  private callDone = false;
  /** The hub ended the call, or is ending it, rather than the call failing under it. */
  private hubEnded = false;
  /** The readable side has its end. */
  private eof = false;
  /** The status to end the call with when the hub aborts the stream. */
  private abortStatus: { code: Status; details: string } | undefined;

  constructor(
    private readonly call: OpenStreamCall,
    private readonly chunkBytes: number,
    private readonly onCallClosed: () => void,
  ) {
    super();
    call.once('close', () => this.callClosed());
  }

  /** A message from the agent. */
  receive(message: OpenStreamRequest | MalformedMessage): void {
    if (message instanceof MalformedMessage) {
      this.abort(
        Status.INVALID_ARGUMENT,
        message.reason,
        new LoamError('BadRequest', `the agent sent a ${message.reason}`),
      );
      return;
    }
    if (this.eof || message.data.length === 0) return;
    // Flow control: the call stops reading until the user has read.
    if (!this.push(message.data)) this.call.pause();
  }

  /** The agent half-closed the call: it sends no more. */
  agentEnded(): void {
    this.endReadable();
    if (!this.writableEnded) this.end();
  }

  /** Ends the call with `code` and destroys the stream with `err`. */
  abort(code: Status, details: string, err: LoamError): void {
    this.abortStatus ??= { code, details };
    this.destroy(err);
  }

  override _read(): void {
    this.call.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (this.callDone || this.hubEnded) {
      callback(new LoamError('Unavailable', 'the stream is closed'));
      return;
    }
    if (chunk.length === 0) {
      callback();
      return;
    }
    for (let offset = 0; offset < chunk.length; offset += this.chunkBytes) {
      const data = chunk.subarray(offset, offset + this.chunkBytes);
      const last = offset + this.chunkBytes >= chunk.length;
      this.call.write({ data } satisfies OpenStreamResponse, last ? callback : undefined);
    }
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.hubEnded = true;
    endCall(this.call, Status.OK, '');
    this.endReadable();
    callback();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    if (!this.callDone && !this.hubEnded) {
      this.hubEnded = true;
      const { code, details } =
        this.abortStatus ??
        (err
          ? { code: Status.CANCELLED, details: 'the control plane closed the stream' }
          : { code: Status.OK, details: '' });
      endCall(this.call, code, details);
    }
    callback(err);
  }

  private endReadable(): void {
    if (this.eof) return;
    this.eof = true;
    this.push(null);
  }

  private callClosed(): void {
    this.callDone = true;
    this.onCallClosed();
    if (!this.hubEnded) {
      this.destroy(new LoamError('Unavailable', "the agent's end of the stream was cancelled or failed"));
    }
  }
}
