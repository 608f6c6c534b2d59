/**
 * The embedded store: SQLite through better-sqlite3, an append-only log of key versions as kine
 * keeps it. Every write appends a row whose primary key is the new revision (a delete appends a
 * tombstone carrying the last value), so history is just the table read in revision order.
 *
 * Durability: WAL with synchronous=FULL, so a write is fsynced before it is acknowledged. Writes
 * that arrive in the same turn of the event loop commit together in one transaction (group
 * commit), each still with its own revision and compare-and-swap check. This process is the only
 * writer — the database is opened with an exclusive lock — so watchers are fed from the committed
 * batch in memory and never poll the disk; only a watch that starts in the past reads history.
 */
import Database from 'better-sqlite3';
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

export interface SqliteStoreOptions {
  /** Database file; created with its directory's permissions when missing. */
  path: string;
  /** Events a watcher may fall behind before it is dropped with WatchTooSlow. */
  maxWatchBuffered?: number;
  /** History rows a replaying watcher reads per step. */
  replayPageSize?: number;
}

interface Row {
  revision: number;
  key: string;
  deleted: 0 | 1;
  create_revision: number;
  prev_revision: number;
  value: string;
}

interface HistoryRow extends Row {
  prev_value: string | null;
  prev_create_revision: number | null;
}

type WriteOp =
  | { kind: 'create'; key: string; value: string }
  | { kind: 'update'; key: string; value: string; expected: number }
  | { kind: 'delete'; key: string; expected: number | undefined };

interface PendingWrite {
  op: WriteOp;
  resolve: (kv: KeyValue) => void;
  reject: (err: unknown) => void;
}

/** Upper bound of a prefix range: greater than any key that starts with the prefix. */
const maxCodePoint = '\u{10FFFF}';
const compactionChunk = 5000;

function toKv(row: Pick<Row, 'key' | 'value' | 'create_revision' | 'revision'>): KeyValue {
  return { key: row.key, value: row.value, createRevision: row.create_revision, modRevision: row.revision };
}

export class SqliteStore implements Store {
  readonly backend = 'sqlite' as const;
  private readonly db: Database.Database;
  private readonly statements: ReturnType<typeof prepare>;
  private revision: number;
  private compacted: number;
  private pending: PendingWrite[] = [];
  private flushScheduled = false;
  private readonly watchers = new Set<SqliteWatcher>();
  private closed = false;
  readonly maxWatchBuffered: number;
  readonly replayPageSize: number;

  constructor(options: SqliteStoreOptions) {
    this.maxWatchBuffered = options.maxWatchBuffered ?? defaultMaxBuffered;
    this.replayPageSize = options.replayPageSize ?? 1000;
    // No busy wait: the exclusive lock means a busy database is another process's, for good.
    this.db = new Database(options.path, { timeout: 0 });
    try {
      // Exclusive locking must precede the switch to WAL; it keeps a second process out.
      this.db.pragma('locking_mode = EXCLUSIVE');
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = FULL');
      this.db.exec(`
        CREATE TABLE IF NOT EXISTS kv (
          revision INTEGER PRIMARY KEY,
          key TEXT NOT NULL,
          deleted INTEGER NOT NULL,
          create_revision INTEGER NOT NULL,
          prev_revision INTEGER NOT NULL,
          value TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS kv_key_revision ON kv (key, revision);
        CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
      `);
    } catch (err) {
      this.db.close();
      if ((err as { code?: string }).code === 'SQLITE_BUSY') {
        throw new LoamError('Unavailable', `store ${options.path} is in use by another process`, {
          cause: err,
        });
      }
      throw err;
    }
    this.statements = prepare(this.db);
    this.compacted = (this.statements.getMeta.get('compacted') as { value: number } | undefined)?.value ?? 0;
    const maxRow = (this.statements.maxRevision.get() as { max: number | null }).max ?? 0;
    // Compaction may have removed the newest rows (tombstones); revisions must never be reused.
    this.revision = Math.max(maxRow, this.compacted);
  }

  async currentRevision(): Promise<number> {
    this.assertOpen();
    return this.revision;
  }

  async get(key: string): Promise<KeyValue | undefined> {
    this.assertOpen();
    const row = this.statements.latest.get(key) as Row | undefined;
    return row && !row.deleted ? toKv(row) : undefined;
  }

  async list(prefix: string, options: ListOptions = {}): Promise<ListResult> {
    this.assertOpen();
    const token = options.continue ? decodeContinue(prefix, options.continue) : undefined;
    const revision = token?.rev ?? options.revision ?? this.revision;
    if (revision < this.compacted) throw compactedError(revision, this.compacted);
    if (revision > this.revision) {
      throw new LoamError('BadRequest', `revision ${revision} is newer than the store (${this.revision})`);
    }
    const limit = options.limit && options.limit > 0 ? options.limit : -1;
    const params = {
      lo: token?.after ?? prefix,
      hi: prefix + maxCodePoint,
      rev: revision,
      limit: limit === -1 ? -1 : limit + 1,
    };
    const rows = (token ? this.statements.listAfter : this.statements.listFrom).all(params) as Row[];
    const result: ListResult = { items: rows.slice(0, limit === -1 ? undefined : limit).map(toKv), revision };
    if (limit !== -1 && rows.length > limit) {
      result.continue = encodeContinue({ rev: revision, after: (rows[limit - 1] as Row).key });
    }
    return result;
  }

