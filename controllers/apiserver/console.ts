/**
 * Connect subresources: `GET .../instances/{name}/console` upgraded to a WebSocket, as KubeVirt
 * serves virtualmachineinstances/console. The API server reads the Instance and asks the hub for
 * a byte stream to the console at the agent of the Instance's Host before it completes the
 * handshake, so every refusal is a Kubernetes Status with its HTTP code. Then messages (binary,
 * or text from a browser) carry the raw bytes both ways. The server pings every 30 s, so proxies
 * keep an idle session open, and drops a peer that stopped answering; either side closing closes
 * the other.
 */

import type { IncomingMessage } from 'node:http';
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { type WebSocket, WebSocketServer } from 'ws';
import { LoamError } from '../../crds/errors.js';
import type { Instance } from '../../crds/v1alpha1/instance.js';
import type { Hub } from '../hub/hub.js';
import { agentHub, runningHost } from './instance-agent.js';
import type { Resources } from './resources.js';
import { isConnectSubresource, type ResourceRequest } from './routing.js';
import type { StatusObject } from './status.js';

/** What a console needs of the agent hub. */
export type StreamHub = Pick<Hub, 'openStream'>;

/** Console input is typed or pasted: far below this. */
const maxMessageBytes = 1024 * 1024;
/** Console output waiting for a slow client beyond this stops reading from the agent. */
const highWaterBytes = 256 * 1024;
/** A WebSocket close reason is at most 123 bytes of UTF-8. */
const maxCloseReasonBytes = 123;

/**
 * The stream of `route`'s connect subresource (an Instance's console) from the agent of its
 * Host. Fails with NotFound without the Instance, Conflict when it is not running on a Host,
 * and Unavailable without a hub here or when the agent is not connected.
 */
export async function openInstanceStream(
  route: ResourceRequest,
  resources: Resources,
  hub: StreamHub | undefined,
): Promise<Duplex> {
  const { kind, subresource } = route;
  if (!isConnectSubresource(route)) {
    throw new LoamError('BadRequest', `${kind.plural}/${subresource ?? ''} is not a connect subresource`);
  }
  const instance = (await resources.get(route)) as unknown as Instance;
  const { name = '', namespace = '', uid = '' } = instance.metadata;
  const host = runningHost(kind, instance);
  return agentHub(hub).openStream(
    { role: 'libvirt', name: host },
    { kind: route.subresource, resource: { kind: kind.kind, namespace, name, uid } },
  );
}

/** Answers an upgrade request with `status` instead, on the raw socket, and closes it. */
export function refuseUpgrade(socket: Duplex, status: StatusObject): void {
  const body = JSON.stringify(status);
  socket.end(
    `HTTP/1.1 ${status.code} ${STATUS_CODES[status.code] ?? ''}\r\n` +
      'Content-Type: application/json\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\n` +
      'Connection: close\r\n\r\n' +
      body,
  );
}

/** The open console sessions of one API server. */
export class ConsoleSessions {
  private readonly server = new WebSocketServer({
    noServer: true,
    clientTracking: true,
    maxPayload: maxMessageBytes,
    perMessageDeflate: false,
  });

  constructor(
    private readonly pingIntervalMs: number,
    private readonly logger: Logger,
  ) {}

  /**
   * Completes the WebSocket handshake of `req` and joins the socket to `stream`. A handshake ws
   * refuses (it answers 400) or a client gone meanwhile closes the stream.
   */
  serve(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    stream: Duplex,
    log: Record<string, unknown>,
  ): void {
    let upgraded = false;
    socket.once('close', () => {
      if (!upgraded) stream.destroy();
    });
    if (socket.destroyed) {
      stream.destroy();
      return;
    }
    this.server.handleUpgrade(req, socket, head, (ws) => {
      upgraded = true;
      this.logger.info(log, 'console opened');
      ws.once('close', (code) => this.logger.debug({ ...log, code }, 'console closed'));
      join(ws, stream, this.pingIntervalMs);
    });
  }

  /** Closes every session (going away), as the API server stops. */
  close(): void {
    for (const ws of this.server.clients) ws.close(1001, 'the API server is shutting down');
  }
}

/** Pipes `ws` and `stream` into each other, with backpressure both ways and keepalive pings. */
function join(ws: WebSocket, stream: Duplex, pingIntervalMs: number): void {
  let answered = true;
  const keepalive = setInterval(() => {
    // No pong for a whole interval: the peer (or the path to it) is gone.
    if (!answered) {
      ws.terminate();
      return;
    }
    answered = false;
    ws.ping();
  }, pingIntervalMs);
  ws.on('pong', () => {
    answered = true;
  });
  ws.on('message', (data: Buffer) => {
    if (stream.write(data)) return;
    ws.pause();
    stream.once('drain', () => ws.resume());
  });
  stream.on('data', (chunk: Buffer) => {
    ws.send(chunk, { binary: true }, () => {
      if (ws.bufferedAmount < highWaterBytes) stream.resume();
    });
    if (ws.bufferedAmount >= highWaterBytes) stream.pause();
  });
  // The agent ended the console (the domain stopped), or it failed (the agent went away).
  stream.once('end', () => ws.close(1000, 'the console ended'));
  stream.once('error', (err: Error) => ws.close(1011, closeReason(err.message)));
  stream.once('close', () => ws.close(1000, 'the console closed'));
  ws.on('error', () => {}); // always followed by close
  ws.once('close', () => {
    clearInterval(keepalive);
    stream.destroy();
  });
}

/** `message` cut to fit a close frame, on a character boundary. */
function closeReason(message: string): string {
  let reason = message;
  while (Buffer.byteLength(reason) > maxCloseReasonBytes) reason = reason.slice(0, -1);
  return reason;
}
