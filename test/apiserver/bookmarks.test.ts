/**
 * Watch bookmarks: with allowWatchBookmarks, a watch is told now and then how far it has seen,
 * including past changes its selector filtered out, so a client resuming from a bookmark neither
 * misses anything nor replays history it does not need.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { Resources } from '../../controllers/apiserver/resources.js';
import { openStore } from '../../controllers/storage/index.js';
import { namespaceKind } from '../../crds/builtin.js';
import { networkKind } from '../../crds/v1alpha1/index.js';
import { tempDir } from '../harness/plane.js';
import { pollUntil } from '../harness/poll.js';

describe('watch bookmarks', () => {
  it('carry the revision of the last change seen, filtered ones included', async () => {
    const dir = tempDir('bookmarks');
    const store = openStore({ backend: 'sqlite', path: join(dir, 'loam.db') });
    const resources = new Resources(store, undefined, 20);
    const abort = new AbortController();
    try {
      await resources.create(
        { type: 'resource', kind: namespaceKind, verb: 'create' },
        { metadata: { name: 'default' } },
      );
      const req = { type: 'resource' as const, kind: networkKind, namespace: 'default' };
      const network = (name: string, labels: Record<string, string>) => ({
        apiVersion: 'loam.dev/v1alpha1',
        kind: 'Network',
        metadata: { name, labels },
        spec: { cidr: '10.1.0.0/24' },
      });
      const start = await resources.create({ ...req, verb: 'create' }, network('a', { app: 'x' }));
      const events: { type: string; rv: string }[] = [];
      const query = new URLSearchParams({
        allowWatchBookmarks: 'true',
        labelSelector: 'app=x',
        resourceVersion: start.metadata.resourceVersion as string,
      });
      const watching = resources.watch(
        { ...req, verb: 'watch' },
        query,
        {
          send: (type, object) =>
            events.push({
              type,
              rv: (object as { metadata: { resourceVersion: string } }).metadata.resourceVersion,
            }),
        },
        abort.signal,
      );
      const hidden = await resources.create({ ...req, verb: 'create' }, network('b', { app: 'y' }));
      await pollUntil(
        () => events.some((e) => e.type === 'BOOKMARK' && e.rv === hidden.metadata.resourceVersion),
        {
          timeoutMs: 5000,
          what: 'a bookmark at the filtered-out create',
        },
      );
      assert.deepEqual(
        events.filter((e) => e.type !== 'BOOKMARK'),
        [],
        'the filtered-out object itself is not sent',
      );
      abort.abort();
      await watching;
    } finally {
      abort.abort();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