  async create(key: string, value: string): Promise<KeyValue> {
    return this.enqueue({ kind: 'create', key, value });
  }

  async update(key: string, value: string, expectedRevision: number): Promise<KeyValue> {
    checkExpectedRevision(expectedRevision);
    return this.enqueue({ kind: 'update', key, value, expected: expectedRevision });
  }

  async delete(key: string, expectedRevision?: number): Promise<KeyValue> {
    if (expectedRevision !== undefined) checkExpectedRevision(expectedRevision);
    return this.enqueue({ kind: 'delete', key, expected: expectedRevision });
  }

  async watch(prefix: string, afterRevision: number): Promise<Watch> {
    this.assertOpen();
    if (afterRevision < this.compacted) throw compactedError(afterRevision, this.compacted);
    const watcher = new SqliteWatcher(this, prefix, afterRevision);
    this.watchers.add(watcher);
    watcher.scheduleReplay();
    return watcher.queue;
  }

  async compact(revision: number): Promise<void> {
    this.assertOpen();
    if (revision > this.revision) {
      throw new LoamError(
        'BadRequest',
        `cannot compact to ${revision}: newer than the store (${this.revision})`,
      );
    }
    if (revision <= this.compacted) return;
    // Publish the new floor first: from here on, reads and replays below it fail with Compacted.
    this.compacted = revision;
    this.statements.setMeta.run('compacted', revision);
    const min = (this.statements.minRevision.get() as { min: number | null }).min ?? revision;
    for (let lo = min - 1; lo < revision && !this.closed; lo += compactionChunk) {
      this.statements.compactRange.run({ lo, hi: Math.min(lo + compactionChunk, revision), c: revision });
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    for (const watcher of [...this.watchers]) watcher.queue.close();
    this.db.close();
  }

  /** Rows after `afterRevision` under the prefix, oldest first, for replaying watchers. */
  historyPage(prefix: string, afterRevision: number, limit: number): HistoryRow[] {
    return this.statements.history.all({
      after: afterRevision,
      lo: prefix,
      hi: prefix + maxCodePoint,
      limit,
    }) as HistoryRow[];
  }

  get compactedRevision(): number {
    return this.compacted;
  }

  get headRevision(): number {
    return this.revision;
  }

  forgetWatcher(watcher: SqliteWatcher): void {
    this.watchers.delete(watcher);
  }

  private assertOpen(): void {
    if (this.closed) throw new LoamError('Closed', 'store is closed');
  }

  private enqueue(op: WriteOp): Promise<KeyValue> {
    this.assertOpen();
    return new Promise((resolve, reject) => {
      this.pending.push({ op, resolve, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** Commits every pending write in one transaction, then answers the writers and feeds watchers. */
  private flush(): void {
    this.flushScheduled = false;
    const batch = this.pending;
    this.pending = [];
    if (batch.length === 0 || this.closed) {
      for (const write of batch) write.reject(new LoamError('Closed', 'store is closed'));
      return;
    }
    const startRevision = this.revision;
    const outcomes: Array<{ event: WatchEvent } | { error: LoamError }> = [];
    try {
      this.db.transaction(() => {
        for (const write of batch) outcomes.push(this.apply(write.op));
      })();
    } catch (err) {
      this.revision = startRevision;
      for (const write of batch) {
        write.reject(
          new LoamError('Unavailable', `sqlite write failed: ${(err as Error).message}`, { cause: err }),
        );
      }
      return;
    }
    batch.forEach((write, i) => {
      const outcome = outcomes[i] as (typeof outcomes)[number];
      if ('error' in outcome) write.reject(outcome.error);
      else write.resolve(outcome.event.kv);
    });
    for (const outcome of outcomes) {
      if ('event' in outcome) for (const watcher of this.watchers) watcher.deliver(outcome.event);
    }
  }

  /** One write inside the batch transaction; a failed check is an outcome, not a rollback. */
  private apply(op: WriteOp): { event: WatchEvent } | { error: LoamError } {
    const latest = this.statements.latest.get(op.key) as Row | undefined;
    const live = latest && !latest.deleted ? latest : undefined;
    if (op.kind === 'create') {
      if (live) return { error: new LoamError('AlreadyExists', `key ${op.key} already exists`) };
      const revision = this.append(op.key, false, undefined, op.value);
      return {
        event: {
          type: 'put',
          kv: { key: op.key, value: op.value, createRevision: revision, modRevision: revision },
        },
      };
    }
    if (!live) return { error: new LoamError('NotFound', `key ${op.key} not found`) };
    if (op.expected !== undefined && live.revision !== op.expected) {
      return {
        error: new LoamError('Conflict', `key ${op.key} is at revision ${live.revision}, not ${op.expected}`),
      };
    }
    if (op.kind === 'update') {
      const revision = this.append(op.key, false, live, op.value);
      const kv = {
        key: op.key,
        value: op.value,
        createRevision: live.create_revision,
        modRevision: revision,
      };
      return { event: { type: 'put', kv, prev: toKv(live) } };
    }
    const revision = this.append(op.key, true, live, live.value);
    return { event: { type: 'delete', kv: { ...toKv(live), modRevision: revision } } };
  }

  private append(key: string, deleted: boolean, prev: Row | undefined, value: string): number {
    const revision = ++this.revision;
    this.statements.insert.run({
      revision,
      key,
      deleted: deleted ? 1 : 0,
      create_revision: prev?.create_revision ?? revision,
      prev_revision: prev?.revision ?? 0,
      value,
    });
    return revision;
  }
}

function prepare(db: Database.Database) {
  const latestPerKey = `
    SELECT kv.* FROM kv JOIN (
      SELECT MAX(revision) AS revision FROM kv
      WHERE key %OP% @lo AND key < @hi AND revision <= @rev GROUP BY key
    ) latest USING (revision)
    WHERE kv.deleted = 0 ORDER BY kv.key LIMIT @limit`;
  return {
    latest: db.prepare('SELECT * FROM kv WHERE key = ? ORDER BY revision DESC LIMIT 1'),
    listFrom: db.prepare(latestPerKey.replace('%OP%', '>=')),
    listAfter: db.prepare(latestPerKey.replace('%OP%', '>')),
    history: db.prepare(`
      SELECT kv.*, p.value AS prev_value, p.create_revision AS prev_create_revision
      FROM kv LEFT JOIN kv p ON p.revision = kv.prev_revision
      WHERE kv.revision > @after AND kv.key >= @lo AND kv.key < @hi
      ORDER BY kv.revision LIMIT @limit`),
    insert: db.prepare(`
      INSERT INTO kv (revision, key, deleted, create_revision, prev_revision, value)
      VALUES (@revision, @key, @deleted, @create_revision, @prev_revision, @value)`),
    // A row at or below the compaction revision goes when it is a tombstone or a newer version
    // of its key at or below that revision exists: the state at the compaction revision survives.
    compactRange: db.prepare(`
      DELETE FROM kv WHERE revision > @lo AND revision <= @hi AND (deleted = 1 OR EXISTS (
        SELECT 1 FROM kv newer WHERE newer.key = kv.key AND newer.revision > kv.revision AND newer.revision <= @c))`),
    maxRevision: db.prepare('SELECT MAX(revision) AS max FROM kv'),
    minRevision: db.prepare('SELECT MIN(revision) AS min FROM kv'),
    getMeta: db.prepare('SELECT value FROM meta WHERE name = ?'),
    setMeta: db.prepare(
      'INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value',
    ),
  };
}

/** One watch: replays history page by page while it lags, then takes live events from commits. */
class SqliteWatcher {
  readonly queue: WatchQueue;
  /** Every event up to this revision has been queued (or did not match). */
  private cursor: number;
  private live = false;
  private replayScheduled = false;

  constructor(
    private readonly store: SqliteStore,
    private readonly prefix: string,
    afterRevision: number,
  ) {
    this.cursor = afterRevision;
    this.queue = new WatchQueue(
      () => store.forgetWatcher(this),
      () => this.scheduleReplay(),
      store.maxWatchBuffered,
    );
  }

  scheduleReplay(): void {
    if (this.live || this.replayScheduled || this.queue.closed) return;
    this.replayScheduled = true;
    setImmediate(() => {
      this.replayScheduled = false;
      this.replayPage();
    });
  }

  deliver(event: WatchEvent): void {
    if (!this.live || event.kv.modRevision <= this.cursor || !event.kv.key.startsWith(this.prefix)) return;
    this.cursor = event.kv.modRevision;
    this.queue.push(event);
  }

  private replayPage(): void {
    if (this.queue.closed) return;
    if (this.cursor < this.store.compactedRevision) {
      this.queue.fail(compactedError(this.cursor, this.store.compactedRevision));
      return;
    }
    const pageSize = this.store.replayPageSize;
    const rows = this.store.historyPage(this.prefix, this.cursor, pageSize);
    for (const row of rows) {
      this.queue.push(historyEvent(row));
      this.cursor = row.revision;
    }
    if (rows.length < pageSize) {
      // Caught up with the last commit (reads and commits never interleave): follow live from here.
      this.cursor = Math.max(this.cursor, this.store.headRevision);
      this.live = true;
    } else if (this.queue.buffered < pageSize) {
      this.scheduleReplay();
    }
    // Otherwise the queue's drain callback resumes the replay.
  }
}

function historyEvent(row: HistoryRow): WatchEvent {
  if (row.deleted) return { type: 'delete', kv: toKv(row) };
  const event: WatchEvent = { type: 'put', kv: toKv(row) };
  if (row.prev_value !== null && row.prev_create_revision !== null) {
    event.prev = {
      key: row.key,
      value: row.prev_value,
      createRevision: row.prev_create_revision,
      modRevision: row.prev_revision,
    };
  }
  return event;
}
