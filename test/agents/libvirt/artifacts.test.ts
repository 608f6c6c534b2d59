import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { pino } from 'pino';
import { ArtifactCache, type ArtifactCacheOptions } from '../../../agents/libvirt/artifacts.js';
import { isLoamError, type LoamError } from '../../../crds/errors.js';

const payload = randomBytes(64 * 1024);
const sha256 = createHash('sha256').update(payload).digest('hex');
const half = payload.length / 2;

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** Answers with the payload, honouring `Range: bytes=N-` as a real file server does. */
const serve: Handler = (req, res) => {
  const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
  if (range === null) {
    res.writeHead(200, { 'content-length': payload.length }).end(payload);
    return;
  }
  const from = Number(range[1]);
  res
    .writeHead(206, {
      'content-length': payload.length - from,
      'content-range': `bytes ${from}-${payload.length - 1}/${payload.length}`,
    })
    .end(payload.subarray(from));
};

/** Sends the headers and half the payload, then runs `then` (cut, or nothing: a stall). */
const halfThen =
  (then: (res: ServerResponse) => void): Handler =>
  (_req, res) => {
    res.writeHead(200, { 'content-length': payload.length });
    res.write(payload.subarray(0, half), () => then(res));
  };

async function rejectsWith(promise: Promise<unknown>, code: LoamError['code'], message: string | RegExp) {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isLoamError(err), `not a LoamError: ${err}`);
    assert.equal(err.code, code);
    if (typeof message === 'string') assert.equal(err.message, message);
    else assert.match(err.message, message);
    return true;
  });
}

