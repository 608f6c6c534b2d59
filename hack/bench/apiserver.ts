/**
 * API server benchmark: Loam's API server measured through HTTPS as clients use it, on the
 * embedded sqlite store and on etcd. For create, get, list(1k) and watch delivery, with 1 and 16
 * concurrent clients: throughput and p50/p99 latency, next to the store calls the same requests
 * come down to on the same backend and store (the API's overhead); then a paced open-loop run of
 * creates and gets at 200 requests/s on the embedded store, against the goal of p99 under 10 ms.
 *
 * The server runs in a worker thread with its own event loop (as `loam up` runs in its own
 * process), so the load generator does not share the server's loop; the store baselines run in
 * that worker too, on the server's store. Clients speak HTTP/2 over TLS with the admin client
 * certificate, one session per client, as kubectl and client-go do. Every row is bounded by an
 * operation count and a time budget; every request goes to 127.0.0.1.
 */
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { type ClientHttp2Session, type ClientHttp2Stream, connect, constants } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { pino } from 'pino';
import { adminGroup } from '../../controllers/apiserver/auth.js';
import { storageKey, storagePrefix } from '../../controllers/apiserver/routing.js';
import { ApiServer } from '../../controllers/apiserver/server.js';
import { generateKeyPair, issueCertificate } from '../../controllers/pki/certificates.js';
import { loadServingPki } from '../../controllers/pki/files.js';
import { openStore, type Store, type StoreConfig } from '../../controllers/storage/index.js';
import { servedKindFor, servedKinds } from '../../crds/builtin.js';
import type { KindInfo } from '../../crds/kind.js';
import { EtcdServer } from '../../test/harness/etcd.js';
import { budgetMs, maxOps, measure, type Result, row, summarize } from './measure.js';

const concurrency = [1, 16] as const;
const listSize = 1000;
/** Deadline of one request, and of one watch event after its create was sent. */
const requestTimeoutMs = 10_000;
const pacedRate = 200;
/** The paced run is longer than a row, so that its p99 rests on ~1000 samples of each verb. */
const pacedMs = 5 * budgetMs;
const goalMs = 10;
/**
 * How long the server worker may take to exit after closing. (EtcdStore.close() leaves the gRPC
 * socket of a once-watched client open, which would keep the worker alive.)
 */
const exitGraceMs = 2000;

const networkKind = servedKindFor('loam.dev', 'networks') as KindInfo;
const networksPath = (namespace: string) => `/apis/loam.dev/v1alpha1/namespaces/${namespace}/networks`;

/** crds/samples/network.yaml, under another name. */
function network(namespace: string, name: string) {
  return {
    apiVersion: 'loam.dev/v1alpha1',
    kind: 'Network',
    metadata: { name, namespace },
    spec: {
      cidr: '10.20.0.0/24',
      gateway: '10.20.0.1',
      dhcp: { rangeStart: '10.20.0.100', rangeEnd: '10.20.0.199', leaseTime: '12h' },
      egress: true,
      dns: ['10.20.0.1'],
      wireguard: { port: 51820, cidr: '10.99.0.0/24', endpoint: 'vpn.example.org:51820' },
    },
  };
}

interface Tls {
  certPem: string;
  keyPem: string;
  caPem: string;
}

// --- The server side: ApiServer and the store baselines, in a worker thread ---------------------

interface ServerData {
  config: StoreConfig;
  tls: Tls;
  tokenKeyPem: string;
}

/** Store calls run on the server's store, for the baseline rows. */
type Command =
  | { cmd: 'create'; clients: number; sampleKey: string }
  | { cmd: 'get'; clients: number; keys: string[] }
  | { cmd: 'list'; clients: number; prefix: string }
  | { cmd: 'watch'; clients: number; sampleKey: string }
  | { cmd: 'close' };

type Reply = { id: number; result?: Result; error?: string };

/** Resolves `wait(key)` with the time its event arrived; fails when none comes in time. */
class Arrivals {
  private readonly waiting = new Map<string, { resolve: (at: number) => void; reject: (e: Error) => void }>();
  private failure: Error | undefined;

