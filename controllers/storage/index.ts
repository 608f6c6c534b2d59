/** Opens the configured store: the embedded SQLite file by default, etcd when endpoints are given. */
import { EtcdStore, type EtcdStoreOptions } from './etcd.js';
import { SqliteStore, type SqliteStoreOptions } from './sqlite.js';
import type { Store } from './store.js';

export type StoreConfig =
  | ({ backend: 'sqlite' } & SqliteStoreOptions)
  | ({ backend: 'etcd' } & EtcdStoreOptions);

export function openStore(config: StoreConfig): Store {
  return config.backend === 'sqlite' ? new SqliteStore(config) : new EtcdStore(config);
}

export { startCompactor } from './compactor.js';
export { EtcdStore } from './etcd.js';
export { SqliteStore } from './sqlite.js';
export type { KeyValue, ListOptions, ListResult, Store, Watch, WatchEvent } from './store.js';
