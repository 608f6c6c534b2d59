/**
 * Byte streams the hub asks for (consoles), opened by the agent as OpenStream calls so the hub
 * never dials into a hypervisor's network. The first message names the hub's session id; after
 * that the call and the driver's local stream are piped both ways until either side ends.
 */
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import type {
  AgentServiceClient,
  OpenStreamRequest,
  OpenStreamResponse,
  StreamRequest,
} from '../../proto/gen/loam/agent/v1/agent.js';

export function openByteStream(
  client: AgentServiceClient,
  request: StreamRequest,
  local: Duplex | undefined,
  logger: Logger,
): void {
  const log = logger.child({ streamSession: request.sessionId, kind: request.kind });
  const call = client.openStream();
  call.write({ sessionId: request.sessionId, data: Buffer.alloc(0) } satisfies OpenStreamRequest);
  if (!local) {
    // Open and close at once, so the hub learns now rather than by timing out.
    log.warn('the driver does not serve this kind of stream');
    call.end();
    call.on('error', () => {});
    return;
  }
  // grpc-js types the call as object streams that pipeline's overloads do not accept; it is a Duplex.
  const wire = call as unknown as Duplex;
  const outgoing = pipeline(
    local,
    async function* (chunks: AsyncIterable<Buffer>) {
      for await (const data of chunks) yield { sessionId: '', data } satisfies OpenStreamRequest;
    },
    wire,
  );
  const incoming = pipeline(
    wire,
    async function* (messages: AsyncIterable<OpenStreamResponse>) {
      for await (const message of messages) yield message.data;
    },
    local,
  );
  // Once the hub has ended its side and everything it sent is written, the stream is over: a
  // console whose output does not end with its input would otherwise hold its connection
  // (libvirt allows one per console) until it next prints.
  incoming.then(
    () => local.destroy(),
    () => {},
  );
  Promise.all([outgoing, incoming]).then(
    () => log.debug('stream closed'),
    (err: Error) => {
      log.debug({ err: err.message }, 'stream failed');
      call.cancel();
      local.destroy();
    },
  );
}