  wait(key: string): Promise<number> {
    const arrival = new Promise<number>((resolve, reject) => {
      if (this.failure) return reject(this.failure);
      const timer = setTimeout(() => {
        this.waiting.delete(key);
        reject(new Error(`no watch event for ${key} within ${requestTimeoutMs} ms`));
      }, requestTimeoutMs);
      const settle = () => {
        clearTimeout(timer);
        this.waiting.delete(key);
      };
      this.waiting.set(key, {
        resolve: (at) => {
          settle();
          resolve(at);
        },
        reject: (err) => {
          settle();
          reject(err);
        },
      });
    });
    // Whoever waits sees the failure; a wait abandoned after a failed write must not crash the run.
    arrival.catch(() => {});
    return arrival;
  }

  arrived(key: string, at: number): void {
    this.waiting.get(key)?.resolve(at);
  }

  /** The watch broke: every wait, current and future, fails with `err`. */
  fail(err: Error): void {
    this.failure = err;
    for (const { reject } of [...this.waiting.values()]) reject(err);
  }
}

/** Delivery latency: from the start of the write of `keyOf(i)` to its watch event arriving. */
async function measureDelivery(
  clients: number,
  arrivals: Arrivals,
  keyOf: (i: number) => string,
  write: (i: number, client: number) => Promise<unknown>,
): Promise<Result> {
  const delivery: number[] = [];
  const r = await measure(clients, async (i, client) => {
    const arrived = arrivals.wait(keyOf(i));
    const t0 = performance.now();
    await write(i, client);
    delivery.push((await arrived) - t0);
  });
  return summarize(delivery, r.opsPerSecond);
}

async function storeCommand(store: Store, command: Command): Promise<Result | undefined> {
  const sample = async (key: string) => {
    const kv = await store.get(key);
    if (!kv) throw new Error(`${key} not found`);
    return kv.value;
  };
  switch (command.cmd) {
    case 'create': {
      // The same bytes the API server stored for a Network, under keys of its own.
      const value = await sample(command.sampleKey);
      return measure(command.clients, (i) => store.create(`/bench/create-${command.clients}/${i}`, value));
    }
    case 'get': {
      const { keys } = command;
      return measure(command.clients, async (i) => {
        if (!(await store.get(keys[i % keys.length] as string))) throw new Error('get found nothing');
      });
    }
    case 'list':
      return measure(command.clients, async () => {
        const { items } = await store.list(command.prefix);
        if (items.length !== listSize) throw new Error(`listed ${items.length}`);
      });
    case 'watch': {
      const value = await sample(command.sampleKey);
      const prefix = `/bench/watch-${command.clients}/`;
      const watch = await store.watch(prefix, await store.currentRevision());
      const arrivals = new Arrivals();
      const reading = (async () => {
        for await (const event of watch) arrivals.arrived(event.kv.key, performance.now());
      })().catch((err: Error) => arrivals.fail(err));
      try {
        return await measureDelivery(
          command.clients,
          arrivals,
          (i) => `${prefix}${i}`,
          (i) => store.create(`${prefix}${i}`, value),
        );
      } finally {
        watch.close();
        await reading;
      }
    }
    case 'close':
      return undefined;
  }
}

async function serveInWorker(data: ServerData): Promise<void> {
  const port = parentPort;
  if (!port) throw new Error('not a worker');
  const store = openStore(data.config);
  const server = await ApiServer.start({
    store,
    kinds: servedKinds,
    tls: data.tls,
    tokenKeyPem: data.tokenKeyPem,
    host: '127.0.0.1',
    port: 0,
    logger: pino({ level: 'silent' }),
  });
  port.on('message', async ({ id, command }: { id: number; command: Command }) => {
    const reply: Reply = { id };
    try {
      if (command.cmd === 'close') {
        await server.close();
        await store.close();
      } else {
        reply.result = await storeCommand(store, command);
      }
    } catch (err) {
      reply.error = (err as Error).stack ?? String(err);
    }
    port.postMessage(reply);
    if (command.cmd === 'close') port.close();
  });
  port.postMessage({ url: server.url });
}

/** The main thread's handle on the server worker. */
class ServerThread {
  private readonly pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private readonly exited: Promise<unknown>;

