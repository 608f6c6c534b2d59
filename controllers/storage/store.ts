/**
 * The revisioned key-value store every Loam object lives in, with etcd semantics so that the
 * embedded SQLite backend and etcd are interchangeable: one global revision that increases with
 * every write, compare-and-swap on a key's modRevision, and watches that replay history from any
 * revision not yet compacted, then follow live changes — each exactly once, in revision order.
 * Kubernetes' resourceVersion is this revision.
 */
import { LoamError } from '../../crds/errors.js';

export interface KeyValue {
  key: string;
  value: string;
  /** Revision of the write that created this incarnation of the key. */
  createRevision: number;
  /** Revision of the last write to the key: the value to pass back for compare-and-swap. */
  modRevision: number;
}

/**
 * A change to one key. For `delete`, `kv` holds the value the key had, with modRevision set to
 * the revision of the deletion (as Kubernetes reports a deleted object's resourceVersion).
 * `prev` is the value before a put, when it is still in history.
 */
export type WatchEvent = { type: 'put'; kv: KeyValue; prev?: KeyValue } | { type: 'delete'; kv: KeyValue };

export interface ListOptions {
  /** Most items to return; more are announced by `continue`. 0 or absent: no limit. */
  limit?: number;
  /** Token from a previous page: the next page, read at the same revision as the first. */
  continue?: string;
  /** Read at this revision instead of the current one (fails with Compacted if too old). */
  revision?: number;
}

export interface ListResult {
  items: KeyValue[];
  /** The revision the whole list (every page of it) is consistent at. */
  revision: number;
  continue?: string;
}

/** A live watch: iterate it for events; the iterator throws a LoamError (Compacted, WatchTooSlow, Unavailable). */
export interface Watch extends AsyncIterable<WatchEvent> {
  close(): void;
}

export interface Store {
  readonly backend: 'sqlite' | 'etcd';
  currentRevision(): Promise<number>;
  get(key: string): Promise<KeyValue | undefined>;
  list(prefix: string, options?: ListOptions): Promise<ListResult>;
  /** Fails with AlreadyExists when the key is present. */
  create(key: string, value: string): Promise<KeyValue>;
  /** Fails with NotFound when the key is absent and Conflict when its modRevision is not `expectedRevision`. */
  update(key: string, value: string, expectedRevision: number): Promise<KeyValue>;
  /** Deletes, only if still at `expectedRevision` when given; returns the deleted value (modRevision = deletion revision). */
  delete(key: string, expectedRevision?: number): Promise<KeyValue>;
  /**
   * Every change under `prefix` after `afterRevision`. Resolves once the watch is established;
   * rejects with Compacted when history after `afterRevision` is no longer complete.
   */
  watch(prefix: string, afterRevision: number): Promise<Watch>;
  /** Forgets history up to `revision`; the state at `revision` stays readable. */
  compact(revision: number): Promise<void>;
  close(): Promise<void>;
}

interface ContinueToken {
  /** revision the first page was read at */
  rev: number;
  /** last key returned; the next page starts after it */
  after: string;
}

export function encodeContinue(token: ContinueToken): string {
  return Buffer.from(JSON.stringify(token)).toString('base64url');
}

/** Parses a continue token, checking it belongs to a list of `prefix`. */
export function decodeContinue(prefix: string, raw: string): ContinueToken {
  let token: unknown;
  try {
    token = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8'));
  } catch {
    throw new LoamError('BadRequest', 'continue: invalid token');
  }
  const t = token as Partial<ContinueToken>;
  if (
    typeof t.rev !== 'number' ||
    !Number.isSafeInteger(t.rev) ||
    t.rev < 1 ||
    typeof t.after !== 'string' ||
    !t.after.startsWith(prefix)
  ) {
    throw new LoamError('BadRequest', 'continue: invalid token');
  }
  return { rev: t.rev, after: t.after };
}

export function compactedError(revision: number, compacted?: number): LoamError {
  const oldest = compacted === undefined ? '' : ` (oldest available: ${compacted})`;
  return new LoamError(
    'Compacted',
    `revision ${revision} has been compacted${oldest}; list again and watch from the new revision`,
  );
}

export function checkExpectedRevision(expectedRevision: number): void {
  if (!Number.isSafeInteger(expectedRevision) || expectedRevision < 1) {
    throw new LoamError(
      'BadRequest',
      `expected revision must be a positive integer, got ${expectedRevision}`,
    );
  }
}
