/**
 * The etcd backend (etcd ≥ 3.4 through the `etcd3` client): revisions are etcd's mod revisions,
 * compare-and-swap is an etcd transaction on the key's mod revision, and watches use etcd's own
 * watch API. Watches are driven here rather than by etcd3's watch manager so that a reconnect
 * resumes exactly after the last delivered event and a compaction surfaces as Compacted.
 */
import { Etcd3, type IKeyValue, type IRangeResponse, type IWatchResponse } from 'etcd3';
import { LoamError } from '../../crds/errors.js';
import {
  checkExpectedRevision,
  compactedError,
  decodeContinue,
  encodeContinue,
  type KeyValue,
  type ListOptions,
  type ListResult,
  type Store,
  type Watch,
  type WatchEvent,
} from './store.js';
import { defaultMaxBuffered, WatchQueue } from './watch-queue.js';

export interface EtcdStoreOptions {
  /** Client URLs, e.g. http://127.0.0.1:2379. */
  endpoints: string[];
  /** Prepended to every key, so several Loam installations can share one etcd. */
  keyPrefix?: string;
  /** Deadline of each unary call. */
  requestTimeoutMs?: number;
  maxWatchBuffered?: number;
}

const watchBackoffMs = { initial: 100, max: 5000 };
/** A watch that cannot reconnect for this long fails with Unavailable; its consumer re-lists. */
const watchReconnectDeadlineMs = 60_000;

function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if ((end[i] as number) < 0xff) {
      end[i] = (end[i] as number) + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]); // empty or all-0xff prefix: to the end of the keyspace
}

/** The etcd key range of a prefix; the empty prefix is the whole keyspace (etcd needs a non-empty key). */
function prefixRange(prefix: Buffer): { key: Buffer; range_end: Buffer } {
  return { key: prefix.length > 0 ? prefix : Buffer.from([0]), range_end: prefixEnd(prefix) };
}

function isCompactedError(err: unknown): boolean {
  return err instanceof Error && /required revision has been compacted/.test(err.message);
}

function unavailable(err: unknown): LoamError {
  if (err instanceof LoamError) return err;
  return new LoamError('Unavailable', `etcd: ${(err as Error).message}`, { cause: err });
}

export class EtcdStore implements Store {
  readonly backend = 'etcd' as const;
  readonly client: Etcd3;
  private readonly keyPrefix: string;
  private readonly maxWatchBuffered: number;
  private readonly watches = new Set<EtcdWatch>();
  /** Watch streams not yet ended by etcd, half-closed ones included: close() cancels them. */
  readonly streams = new Set<{ cancel(): void }>();