  private constructor(
    private readonly worker: Worker,
    readonly url: string,
  ) {
    this.exited = once(worker, 'exit');
    worker.on('message', (reply: Reply) => {
      this.pending.get(reply.id)?.resolve(reply);
      this.pending.delete(reply.id);
    });
    worker.on('error', (err) => {
      for (const { reject } of this.pending.values()) reject(err);
      this.pending.clear();
    });
  }

  static async start(data: ServerData): Promise<ServerThread> {
    const worker = new Worker(new URL(import.meta.url), { workerData: data });
    const [ready] = (await once(worker, 'message')) as [{ url: string }];
    return new ServerThread(worker, ready.url);
  }

  async store(command: Exclude<Command, { cmd: 'close' }>): Promise<Result> {
    const reply = await this.call(command);
    if (!reply.result) throw new Error(`store ${command.cmd}: no result`);
    return reply.result;
  }

  /** Closes the server and its store; a worker that does not exit on its own by then is ended. */
  async close(): Promise<void> {
    await this.call({ cmd: 'close' });
    const timer = setTimeout(() => {
      console.warn(
        `note: the server worker still held handles ${exitGraceMs} ms after closing its server and store; ended it`,
      );
      void this.worker.terminate();
    }, exitGraceMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** Runs `run`, with how busy the server's and this thread's event loops were meanwhile (0 to 1). */
  async loadDuring<T>(run: () => Promise<T>): Promise<[T, { server: number; client: number }]> {
    const server = this.worker.performance.eventLoopUtilization();
    const client = performance.eventLoopUtilization();
    const result = await run();
    return [
      result,
      {
        server: this.worker.performance.eventLoopUtilization(server).utilization,
        client: performance.eventLoopUtilization(client).utilization,
      },
    ];
  }

  /** Ends the worker without waiting for it, when something already went wrong. */
  async terminate(): Promise<void> {
    await this.worker.terminate();
  }

  private async call(command: Command): Promise<Reply> {
    const id = this.nextId++;
    const reply = await new Promise<Reply>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, command });
    });
    if (reply.error) throw new Error(`server worker: ${reply.error}`);
    return reply;
  }
}

// --- The client side: HTTP/2 sessions, as kubectl and client-go use the API ----------------------

interface Response {
  status: number;
  body: string;
}

class Client {
  private constructor(private readonly session: ClientHttp2Session) {}

  static async connect(url: string, tls: Tls): Promise<Client> {
    // client-go's HTTP/2 flow-control windows (4 MiB a stream, 1 GiB the connection), so a list
    // is not held back by window updates.
    const session = connect(url, {
      ca: tls.caPem,
      cert: tls.certPem,
      key: tls.keyPem,
      settings: { initialWindowSize: 4 << 20 },
    });
    await once(session, 'connect');
    session.setLocalWindowSize(1 << 30);
    return new Client(session);
  }

  request(method: string, path: string, body?: unknown): Promise<Response> {
    return new Promise((resolve, reject) => {
      const stream = this.session.request({
        ':method': method,
        ':path': path,
        accept: 'application/json',
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      });
      stream.setTimeout(requestTimeoutMs, () => {
        stream.close(constants.NGHTTP2_CANCEL);
        reject(new Error(`${method} ${path}: no answer within ${requestTimeoutMs} ms`));
      });
      let status = 0;
      const chunks: Buffer[] = [];
      stream.on('response', (headers) => {
        status = Number(headers[':status']);
      });
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => resolve({ status, body: Buffer.concat(chunks).toString('utf8') }));
      stream.on('error', reject);
      stream.end(body === undefined ? undefined : JSON.stringify(body));
    });
  }

  /** A request whose answer must have status `expect`, decoded as clients decode it. */
  async call<T = unknown>(expect: number, method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.request(method, path, body);
    if (res.status !== expect) throw new Error(`${method} ${path}: ${res.status} ${res.body.slice(0, 300)}`);
    return JSON.parse(res.body) as T;
  }

  /** A watch stream: every event line goes to `onEvent` with the time its bytes arrived. */
  watch(
    path: string,
    onEvent: (event: { type: string; object: unknown }, at: number) => void,
    onError: (err: Error) => void,
  ): ClientHttp2Stream {
    const stream = this.session.request({ ':method': 'GET', ':path': path, accept: 'application/json' });
    let buffered = '';
    stream.setEncoding('utf8');
    stream.on('response', (headers) => {
      if (headers[':status'] !== 200) stream.destroy(new Error(`watch ${path}: ${headers[':status']}`));
    });
    stream.on('data', (chunk: string) => {
      const at = performance.now();
      buffered += chunk;
      let newline = buffered.indexOf('\n');
      while (newline >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        if (line.trim() !== '') onEvent(JSON.parse(line), at);
        newline = buffered.indexOf('\n');
      }
    });
    stream.on('error', onError);
    return stream;
  }

  async close(): Promise<void> {
    if (this.session.closed) return;
    const closed = once(this.session, 'close');
    this.session.close();
    const timer = setTimeout(() => this.session.destroy(), 5000);
    await closed;
    clearTimeout(timer);
  }
}

