/**
 * Child process for the crash-durability tests: writes as fast as it can with several concurrent
 * writers and prints `<key> <revision>` for every acknowledged write, until it is killed (or, as a
 * bound, after 60 s). Usage: crash-writer.js sqlite PATH | etcd ENDPOINT
 */
import { openStore, type Store } from '../../controllers/storage/index.js';

const [backend, target] = process.argv.slice(2);
const store: Store =
  backend === 'sqlite'
    ? openStore({ backend: 'sqlite', path: target as string })
    : openStore({ backend: 'etcd', endpoints: [target as string], requestTimeoutMs: 1000 });

const deadline = Date.now() + 60_000;
let next = 0;
await Promise.all(
  Array.from({ length: 8 }, async () => {
    while (Date.now() < deadline) {
      const key = `/crash/${next++}`;
      try {
        const kv = await store.create(key, `value of ${key}`);
        process.stdout.write(`${key} ${kv.modRevision}\n`);
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 10)); // etcd down: keep trying until killed
      }
    }
  }),
);
process.exit(0);
