/**
 * The store conformance suite: the same behaviour, checked unchanged against every backend.
 * Each test works under its own key prefix, so one store instance serves the whole suite.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { KeyValue, Store, Watch, WatchEvent } from '../../controllers/storage/index.js';
import { isLoamError } from '../../crds/errors.js';

/** Reads exactly `count` events, failing if they do not arrive before the deadline. */
export async function take(watch: Watch, count: number, timeoutMs = 30_000): Promise<WatchEvent[]> {
  const events: WatchEvent[] = [];
  if (count === 0) return events;
  const iterator = watch[Symbol.asyncIterator]();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${timeoutMs} ms with ${events.length}/${count} events`)),
      timeoutMs,
    );
  });
  try {
    while (events.length < count) {
      const next = await Promise.race([iterator.next(), timeout]);
      if (next.done) throw new Error(`watch ended after ${events.length}/${count} events`);
      events.push(next.value);
    }
  } finally {
    clearTimeout(timer);
  }
  return events;
}

export async function rejectsWith(
  promise: Promise<unknown>,
  code: Parameters<typeof isLoamError>[1],
): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isLoamError(err, code), `expected LoamError ${code}, got ${String(err)}`);
    return true;
  });
}

export function describeStoreConformance(
  backend: string,
  open: () => Promise<Store>,
  close: () => Promise<void>,
): void {
  describe(`store conformance: ${backend}`, function () {
    this.timeout(120_000);
    let store: Store;
    let p: string;

    before(async () => {
      store = await open();
    });
    after(async () => {
      await close();
    });
    beforeEach(() => {
      p = `/conformance/${randomUUID()}/`;
    });

    it('creates, reads and refuses to create twice', async () => {
      const kv = await store.create(`${p}a`, 'one');
      assert.equal(kv.createRevision, kv.modRevision);
      assert.deepEqual(await store.get(`${p}a`), kv);
      assert.equal(await store.currentRevision(), kv.modRevision);
      await rejectsWith(store.create(`${p}a`, 'two'), 'AlreadyExists');
      assert.equal((await store.get(`${p}a`))?.value, 'one');
      assert.equal(await store.get(`${p}missing`), undefined);
    });

    it('updates only at the expected revision (compare-and-swap)', async () => {
      const created = await store.create(`${p}a`, 'v1');
      const updated = await store.update(`${p}a`, 'v2', created.modRevision);
      assert.ok(updated.modRevision > created.modRevision);
      assert.equal(updated.createRevision, created.createRevision);
      await rejectsWith(store.update(`${p}a`, 'stale', created.modRevision), 'Conflict');
      assert.equal((await store.get(`${p}a`))?.value, 'v2');
      await rejectsWith(store.update(`${p}missing`, 'x', 1), 'NotFound');
    });

    it('lets exactly one of many racing writers win a compare-and-swap', async () => {
      const created = await store.create(`${p}a`, 'start');
      const results = await Promise.allSettled(
        Array.from({ length: 8 }, (_, i) => store.update(`${p}a`, `w${i}`, created.modRevision)),
      );
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
      for (const r of results) if (r.status === 'rejected') assert.ok(isLoamError(r.reason, 'Conflict'));
    });

    it('deletes only at the expected revision and returns the last value', async () => {
      const created = await store.create(`${p}a`, 'v1');
      const updated = await store.update(`${p}a`, 'v2', created.modRevision);
      await rejectsWith(store.delete(`${p}a`, created.modRevision), 'Conflict');
      const deleted = await store.delete(`${p}a`, updated.modRevision);
      assert.equal(deleted.value, 'v2');
      assert.ok(deleted.modRevision > updated.modRevision);
      assert.equal(await store.get(`${p}a`), undefined);
      await rejectsWith(store.delete(`${p}a`), 'NotFound');
      const again = await store.create(`${p}a`, 'v3');
      assert.equal(again.createRevision, again.modRevision, 'a re-created key starts a new incarnation');
    });

    it('lists by prefix in key order, and only that prefix', async () => {
      for (const k of ['b', 'a', 'c']) await store.create(`${p}x/${k}`, k);
      await store.create(`${p}xy/z`, 'sibling prefix');
      const res = await store.list(`${p}x/`);
      assert.deepEqual(
        res.items.map((kv) => kv.value),
        ['a', 'b', 'c'],
      );
      assert.equal(res.continue, undefined);
      assert.ok(res.revision >= (res.items[2] as KeyValue).modRevision);
    });

    it('paginates with continue tokens that stay consistent while writes happen', async () => {
      const before = new Map<string, string>();
      for (let i = 0; i < 25; i++) {
        const key = `${p}k${String(i).padStart(2, '0')}`;
        await store.create(key, `v${i}`);
        before.set(key, `v${i}`);
      }
      const first = await store.list(p, { limit: 10 });
      assert.equal(first.items.length, 10);
      assert.ok(first.continue);
      // Changes after the first page must not show in the later pages.
      await store.create(`${p}k99`, 'late');
      await store.create(`${p}k10a`, 'late');
      const k15 = (await store.get(`${p}k15`)) as KeyValue;
      await store.update(k15.key, 'changed', k15.modRevision);
      await store.delete(`${p}k20`);
      const seen = [...first.items];
      let token: string | undefined = first.continue;
      for (let pages = 0; token && pages < 10; pages++) {
        const page = await store.list(p, { limit: 10, continue: token });
        assert.equal(page.revision, first.revision);
        seen.push(...page.items);
        token = page.continue;
      }
      assert.equal(token, undefined);
      assert.deepEqual(new Map(seen.map((kv) => [kv.key, kv.value])), before);
      const now = await store.list(p);
      assert.equal(now.items.length, 26);
      assert.equal((await store.list(p, { revision: first.revision })).items.length, 25);
    });

    it('rejects a continue token from another prefix', async () => {
      for (let i = 0; i < 3; i++) await store.create(`${p}a/${i}`, 'x');
      const page = await store.list(`${p}a/`, { limit: 1 });
      await rejectsWith(store.list(`${p}b/`, { continue: page.continue as string }), 'BadRequest');
    });

    it('delivers every change of 4 concurrent writers x 500 updates to each watcher exactly once, in order', async () => {
      const writers = 4;
      const updates = 500;
      const start = await store.currentRevision();
      const watches = await Promise.all(Array.from({ length: 3 }, () => store.watch(p, start)));
      const acked: number[] = [];
      await Promise.all(
        Array.from({ length: writers }, async (_, w) => {
          let kv = await store.create(`${p}w${w}`, '0');
          acked.push(kv.modRevision);
          for (let i = 1; i < updates; i++) {
            kv = await store.update(kv.key, String(i), kv.modRevision);
            acked.push(kv.modRevision);
          }
        }),
      );
      acked.sort((a, b) => a - b);
      for (const watch of watches) {
        const events = await take(watch, writers * updates);
        const revisions = events.map((e) => e.kv.modRevision);
        assert.deepEqual(revisions, acked, 'every acknowledged revision once, in order');
        for (let w = 0; w < writers; w++) {
          const values = events.filter((e) => e.kv.key === `${p}w${w}`).map((e) => e.kv.value);
          assert.deepEqual(
            values,
            Array.from({ length: updates }, (_, i) => String(i)),
          );
        }
        watch.close();
      }
    });

    it('replays history from a past revision, then follows live changes', async () => {
      const start = await store.currentRevision();
      const a = await store.create(`${p}a`, '1');
      await store.update(`${p}a`, '2', a.modRevision);
      await store.create(`${p}b`, '1');
      await store.delete(`${p}a`);
      const watch = await store.watch(p, start);
      await store.create(`${p}c`, 'live');
      const events = await take(watch, 5);
      watch.close();
      assert.deepEqual(
        events.map((e) => [e.type, e.kv.key.slice(p.length), e.kv.value]),
        [
          ['put', 'a', '1'],
          ['put', 'a', '2'],
          ['put', 'b', '1'],
          ['delete', 'a', '2'],
          ['put', 'c', 'live'],
        ],
      );
      const [, update] = events;
      assert.ok(update?.type === 'put' && update.prev?.value === '1', 'an update carries the previous value');
    });

    it('watches only its prefix and starts strictly after the given revision', async () => {
      await store.create(`${p}a/1`, 'before');
      const from = await store.currentRevision();
      const watch = await store.watch(`${p}a/`, from);
      await store.create(`${p}ab/1`, 'sibling');
      await store.create(`${p}b/1`, 'other');
      await store.create(`${p}a/2`, 'mine');
      const [event] = await take(watch, 1);
      watch.close();
      assert.equal(event?.kv.key, `${p}a/2`);
    });

    it('feeds many watchers at once', async () => {
      const start = await store.currentRevision();
      const watches = await Promise.all(Array.from({ length: 100 }, () => store.watch(p, start)));
      for (let i = 0; i < 20; i++) await store.create(`${p}${i}`, String(i));
      const all = await Promise.all(watches.map((w) => take(w, 20)));
      for (const events of all) {
        assert.deepEqual(
          events.map((e) => e.kv.value),
          Array.from({ length: 20 }, (_, i) => String(i)),
        );
      }
      for (const w of watches) w.close();
    });

    it('fails watches and lists below the compacted revision, and keeps the state at it', async () => {
      const start = await store.currentRevision();
      let kv = await store.create(`${p}a`, '0');
      for (let i = 1; i <= 5; i++) kv = await store.update(kv.key, String(i), kv.modRevision);
      await store.create(`${p}gone`, 'x');
      await store.delete(`${p}gone`);
      const compactAt = await store.currentRevision();
      await store.create(`${p}after`, 'y');
      await store.compact(compactAt);
      await rejectsWith(store.watch(p, start), 'Compacted');
      await rejectsWith(store.list(p, { revision: start }), 'Compacted');
      const atCompaction = await store.list(p, { revision: compactAt });
      assert.deepEqual(
        atCompaction.items.map((i) => [i.key.slice(p.length), i.value]),
        [['a', '5']],
      );
      const watch = await store.watch(p, compactAt);
      const [event] = await take(watch, 1);
      watch.close();
      assert.equal(event?.kv.key, `${p}after`);
      assert.equal((await store.get(`${p}a`))?.value, '5');
    });

    it('ends iteration when a watch is closed', async () => {
      const watch = await store.watch(p, await store.currentRevision());
      const pending = watch[Symbol.asyncIterator]().next();
      watch.close();
      assert.deepEqual(await pending, { value: undefined, done: true });
    });
  });
}