// --- The rows ---------------------------------------------------------------------------------

interface Pair {
  https: Result;
  store: Result;
}

interface PacedResult {
  create: Result;
  get: Result;
  sent: number;
  seconds: number;
  lagP99Ms: number;
}

async function benchBackend(
  name: string,
  config: StoreConfig,
  tls: Pki,
  options: { paced: boolean },
): Promise<{ pairs: Map<string, Pair>; paced?: PacedResult }> {
  const server = await ServerThread.start({ config, tls: tls.server, tokenKeyPem: tls.tokenKeyPem });
  const clients: Client[] = [];
  let ok = false;
  try {
    for (let i = 0; i < Math.max(...concurrency); i++)
      clients.push(await Client.connect(server.url, tls.client));
    const first = clients[0] as Client;
    for (const namespace of ['default', 'bench-list', 'bench-watch']) {
      await first.call(201, 'POST', '/api/v1/namespaces', {
        apiVersion: 'v1',
        kind: 'Namespace',
        metadata: { name: namespace },
      });
    }
    const pairs = new Map<string, Pair>();
    /** One row through HTTPS, with how busy each side's event loop was, then its store baseline. */
    const bench = async (label: string, https: () => Promise<Result>, store: () => Promise<Result>) => {
      const [result, busy] = await server.loadDuring(https);
      console.log(
        `${row(`${name} ${label} https`, result)}   busy: server ${busy.server.toFixed(2)} client ${busy.client.toFixed(2)}`,
      );
      const baseline = await store();
      console.log(row(`${name} ${label} store`, baseline));
      pairs.set(label, { https: result, store: baseline });
    };
    const client = (c: number) => clients[c] as Client;

    let getNames: string[] = [];
    for (const c of concurrency) {
      const names: string[] = [];
      await bench(
        `create c=${c}`,
        () =>
          measure(c, async (i, k) => {
            const n = `net-c${c}-${i}`;
            await client(k).call(201, 'POST', networksPath('default'), network('default', n));
            names.push(n);
          }),
        () =>
          server.store({
            cmd: 'create',
            clients: c,
            sampleKey: storageKey(networkKind, 'default', names[0] as string),
          }),
      );
      await bench(
        `get c=${c}`,
        () =>
          measure(c, (i, k) =>
            client(k).call(200, 'GET', `${networksPath('default')}/${names[i % names.length]}`),
          ),
        () =>
          server.store({
            cmd: 'get',
            clients: c,
            keys: names.map((n) => storageKey(networkKind, 'default', n)),
          }),
      );
      getNames = names;
    }

    // list(1k): 1000 Networks in a namespace of their own, made through the API.
    let seeded = 0;
    await Promise.all(
      clients.map(async (k) => {
        while (seeded < listSize) {
          const n = `net-${String(seeded++).padStart(4, '0')}`;
          await k.call(201, 'POST', networksPath('bench-list'), network('bench-list', n));
        }
      }),
    );
    for (const c of concurrency) {
      await bench(
        `list(1k) c=${c}`,
        () =>
          measure(c, async (_, k) => {
            const list = await client(k).call<{ items: unknown[] }>(200, 'GET', networksPath('bench-list'));
            if (list.items.length !== listSize) throw new Error(`listed ${list.items.length}`);
          }),
        () => server.store({ cmd: 'list', clients: c, prefix: storagePrefix(networkKind, 'bench-list') }),
      );
    }

    // Watch delivery: one watcher on its own session; c clients create in the watched namespace.
    const watcher = await Client.connect(server.url, tls.client);
    clients.push(watcher);
    for (const c of concurrency) {
      const { metadata } = await first.call<{ metadata: { resourceVersion: string } }>(
        200,
        'GET',
        `${networksPath('bench-watch')}?limit=1`,
      );
      const arrivals = new Arrivals();
      const stream = watcher.watch(
        `${networksPath('bench-watch')}?watch=1&resourceVersion=${metadata.resourceVersion}`,
        (event, at) => {
          const object = event.object as { metadata?: { name?: string } };
          if (event.type === 'ERROR') arrivals.fail(new Error(`watch: ${JSON.stringify(event.object)}`));
          else if (object.metadata?.name) arrivals.arrived(object.metadata.name, at);
        },
        (err) => arrivals.fail(err),
      );
      try {
        await bench(
          `watch c=${c}`,
          () =>
            measureDelivery(
              c,
              arrivals,
              (i) => `watch-c${c}-${i}`,
              (i, k) =>
                client(k).call(
                  201,
                  'POST',
                  networksPath('bench-watch'),
                  network('bench-watch', `watch-c${c}-${i}`),
                ),
            ),
          () =>
            server.store({
              cmd: 'watch',
              clients: c,
              sampleKey: storageKey(networkKind, 'default', getNames[0] as string),
            }),
        );
      } finally {
        stream.close(constants.NGHTTP2_CANCEL);
      }
    }

    const paced = options.paced ? await pacedRun(first, getNames) : undefined;
    ok = true;
    return { pairs, ...(paced ? { paced } : {}) };
  } finally {
    await Promise.all(clients.map((k) => k.close()));
    if (ok) await server.close();
    else await server.terminate();
  }
}

