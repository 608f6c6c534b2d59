/**
 * Crash durability: every write a store acknowledged survives SIGKILL — of the process using the
 * embedded SQLite store, or of etcd itself.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openStore, type Store } from '../../controllers/storage/index.js';
import { EtcdServer } from '../harness/etcd.js';
import { pollUntil } from '../harness/poll.js';

const writerScript = fileURLToPath(new URL('./crash-writer.js', import.meta.url));

/** Runs the writer and collects the writes it reports as acknowledged. */
function startWriter(args: string[]): {
  child: ChildProcess;
  acked: Map<string, number>;
  exited: Promise<void>;
} {
  const child = spawn(process.execPath, [writerScript, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const acked = new Map<string, number>();
  let partial = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    const lines = (partial + chunk.toString()).split('\n');
    partial = lines.pop() ?? ''; // a line cut by the kill was never fully reported: not counted
    for (const line of lines) {
      const [key, revision] = line.split(' ');
      acked.set(key as string, Number(revision));
    }
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return { child, acked, exited };
}

async function assertAllPresent(store: Store, acked: Map<string, number>): Promise<void> {
  const { items } = await store.list('/crash/');
  const stored = new Map(items.map((kv) => [kv.key, kv.modRevision]));
  const lost = [...acked].filter(([key, revision]) => stored.get(key) !== revision);
  assert.deepEqual(lost, [], `${lost.length} of ${acked.size} acknowledged writes lost`);
}

describe('crash durability', function () {
  this.timeout(120_000);

  it('sqlite: every acknowledged write survives SIGKILL of the writing process', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'loam-crash-'));
    try {
      const path = join(dir, 'loam.db');
      const writer = startWriter(['sqlite', path]);
      await pollUntil(() => writer.acked.size >= 2000 || writer.child.exitCode !== null, {
        timeoutMs: 60_000,
        what: '2000 acknowledged writes',
      });
      writer.child.kill('SIGKILL');
      await writer.exited;
      assert.ok(writer.acked.size >= 2000, `writer exited early after ${writer.acked.size} writes`);
      const store = openStore({ backend: 'sqlite', path });
      await assertAllPresent(store, writer.acked);
      await store.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('etcd: every acknowledged write survives SIGKILL of etcd', async () => {
    const etcd = await EtcdServer.start();
    try {
      const writer = startWriter(['etcd', etcd.endpoint]);
      await pollUntil(() => writer.acked.size >= 500 || writer.child.exitCode !== null, {
        timeoutMs: 60_000,
        what: '500 acknowledged writes',
      });
      await etcd.kill(); // mid-stream: writes in flight now fail or were acknowledged
      const ackedAtKill = writer.acked.size;
      writer.child.kill('SIGKILL');
      await writer.exited;
      assert.ok(ackedAtKill >= 500, `writer exited early after ${ackedAtKill} writes`);
      await etcd.restart();
      const store = openStore({ backend: 'etcd', endpoints: [etcd.endpoint] });
      await assertAllPresent(store, writer.acked);
      await store.close();
    } finally {
      await etcd.destroy();
    }
  });
});
