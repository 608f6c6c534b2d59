/**
 * Store benchmark: for the sqlite and etcd backends on this machine, throughput and p50/p99
 * latency of create, update, get and list(1k) with 1 and 16 concurrent clients, watch delivery
 * latency, and each backend's write throughput as a ratio of raw etcd3 puts against the same etcd
 * (the overhead of Loam's layer). Every run is bounded by an operation count and a time budget;
 * etcd is started on loopback with a temporary data dir.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { openStore, type Store } from '../../controllers/storage/index.js';
import { EtcdServer } from '../../test/harness/etcd.js';
import { budgetMs, maxOps, measure, type Result, row } from './measure.js';

const value = JSON.stringify({ kind: 'Instance', spec: { cpus: 2, memory: '2Gi', pad: 'x'.repeat(400) } });

async function benchStore(name: string, store: Store): Promise<Map<string, Result>> {
  const results = new Map<string, Result>();
  const record = (label: string, r: Result) => {
    results.set(label, r);
    console.log(row(`${name} ${label}`, r));
  };
  for (const clients of [1, 16]) {
    const p = `/bench/${clients}/`;
    const created = new Map<number, number>();
    record(
      `create c=${clients}`,
      await measure(clients, async (i) =>
        created.set(i, (await store.create(`${p}${i}`, value)).modRevision),
      ),
    );
    const keys = [...created.keys()];
    record(
      `update c=${clients}`,
      await measure(clients, async (i) => {
        const k = keys[i % keys.length] as number;
        // Each client owns distinct keys in turn, so the expected revision is its own last write.
        created.set(k, (await store.update(`${p}${k}`, value, created.get(k) as number)).modRevision);
      }),
    );
    record(`get c=${clients}`, await measure(clients, (i) => store.get(`${p}${keys[i % keys.length]}`)));
  }
  for (let i = 0; i < 1000; i++) await store.create(`/bench/list/${String(i).padStart(4, '0')}`, value);
  for (const clients of [1, 16]) {
    record(
      `list(1k) c=${clients}`,
      await measure(clients, async () => {
        const { items } = await store.list('/bench/list/');
        if (items.length !== 1000) throw new Error(`listed ${items.length}`);
      }),
    );
  }
  record('watch delivery', await watchLatency(store));
  return results;
}

/** Time from starting a write to its event arriving at a watcher, one write at a time. */
async function watchLatency(store: Store): Promise<Result> {
  const watch = await store.watch('/bench/watch/', await store.currentRevision());
  const iterator = watch[Symbol.asyncIterator]();
  const result = await measure(1, async (i) => {
    const [, event] = await Promise.all([store.create(`/bench/watch/${i}`, value), iterator.next()]);
    if (event.done) throw new Error('watch ended');
  });
  watch.close();
  return result;
}

async function rawEtcdPuts(endpoint: string): Promise<Map<string, Result>> {
  const client = new Etcd3({ hosts: endpoint });
  const results = new Map<string, Result>();
  for (const clients of [1, 16]) {
    const r = await measure(clients, (i) => client.put(`/raw/${clients}/${i}`).value(value).exec());
    results.set(`create c=${clients}`, r);
    console.log(row(`raw etcd3 put c=${clients}`, r));
  }
  client.close();
  return results;
}

const dir = mkdtempSync(join(tmpdir(), 'loam-bench-'));
const etcd = await EtcdServer.start();
try {
  console.log(`loam store benchmark (budget ${budgetMs} ms or ${maxOps} ops per row)\n`);
  const sqlite = openStore({ backend: 'sqlite', path: join(dir, 'bench.db') });
  const sqliteResults = await benchStore('sqlite', sqlite);
  await sqlite.close();
  console.log();
  const etcdStore = openStore({ backend: 'etcd', endpoints: [etcd.endpoint], keyPrefix: '/loam' });
  const etcdResults = await benchStore('etcd', etcdStore);
  await etcdStore.close();
  console.log();
  const raw = await rawEtcdPuts(etcd.endpoint);
  console.log('\nwrite throughput relative to raw etcd3 puts on the same etcd:');
  for (const label of ['create c=1', 'create c=16']) {
    const base = raw.get(label)?.opsPerSecond ?? Number.NaN;
    for (const [name, results] of [
      ['sqlite', sqliteResults],
      ['etcd', etcdResults],
    ] as const) {
      const ours = results.get(label)?.opsPerSecond ?? Number.NaN;
      console.log(`  ${name.padEnd(7)} ${label.padEnd(12)} ${(ours / base).toFixed(2)}x`);
    }
  }
} finally {
  await etcd.destroy();
  rmSync(dir, { recursive: true, force: true });
}