/**
 * Open loop: a request is sent every 1/rate s whether or not earlier ones have answered, half
 * creates and half gets of existing Networks, on one session. Latency counts from the time a
 * request was due, so a client that falls behind shows up in the figures rather than hiding.
 */
async function pacedRun(client: Client, existing: string[]): Promise<PacedResult> {
  const total = Math.round((pacedRate * pacedMs) / 1000);
  const interval = 1000 / pacedRate;
  const creates: number[] = [];
  const gets: number[] = [];
  const lags: number[] = [];
  const inflight: Promise<void>[] = [];
  let failure: Error | undefined;
  const start = performance.now();
  for (let i = 0; i < total; i++) {
    const due = start + i * interval;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    lags.push(performance.now() - due);
    const isCreate = i % 2 === 0;
    const request = isCreate
      ? client.call(201, 'POST', networksPath('default'), network('default', `paced-${i}`))
      : client.call(200, 'GET', `${networksPath('default')}/${existing[i % existing.length]}`);
    inflight.push(
      request.then(
        () => void (isCreate ? creates : gets).push(performance.now() - due),
        (err: Error) => {
          failure ??= err;
        },
      ),
    );
  }
  const seconds = (performance.now() - start) / 1000;
  await Promise.all(inflight);
  if (failure) throw failure;
  const lag = summarize(lags, 0);
  return {
    create: summarize(creates, creates.length / seconds),
    get: summarize(gets, gets.length / seconds),
    sent: total,
    seconds,
    lagP99Ms: lag.p99Ms,
  };
}

/** The serving certificate as `loam up` makes it, and an admin client certificate. */
interface Pki {
  server: Tls;
  tokenKeyPem: string;
  client: Tls;
}

