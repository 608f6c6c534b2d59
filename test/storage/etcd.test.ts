import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { EtcdStore } from '../../controllers/storage/index.js';
import { EtcdServer } from '../harness/etcd.js';
import { describeStoreConformance, take } from './conformance.js';

{
  let etcd: EtcdServer;
  let store: EtcdStore;
  describeStoreConformance(
    'etcd',
    async () => {
      etcd = await EtcdServer.start();
      store = new EtcdStore({ endpoints: [etcd.endpoint], keyPrefix: '/loam-test' });
      return store;
    },
    async () => {
      await store?.close();
      await etcd?.destroy();
    },
  );
}

describe('etcd store', function () {
  this.timeout(120_000);
  let etcd: EtcdServer;
  before(async () => {
    etcd = await EtcdServer.start();
  });
  after(async () => etcd?.destroy());

  it('releases its connections on close, so a process that watched can exit', async () => {
    // In a child process: a watch stream etcd has not ended yet would keep it alive.
    const storeModule = new URL('../../controllers/storage/index.js', import.meta.url).href;
    const script = `
      const { openStore } = await import(${JSON.stringify(storeModule)});
      const store = openStore({ backend: 'etcd', endpoints: [${JSON.stringify(etcd.endpoint)}] });
      const watch = await store.watch('/exit-test/', await store.currentRevision());
      await store.create('/exit-test/' + Date.now(), 'x');
      for await (const event of watch) break;
      await store.close();`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: 'ignore' });
    const exited = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 10_000);
      child.once('exit', (code) => {
        clearTimeout(timer);
        resolve(code === 0);
      });
    });
    if (!exited) child.kill('SIGKILL');
    assert.ok(exited, 'the process exits by itself, successfully, after store.close()');
  });

  it('resumes a watch after etcd restarts, from the next revision, without gaps or duplicates', async () => {
    const store = new EtcdStore({ endpoints: [etcd.endpoint], requestTimeoutMs: 2000 });
    const p = `/${randomUUID()}/`;
    const watch = await store.watch(p, await store.currentRevision());
    await store.create(`${p}1`, 'before');
    assert.equal((await take(watch, 1))[0]?.kv.value, 'before');
    await etcd.kill();
    await etcd.restart();
    const written: number[] = [];
    for (let i = 2; i <= 4; i++) written.push((await store.create(`${p}${i}`, 'after')).modRevision);
    const events = await take(watch, 3);
    assert.deepEqual(
      events.map((e) => e.kv.modRevision),
      written,
    );
    watch.close();
    await store.close();
  });
});