  constructor(options: EtcdStoreOptions) {
    const timeout = options.requestTimeoutMs ?? 10_000;
    this.client = new Etcd3({
      hosts: options.endpoints,
      dialTimeout: timeout,
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + timeout }),
    });
    this.keyPrefix = options.keyPrefix ?? '';
    this.maxWatchBuffered = options.maxWatchBuffered ?? defaultMaxBuffered;
  }

  async currentRevision(): Promise<number> {
    const res = await this.call(() =>
      this.client.kv.range({ ...prefixRange(this.encode('')), count_only: true }),
    );
    return Number(res.header.revision);
  }

  async get(key: string): Promise<KeyValue | undefined> {
    const res = await this.call(() => this.client.kv.range({ key: this.encode(key) }));
    const kv = res.kvs[0];
    return kv ? this.decode(kv) : undefined;
  }

  async list(prefix: string, options: ListOptions = {}): Promise<ListResult> {
    const token = options.continue ? decodeContinue(prefix, options.continue) : undefined;
    const range = prefixRange(this.encode(prefix));
    const start = token ? Buffer.concat([this.encode(token.after), Buffer.from([0])]) : range.key;
    const limit = options.limit && options.limit > 0 ? options.limit : 0;
    const revision = token?.rev ?? options.revision ?? 0;
    let res: IRangeResponse;
    try {
      res = await this.call(() =>
        this.client.kv.range({
          key: start,
          range_end: range.range_end,
          limit,
          revision,
        }),
      );
    } catch (err) {
      if (err instanceof LoamError && isCompactedError(err.cause)) throw compactedError(revision);
      throw err;
    }
    const atRevision = revision || Number(res.header.revision);
    const items = res.kvs.map((kv) => this.decode(kv));
    const result: ListResult = { items, revision: atRevision };
    if (res.more && items.length > 0) {
      result.continue = encodeContinue({ rev: atRevision, after: (items[items.length - 1] as KeyValue).key });
    }
    return result;
  }

  async create(key: string, value: string): Promise<KeyValue> {
    const k = this.encode(key);
    const res = await this.call(() =>
      this.client.kv.txn({
        compare: [{ key: k, target: 'Create', result: 'Equal', create_revision: 0 }],
        success: [{ request_put: { key: k, value: Buffer.from(value) } }],
        failure: [],
      }),
    );
    if (!res.succeeded) throw new LoamError('AlreadyExists', `key ${key} already exists`);
    const revision = Number(res.header.revision);
    return { key, value, createRevision: revision, modRevision: revision };
  }

  async update(key: string, value: string, expectedRevision: number): Promise<KeyValue> {
    checkExpectedRevision(expectedRevision);
    const k = this.encode(key);
    const res = await this.call(() =>
      this.client.kv.txn({
        compare: [{ key: k, target: 'Mod', result: 'Equal', mod_revision: expectedRevision }],
        success: [{ request_put: { key: k, value: Buffer.from(value), prev_kv: true } }],
        failure: [{ request_range: { key: k } }],
      }),
    );
    if (!res.succeeded) throw this.casFailure(key, expectedRevision, res.responses[0]?.response_range);
    const prev = res.responses[0]?.response_put.prev_kv;
    const revision = Number(res.header.revision);
    return {
      key,
      value,
      createRevision: prev ? Number(prev.create_revision) : revision,
      modRevision: revision,
    };
  }

  async delete(key: string, expectedRevision?: number): Promise<KeyValue> {
    const k = this.encode(key);
    if (expectedRevision !== undefined) checkExpectedRevision(expectedRevision);
    const res = await this.call(() =>
      this.client.kv.txn({
        compare:
          expectedRevision === undefined
            ? [{ key: k, target: 'Create', result: 'Greater', create_revision: 0 }]
            : [{ key: k, target: 'Mod', result: 'Equal', mod_revision: expectedRevision }],
        success: [{ request_delete_range: { key: k, prev_kv: true } }],
        failure: [{ request_range: { key: k } }],
      }),
    );
    if (!res.succeeded) throw this.casFailure(key, expectedRevision, res.responses[0]?.response_range);
    const prev = res.responses[0]?.response_delete_range.prev_kvs[0];
    if (!prev) throw new LoamError('NotFound', `key ${key} not found`);
    return { ...this.decode(prev), modRevision: Number(res.header.revision) };
  }

  async watch(prefix: string, afterRevision: number): Promise<Watch> {
    // etcd confirms a watch before it reports the start as compacted; a read at the start
    // revision fails at once instead, so the caller can answer 410 before streaming anything.
    if (afterRevision > 0) {
      await this.call(() =>
        this.client.kv.range({
          ...prefixRange(this.encode(prefix)),
          revision: afterRevision,
          count_only: true,
        }),
      ).catch((err: unknown) => {
        if (err instanceof LoamError && isCompactedError(err.cause)) throw compactedError(afterRevision);
        if (!(err instanceof LoamError && /future revision/.test(String(err.cause)))) throw err;
      });
    }
    const watch = new EtcdWatch(this, prefix, afterRevision, this.maxWatchBuffered);
    this.watches.add(watch);
    await watch.established;
    return watch.queue;
  }

  async compact(revision: number): Promise<void> {
    try {
      await this.call(() => this.client.kv.compact({ revision, physical: true }));
    } catch (err) {
      if (err instanceof LoamError && isCompactedError(err.cause)) return; // already compacted further
      throw err;
    }
  }

  async close(): Promise<void> {
    for (const watch of [...this.watches]) watch.queue.close();
    // A half-closed stream keeps its socket until etcd ends it; the client is going, so cancel.
    for (const stream of this.streams) stream.cancel();
    this.client.close();
  }

  encode(key: string): Buffer {
    return Buffer.from(this.keyPrefix + key);
  }

  decode(kv: IKeyValue): KeyValue {
    return {
      key: kv.key.toString().slice(this.keyPrefix.length),
      value: kv.value.toString(),
      createRevision: Number(kv.create_revision),
      modRevision: Number(kv.mod_revision),
    };
  }

  forgetWatch(watch: EtcdWatch): void {
    this.watches.delete(watch);
  }

  private casFailure(
    key: string,
    expected: number | undefined,
    current: IRangeResponse | undefined,
  ): LoamError {
    const kv = current?.kvs[0];
    if (!kv) return new LoamError('NotFound', `key ${key} not found`);
    return new LoamError('Conflict', `key ${key} is at revision ${kv.mod_revision}, not ${expected}`);
  }

  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw unavailable(err);
    }
  }
}