function makePki(dataDir: string): Pki {
  const pki = loadServingPki(dataDir);
  const keys = generateKeyPair();
  const clientCert = issueCertificate(pki.ca, {
    commonName: 'bench-admin',
    organizations: [adminGroup],
    usage: 'client',
    validityDays: 1,
    publicKeyPem: keys.publicKeyPem,
  });
  return {
    server: { certPem: pki.certPem, keyPem: pki.keyPem, caPem: pki.ca.certPem },
    tokenKeyPem: pki.tokenKeyPem,
    client: { certPem: clientCert, keyPem: keys.privateKeyPem, caPem: pki.ca.certPem },
  };
}

/** A ratio to three significant figures or so, as `12.3x`. */
const ratio = (x: number) => `${x.toFixed(x >= 100 ? 0 : x >= 10 ? 1 : 2)}x`.padStart(9);

function printOverhead(backends: [string, Map<string, Pair>][]): void {
  console.log(
    '\nAPI overhead: HTTPS request vs the store call it comes down to, same backend (higher = more)',
  );
  console.log(
    `  ${''.padEnd(22)} ${'p50'.padStart(9)} ${'p99'.padStart(9)} ${'ops/s'.padStart(9)}   ${'added p50'.padStart(10)}`,
  );
  for (const [name, pairs] of backends) {
    for (const [label, { https, store }] of pairs) {
      const added = `${(https.p50Ms - store.p50Ms).toFixed(3)} ms`;
      console.log(
        `  ${`${name} ${label}`.padEnd(22)} ${ratio(https.p50Ms / store.p50Ms)} ${ratio(https.p99Ms / store.p99Ms)} ${ratio(store.opsPerSecond / https.opsPerSecond)}   ${added.padStart(10)}`,
      );
    }
  }
  console.log(
    '  p50, p99: latency through HTTPS / latency of the store call; ops/s: store throughput / HTTPS throughput;\n' +
      '  added p50: the HTTPS p50 minus the store p50. An API create also reads its namespace (a store get).',
  );
}

function printPaced(paced: PacedResult): void {
  const verdict = (r: Result) => (r.p99Ms < goalMs ? 'PASS' : 'MISS');
  console.log(
    `\npaced open loop on the embedded store: ${pacedRate} requests/s (50% create, 50% get), ` +
      `${paced.sent} sent in ${paced.seconds.toFixed(1)} s, one session; client send lag p99 ${paced.lagP99Ms.toFixed(3)} ms`,
  );
  console.log(`${row('sqlite paced create', paced.create)}   ${verdict(paced.create)}`);
  console.log(`${row('sqlite paced get', paced.get)}   ${verdict(paced.get)}`);
  console.log(
    `goal: p99 create and get under ${goalMs} ms at ${pacedRate} requests/s on the embedded store: ` +
      `create ${paced.create.p99Ms.toFixed(3)} ms ${verdict(paced.create)}, get ${paced.get.p99Ms.toFixed(3)} ms ${verdict(paced.get)}`,
  );
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'loam-bench-api-'));
  try {
    const tls = makePki(dir);
    console.log(
      `loam API server benchmark (budget ${budgetMs} ms or ${maxOps} ops per row)\n` +
        'client: node:http2 over TLS with an admin client certificate, one session per client (16 for c=16);\n' +
        'server: ApiServer in a worker thread (its own event loop); "store" rows: the same store calls in that worker;\n' +
        'busy: share of the row each event loop was busy (1.00 = saturated; 2 cores here, shared with etcd)\n' +
        'objects: Networks (crds/samples/network.yaml) in namespace default; list(1k) lists 1000 of them\n',
    );
    const sqlite = await benchBackend('sqlite', { backend: 'sqlite', path: join(dir, 'bench.db') }, tls, {
      paced: true,
    });
    console.log();
    const etcd = await EtcdServer.start();
    let etcdPairs: Map<string, Pair>;
    try {
      ({ pairs: etcdPairs } = await benchBackend(
        'etcd',
        { backend: 'etcd', endpoints: [etcd.endpoint] },
        tls,
        { paced: false },
      ));
    } finally {
      await etcd.destroy();
    }
    printOverhead([
      ['sqlite', sqlite.pairs],
      ['etcd', etcdPairs],
    ]);
    if (sqlite.paced) printPaced(sqlite.paced);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (isMainThread) await main();
else await serveInWorker(workerData as ServerData);
