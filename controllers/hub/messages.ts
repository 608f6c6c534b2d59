/** Decoding requests and answering failures, the same way on every call the hub serves. */
import { status as Status } from '@grpc/grpc-js';
import { errorCodes, isLoamError } from '../../crds/errors.js';

/** A request that failed to decode: the handler refuses it with INVALID_ARGUMENT. */
export class MalformedMessage {
  constructor(readonly reason: string) {}
}

// grpc-js answers a request its deserializer throws on with INTERNAL; decoding to a marker
// instead lets the handler answer INVALID_ARGUMENT, which is what it is.
export function tolerant<T>(decode: (input: Uint8Array) => T) {
  return (buffer: Buffer): T | MalformedMessage => {
    try {
      return decode(buffer);
    } catch (err) {
      return new MalformedMessage(`malformed message: ${err instanceof Error ? err.message : String(err)}`);
    }
  };
}

/** The gRPC status for a failure: a LoamError's own, INTERNAL (without details) for anything else. */
export function grpcStatus(err: unknown): { code: Status; details: string } {
  return isLoamError(err)
    ? { code: errorCodes[err.code].grpc, details: err.message }
    : { code: Status.INTERNAL, details: 'internal error' };
}