/** One watch on its own etcd watch stream, re-created after a failure from the next revision. */
class EtcdWatch {
  readonly queue: WatchQueue;
  readonly established: Promise<void>;
  private resolveEstablished!: () => void;
  private rejectEstablished!: (err: unknown) => void;
  private isEstablished = false;
  /** Every event up to this revision has been queued. */
  private cursor: number;
  private stream: Awaited<ReturnType<Etcd3['watchClient']['watch']>> | undefined;
  private retryDelayMs = watchBackoffMs.initial;
  private retryTimer: NodeJS.Timeout | undefined;
  private disconnectedSince: number | undefined;

  constructor(
    private readonly store: EtcdStore,
    private readonly prefix: string,
    afterRevision: number,
    maxBuffered: number,
  ) {
    this.cursor = afterRevision;
    this.queue = new WatchQueue(() => this.stop(), undefined, maxBuffered);
    this.established = new Promise((resolve, reject) => {
      this.resolveEstablished = resolve;
      this.rejectEstablished = reject;
    });
    void this.connect();
  }

  private async connect(): Promise<void> {
    if (this.queue.closed) return;
    let stream: NonNullable<typeof this.stream>;
    try {
      stream = await this.store.client.watchClient.watch();
    } catch (err) {
      this.retry(err);
      return;
    }
    if (this.queue.closed) {
      stream.end();
      return;
    }
    this.stream = stream;
    this.store.streams.add(stream);
    stream.on('data', (res: IWatchResponse) => this.onResponse(res));
    stream.on('error', (err: Error) => this.onStreamEnd(stream, err));
    stream.on('end', () => this.onStreamEnd(stream, new Error('watch stream ended')));
    stream.write({
      create_request: {
        ...prefixRange(this.store.encode(this.prefix)),
        start_revision: this.cursor + 1,
        prev_kv: true,
      },
    });
  }

  private onResponse(res: IWatchResponse): void {
    if (res.canceled) {
      const compactRevision = Number(res.compact_revision);
      const err =
        compactRevision > 0
          ? compactedError(this.cursor, compactRevision)
          : new LoamError('Unavailable', `etcd cancelled the watch: ${res.cancel_reason}`);
      this.fail(err);
      return;
    }
    if (res.created && !this.isEstablished) {
      this.isEstablished = true;
      this.resolveEstablished();
    }
    this.retryDelayMs = watchBackoffMs.initial;
    this.disconnectedSince = undefined;
    for (const ev of res.events) {
      const kv = this.store.decode(ev.kv);
      // After a reconnect etcd replays from cursor+1; anything at or below it was delivered.
      if (kv.modRevision <= this.cursor) continue;
      const event: WatchEvent =
        ev.type === 'Delete'
          ? { type: 'delete', kv: { ...this.store.decode(ev.prev_kv ?? ev.kv), modRevision: kv.modRevision } }
          : ev.prev_kv
            ? { type: 'put', kv, prev: this.store.decode(ev.prev_kv) }
            : { type: 'put', kv };
      this.queue.push(event);
    }
    const last = res.events[res.events.length - 1];
    if (last) this.cursor = Math.max(this.cursor, Number(last.kv.mod_revision));
  }

  private onStreamEnd(stream: NonNullable<typeof this.stream>, err: Error): void {
    this.store.streams.delete(stream);
    if (stream !== this.stream || this.queue.closed) return;
    this.stream = undefined;
    if (!this.isEstablished && isCompactedError(err)) {
      this.fail(compactedError(this.cursor));
      return;
    }
    this.retry(err);
  }

  /** Reconnects with jittered exponential backoff, for a bounded time; a watch never established fails at once. */
  private retry(err: unknown): void {
    this.disconnectedSince ??= Date.now();
    if (!this.isEstablished || Date.now() - this.disconnectedSince > watchReconnectDeadlineMs) {
      this.fail(unavailable(err));
      return;
    }
    const delay = this.retryDelayMs * (0.5 + Math.random() / 2);
    this.retryDelayMs = Math.min(this.retryDelayMs * 2, watchBackoffMs.max);
    this.retryTimer = setTimeout(() => void this.connect(), delay);
  }

  private fail(err: LoamError): void {
    if (!this.isEstablished) this.rejectEstablished(err);
    this.queue.fail(err);
  }

  private stop(): void {
    clearTimeout(this.retryTimer);
    // Half-close rather than cancel: etcd3 counts a cancelled stream as a failure of the host,
    // and enough of them open its circuit breaker.
    this.stream?.end();
    this.stream = undefined;
    this.store.forgetWatch(this);
  }
}
