import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore, startCompactor } from '../../controllers/storage/index.js';
import { describeStoreConformance, rejectsWith, take } from './conformance.js';

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'loam-sqlite-'));
}

{
  let dir: string;
  let store: SqliteStore;
  describeStoreConformance(
    'sqlite',
    async () => {
      dir = tempDir();
      // Small replay pages so the history-to-live handover is crossed many times.
      store = new SqliteStore({ path: join(dir, 'loam.db'), replayPageSize: 7 });
      return store;
    },
    async () => {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  );
}

describe('sqlite store', () => {
  let dir: string;
  beforeEach(() => {
    dir = tempDir();
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('keeps data and revision across reopen, and never reuses a revision after compaction', async () => {
    const path = join(dir, 'loam.db');
    let store = new SqliteStore({ path });
    await store.create('/k/a', '1');
    await store.create('/k/b', '2');
    const del = await store.delete('/k/b');
    await store.compact(del.modRevision); // removes the tombstone, the newest row
    await store.close();
    store = new SqliteStore({ path });
    assert.equal(await store.currentRevision(), del.modRevision);
    assert.equal((await store.get('/k/a'))?.value, '1');
    const next = await store.create('/k/c', '3');
    assert.equal(next.modRevision, del.modRevision + 1);
    await rejectsWith(store.watch('/k/', 1), 'Compacted');
    await store.close();
  });

  it('refuses a second process (or handle) on the same database', async () => {
    const path = join(dir, 'loam.db');
    const store = new SqliteStore({ path });
    await store.create('/k', 'v');
    assert.throws(
      () => new SqliteStore({ path }),
      (err: Error) => /in use by another process/.test(err.message),
    );
    await store.close();
  });

  it('drops a watcher that falls too far behind with WatchTooSlow', async () => {
    const store = new SqliteStore({ path: join(dir, 'loam.db'), maxWatchBuffered: 10 });
    const watch = await store.watch('/k/', 0);
    await Promise.all(Array.from({ length: 50 }, (_, i) => store.create(`/k/${i}`, 'v')));
    await assert.rejects(
      (async () => {
        for await (const _ of watch);
      })(),
      /fell more than 10 events behind/,
    );
    await store.close();
  });

  it('compacts periodically, keeping the newest history', async () => {
    const store = new SqliteStore({ path: join(dir, 'loam.db') });
    let kv = await store.create('/k', '0');
    for (let i = 1; i < 50; i++) kv = await store.update('/k', String(i), kv.modRevision);
    const compactor = startCompactor(store, { keepRevisions: 10, intervalMs: 3_600_000 });
    assert.equal(await compactor.runOnce(), 40);
    assert.equal(await compactor.runOnce(), undefined, 'nothing new to compact');
    compactor.stop();
    await rejectsWith(store.watch('/', 39), 'Compacted');
    const watch = await store.watch('/', 40);
    assert.deepEqual(
      (await take(watch, 10)).map((e) => e.kv.value),
      ['40', '41', '42', '43', '44', '45', '46', '47', '48', '49'],
    );
    await store.close();
  });

  it('answers writes made after close with Closed', async () => {
    const store = new SqliteStore({ path: join(dir, 'loam.db') });
    await store.close();
    await rejectsWith(store.create('/k', 'v'), 'Closed');
  });
});