describe('agents/libvirt/artifacts', () => {
  let server: Server;
  let base: string;
  let handler: Handler;
  let requests: IncomingMessage[];
  let dir: string;
  let logs: { msg: string; [key: string]: unknown }[];
  let onLog: (line: { msg: string; [key: string]: unknown }) => void;

  const cache = (options: Partial<ArtifactCacheOptions> = {}) =>
    new ArtifactCache({
      dir,
      logger: pino(
        { level: 'info' },
        {
          write: (text: string) => {
            const line = JSON.parse(text);
            logs.push(line);
            onLog(line);
          },
        },
      ),
      idleTimeoutMs: 5_000,
      progressIntervalMs: 0,
      ...options,
    });
  const partial = () => join(dir, 'partial', sha256);

  before(async () => {
    server = createServer((req, res) => {
      requests.push(req);
      handler(req, res);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  beforeEach(async () => {
    handler = serve;
    requests = [];
    logs = [];
    onLog = () => undefined;
    dir = await mkdtemp(join(tmpdir(), 'loam-artifacts-'));
  });
  afterEach(async () => {
    server.closeAllConnections(); // the stalled ones
    await rm(dir, { recursive: true, force: true });
  });

  it('downloads and verifies, then answers from the cache', async () => {
    const artifacts = cache();
    const url = `${base}/image.qcow2`;
    assert.equal(artifacts.has(sha256), false);

    const path = await artifacts.fetch({ url, sha256 });
    assert.equal(path, join(dir, 'sha256', sha256));
    assert.deepEqual(await readFile(path), payload);
    assert.equal(artifacts.has(sha256), true);
    assert.equal(existsSync(partial()), false);
    assert.equal(statSync(path).mode & 0o777, 0o644);
    assert.equal(statSync(join(dir, 'sha256')).mode & 0o777, 0o755);
    assert.equal(statSync(join(dir, 'partial')).mode & 0o777, 0o755);

    assert.equal(await artifacts.fetch({ url, sha256 }), path);
    assert.equal(
      await cache().fetch({ url: `${base}/elsewhere`, sha256 }),
      path,
      'a new cache finds the file',
    );
    assert.equal(requests.length, 1);

    assert.equal(logs[0]?.msg, `downloading ${url}`);
    const progress = logs.filter((line) => line.percent !== undefined);
    assert.ok(progress.length > 0, 'progress logged');
    assert.equal(progress.at(-1)?.percent, 100);
    assert.equal(progress.at(-1)?.total, payload.length);
    assert.equal(typeof progress.at(-1)?.bytesPerSecond, 'number');
    assert.equal(logs.at(-1)?.msg, `cached ${url} (64.0 KiB)`);
  });

  it('logs progress at most every progressIntervalMs', async () => {
    await cache({ progressIntervalMs: 60_000 }).fetch({ url: `${base}/image`, sha256 });
    assert.equal(logs.filter((line) => line.percent !== undefined).length, 1);
  });

  it('shares one download between concurrent fetches', async () => {
    const artifacts = cache();
    const artifact = { url: `${base}/image`, sha256 };
    const paths = await Promise.all([
      artifacts.fetch(artifact),
      artifacts.fetch(artifact),
      artifacts.fetch(artifact),
    ]);
    assert.deepEqual(new Set(paths), new Set([join(dir, 'sha256', sha256)]));
    assert.equal(requests.length, 1);
  });

  it('keeps a shared download going when one of its callers gives up', async () => {
    const artifacts = cache();
    const artifact = { url: `${base}/image`, sha256 };
    const quitter = new AbortController();
    const first = artifacts.fetch(artifact, quitter.signal);
    const second = artifacts.fetch(artifact);
    quitter.abort();
    await rejectsWith(first, 'Closed', `the download of ${artifact.url} was cancelled`);
    assert.equal(await second, join(dir, 'sha256', sha256));
    assert.equal(requests.length, 1);
  });

  it('reports a URL that answers 404 as not found (worth retrying), caching nothing', async () => {
    handler = (_req, res) => res.writeHead(404).end('no such image');
    const url = `${base}/missing.qcow2`;
    const artifacts = cache();
    await rejectsWith(artifacts.fetch({ url, sha256 }), 'NotFound', `${url} answered 404 Not Found`);
    assert.equal(artifacts.has(sha256), false);
    assert.equal(existsSync(partial()), false);

    // Fixed on the server: the agent's next try succeeds.
    handler = serve;
    assert.equal(await artifacts.fetch({ url, sha256 }), join(dir, 'sha256', sha256));
  });

  it('reports other HTTP errors as retryable', async () => {
    handler = (_req, res) => res.writeHead(503).end();
    const url = `${base}/image`;
    await rejectsWith(
      cache().fetch({ url, sha256 }),
      'Unavailable',
      `${url} answered 503 Service Unavailable`,
    );
  });

  it('deletes a download whose sha256 does not match', async () => {
    const wrong = createHash('sha256').update('something else').digest('hex');
    const url = `${base}/image`;
    const artifacts = cache();
    await rejectsWith(
      artifacts.fetch({ url, sha256: wrong }),
      'Invalid',
      `the download of ${url} has sha256 ${sha256}, not ${wrong}`,
    );
    assert.equal(artifacts.has(wrong), false);
    assert.equal(existsSync(join(dir, 'sha256', sha256)), false);
    assert.equal(existsSync(join(dir, 'partial', wrong)), false);
  });

  it('resumes a cut download with a Range request', async () => {
    // Cut once the client has written the half: fetch drops chunks still queued when a connection breaks.
    handler = halfThen((res) => {
      const cut = () => res.socket?.destroy();
      if (logs.some((line) => line.bytes === half)) cut();
      else
        onLog = (line) => {
          if (line.bytes === half) cut();
        };
    });
    const url = `${base}/image`;
    const artifacts = cache();
    await rejectsWith(
      artifacts.fetch({ url, sha256 }),
      'Unavailable',
      new RegExp(`^cannot download ${url}: `),
    );
    assert.equal(statSync(partial()).size, half);

    handler = serve;
    const path = await artifacts.fetch({ url, sha256 });
    assert.equal(requests[1]?.headers.range, `bytes=${half}-`);
    assert.deepEqual(await readFile(path), payload);
    assert.ok(logs.some((line) => line.msg === `resuming ${url} at byte ${half}`));
  });

  it('starts over when the server ignores Range', async () => {
    await mkdir(join(dir, 'partial'), { recursive: true });
    await writeFile(partial(), 'not a prefix of the payload');
    handler = (_req, res) => res.writeHead(200, { 'content-length': payload.length }).end(payload);
    const path = await cache().fetch({ url: `${base}/image`, sha256 });
    assert.equal(requests[0]?.headers.range, 'bytes=27-');
    assert.deepEqual(await readFile(path), payload);
  });

  it('renames a complete partial file without downloading it again', async () => {
    await mkdir(join(dir, 'partial'), { recursive: true });
    await writeFile(partial(), payload);
    const path = await cache().fetch({ url: `${base}/image`, sha256 });
    assert.deepEqual(await readFile(path), payload);
    assert.equal(requests.length, 0);
  });

  it('gives up on a download that stalls, keeping what came for a resume', async () => {
    handler = halfThen(() => undefined);
    const url = `${base}/image`;
    const artifacts = cache({ idleTimeoutMs: 200 });
    await rejectsWith(
      artifacts.fetch({ url, sha256 }),
      'Unavailable',
      `the download of ${url} made no progress for 0.2 s (${half} bytes so far)`,
    );
    assert.equal(statSync(partial()).size, half);
    assert.equal(artifacts.has(sha256), false);
  });

  it('gives up on a server that never answers', async () => {
    handler = () => undefined;
    const url = `${base}/image`;
    await rejectsWith(
      cache({ idleTimeoutMs: 200 }).fetch({ url, sha256 }),
      'Unavailable',
      `the download of ${url} made no progress for 0.2 s (0 bytes so far)`,
    );
  });

  it('stops when its signal aborts', async () => {
    let stalled: () => void = () => undefined;
    const sentHalf = new Promise<void>((resolve) => {
      stalled = resolve;
    });
    handler = halfThen(() => stalled());
    const url = `${base}/image`;
    const artifacts = cache();
    const abort = new AbortController();
    const fetching = artifacts.fetch({ url, sha256 }, abort.signal);
    await sentHalf;
    abort.abort();
    await rejectsWith(fetching, 'Closed', `the download of ${url} was cancelled`);
    await rejectsWith(artifacts.fetch({ url, sha256 }, abort.signal), 'Closed', /cancelled/);
    assert.equal(artifacts.has(sha256), false);

    // The cancelled download winds down before a new one takes its partial file over.
    handler = serve;
    assert.deepEqual(await readFile(await artifacts.fetch({ url, sha256 })), payload);
  });

  it('reports a refused connection as retryable', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const url = `http://127.0.0.1:${port}/image`;
    await rejectsWith(
      cache().fetch({ url, sha256 }),
      'Unavailable',
      `cannot download ${url}: connect ECONNREFUSED 127.0.0.1:${port}`,
    );
  });

  it('copies and verifies file:// URLs', async () => {
    const source = join(dir, 'source.img');
    await writeFile(source, payload);
    const artifacts = cache();
    const path = await artifacts.fetch({ url: pathToFileURL(source).href, sha256 });
    assert.deepEqual(await readFile(path), payload);

    const missing = join(dir, 'missing.img');
    const wrong = createHash('sha256').update('other').digest('hex');
    await rejectsWith(
      artifacts.fetch({ url: pathToFileURL(missing).href, sha256: wrong }),
      'NotFound',
      `${missing} does not exist`,
    );
  });

  it('refuses other schemes and malformed digests', async () => {
    const artifacts = cache();
    await rejectsWith(
      artifacts.fetch({ url: 'ftp://example.invalid/image', sha256 }),
      'Invalid',
      'ftp://example.invalid/image: only http, https and file URLs can be fetched',
    );
    await rejectsWith(
      artifacts.fetch({ url: `${base}/image`, sha256: '../../etc/passwd' }),
      'Invalid',
      'sha256 "../../etc/passwd" is not 64 lower-case hex digits',
    );
    assert.equal(artifacts.has('../../etc/passwd'), false);
    assert.equal(requests.length, 0);
  });
});
