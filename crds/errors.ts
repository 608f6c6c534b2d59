/**
 * The coded errors shared by every part of Loam. One table says, per code, what an API client
 * sees (HTTP status and the Kubernetes `Status.reason`) and what a gRPC peer sees, so the API
 * server, the hub and the agents map failures the same way.
 */

export const errorCodes = {
  /** A create found the key or object already there. */
  AlreadyExists: { http: 409, reason: 'AlreadyExists', grpc: 6 /* ALREADY_EXISTS */ },
  /** A compare-and-swap lost: the object changed since the revision the writer read. */
  Conflict: { http: 409, reason: 'Conflict', grpc: 10 /* ABORTED */ },
  NotFound: { http: 404, reason: 'NotFound', grpc: 5 /* NOT_FOUND */ },
  /** The requested revision has been compacted away (Kubernetes: 410 Gone, "too old"). */
  Compacted: { http: 410, reason: 'Expired', grpc: 11 /* OUT_OF_RANGE */ },
  /** An object failed schema validation; `causes` name the fields. */
  Invalid: { http: 422, reason: 'Invalid', grpc: 3 /* INVALID_ARGUMENT */ },
  BadRequest: { http: 400, reason: 'BadRequest', grpc: 3 /* INVALID_ARGUMENT */ },
  /** The store or a peer cannot be reached now; retrying later may work. */
  Unavailable: { http: 503, reason: 'ServiceUnavailable', grpc: 14 /* UNAVAILABLE */ },
  Unauthorized: { http: 401, reason: 'Unauthorized', grpc: 16 /* UNAUTHENTICATED */ },
  Forbidden: { http: 403, reason: 'Forbidden', grpc: 7 /* PERMISSION_DENIED */ },
  MethodNotAllowed: { http: 405, reason: 'MethodNotAllowed', grpc: 12 /* UNIMPLEMENTED */ },
  UnsupportedMediaType: { http: 415, reason: 'UnsupportedMediaType', grpc: 3 /* INVALID_ARGUMENT */ },
  /** A request body over the size limit (3 MiB for the API, as kube-apiserver). */
  RequestEntityTooLarge: { http: 413, reason: 'RequestEntityTooLarge', grpc: 8 /* RESOURCE_EXHAUSTED */ },
  /** A watcher fell too far behind and was dropped; it must re-list. */
  WatchTooSlow: { http: 410, reason: 'Expired', grpc: 8 /* RESOURCE_EXHAUSTED */ },
  /** A deadline passed before the work finished (an agent job); retrying may work. */
  DeadlineExceeded: { http: 504, reason: 'Timeout', grpc: 4 /* DEADLINE_EXCEEDED */ },
  /** A bug or an unexpected failure; the message must not leak internals. */
  Internal: { http: 500, reason: 'InternalError', grpc: 13 /* INTERNAL */ },
  /** The component was closed while the call was under way. */
  Closed: { http: 503, reason: 'ServiceUnavailable', grpc: 1 /* CANCELLED */ },
} as const;

export type ErrorCode = keyof typeof errorCodes;

/** One field-level reason, as in a Kubernetes `StatusCause`. */
export interface ErrorCause {
  field: string;
  reason: string;
  message: string;
}

export class LoamError extends Error {
  readonly code: ErrorCode;
  readonly causes: ErrorCause[];

  constructor(code: ErrorCode, message: string, options: { causes?: ErrorCause[]; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'LoamError';
    this.code = code;
    this.causes = options.causes ?? [];
  }

  get httpStatus(): number {
    return errorCodes[this.code].http;
  }

  get reason(): string {
    return errorCodes[this.code].reason;
  }
}

export function isLoamError(err: unknown, code?: ErrorCode): err is LoamError {
  return err instanceof LoamError && (code === undefined || err.code === code);
}

/**
 * The coded error for the gRPC status a peer answered with (an agent's job result): the first
 * code in the table with that status, Internal for any other.
 */
export function errorFromGrpc(grpc: number, message: string): LoamError {
  const code = (Object.keys(errorCodes) as ErrorCode[]).find((c) => errorCodes[c].grpc === grpc);
  return new LoamError(code ?? 'Internal', message);
}
