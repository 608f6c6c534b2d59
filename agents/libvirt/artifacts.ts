/**
 * The content-addressed cache of disk images, kernels and initrds: an artifact is fetched by URL
 * (http, https or file) into `<dir>/partial/<sha256>`, hashed while it streams, and renamed into
 * `<dir>/sha256/<sha256>` only once its digest matches, so everything under sha256/ is verified.
 *
 * A download that fails leaves its partial file for the next fetch to resume with an HTTP Range
 * request (the bytes already there are re-hashed first); a file whose digest does not match is
 * deleted. Concurrent fetches of one sha256 share one download, which is cancelled only when every
 * caller has given up.
 *
 * Errors are LoamErrors whose message names the URL but not the field (the caller knows whether it
 * fetched spec.image or spec.kernel.initrd and prefixes it):
 * - Invalid (INVALID_ARGUMENT): the spec is wrong and retrying the same spec will not help — a digest
 *   mismatch, an unsupported scheme, a local path that is not a file;
 * - NotFound (NOT_FOUND): a URL that answers 404 or 410, a local file that does not exist. Worth
 *   retrying, as a kubelet keeps pulling a missing image: the file may yet be published;
 * - Unavailable (UNAVAILABLE): worth retrying — other HTTP errors, a refused or broken connection,
 *   a download that made no progress for idleTimeoutMs;
 * - Closed (CANCELLED): the caller's signal aborted.
 */

import { createHash, type Hash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { chmod, mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { STATUS_CODES } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { LoamError } from '../../crds/errors.js';

export interface Artifact {
  url: string;
  /** 64 lower-case hex digits. */
  sha256: string;
}

export interface ArtifactCacheOptions {
  /** Where files live: <dir>/sha256/<hex> verified, <dir>/partial/<hex> downloads under way. */
  dir: string;
  logger: Logger;
  /** Gives up on a download that makes no progress for this long (default 60 s). */
  idleTimeoutMs?: number;
  /** Progress log lines at most this often (default 5 s). */
  progressIntervalMs?: number;
}

interface Download {
  promise: Promise<string>;
  abort: AbortController;
  waiters: number;
}

const sha256Pattern = /^[0-9a-f]{64}$/;

export class ArtifactCache {
  private readonly dir: string;
  private readonly logger: Logger;
  private readonly idleTimeoutMs: number;
  private readonly progressIntervalMs: number;
  private readonly downloads = new Map<string, Download>();

  constructor(options: ArtifactCacheOptions) {
    this.dir = options.dir;
    this.logger = options.logger;
    this.idleTimeoutMs = options.idleTimeoutMs ?? 60_000;
    this.progressIntervalMs = options.progressIntervalMs ?? 5_000;
  }

  /** The verified local path of the artifact, downloading (or resuming) it when missing. Concurrent calls for one sha256 share one download. */
  fetch(artifact: Artifact, signal?: AbortSignal): Promise<string> {
    if (!sha256Pattern.test(artifact.sha256)) {
      return Promise.reject(
        new LoamError('Invalid', `sha256 ${JSON.stringify(artifact.sha256)} is not 64 lower-case hex digits`),
      );
    }
    const path = this.pathOf(artifact.sha256);
    if (existsSync(path)) return Promise.resolve(path);
    if (signal?.aborted) return Promise.reject(cancelled(artifact.url));

    // Joining happens synchronously, so callers in the same tick always share one download.
    let download = this.downloads.get(artifact.sha256);
    if (download === undefined || download.abort.signal.aborted) {
      download = this.start(artifact, download?.promise);
    }
    return this.wait(artifact, download, signal);
  }

  /** Whether it is cached and verified already (no network). */
  has(sha256: string): boolean {
    return sha256Pattern.test(sha256) && existsSync(this.pathOf(sha256));
  }

  private pathOf(sha256: string): string {
    return join(this.dir, 'sha256', sha256);
  }

  /** `previous` is a cancelled download of the same file still winding down: it owns the partial file until it settles. */
  private start(artifact: Artifact, previous: Promise<string> | undefined): Download {
    const abort = new AbortController();
    const promise = (previous ?? Promise.resolve())
      .catch(() => undefined)
      .then(() => this.download(artifact, abort.signal));
    const download: Download = { promise, abort, waiters: 0 };
    this.downloads.set(artifact.sha256, download);
    const forget = () => {
      if (this.downloads.get(artifact.sha256) === download) this.downloads.delete(artifact.sha256);
    };
    promise.then(forget, forget);
    return download;
  }

  private async wait(
    artifact: Artifact,
    download: Download,
    signal: AbortSignal | undefined,
  ): Promise<string> {
    download.waiters++;
    let onAbort: (() => void) | undefined;
    try {
      if (signal === undefined) return await download.promise;
      const aborted = new Promise<never>((_, reject) => {
        onAbort = () => reject(cancelled(artifact.url));
        signal.addEventListener('abort', onAbort, { once: true });
      });
      return await Promise.race([download.promise, aborted]);
    } finally {
      if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort);
      // The last caller to leave stops the transfer; its partial file stays for a later resume.
      if (--download.waiters === 0) download.abort.abort();
    }
  }

  private async download(artifact: Artifact, signal: AbortSignal): Promise<string> {
    const { sha256 } = artifact;
    let url: URL;
    try {
      url = new URL(artifact.url);
    } catch {
      throw new LoamError('Invalid', `${JSON.stringify(artifact.url)} is not a URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:' && url.protocol !== 'file:') {
      throw new LoamError('Invalid', `${artifact.url}: only http, https and file URLs can be fetched`);
    }
    for (const sub of ['sha256', 'partial']) {
      const path = join(this.dir, sub);
      await mkdir(path, { recursive: true, mode: 0o755 });
      await chmod(path, 0o755); // mkdir's mode is filtered by the umask
    }
    const partial = join(this.dir, 'partial', sha256);
    const transfer = new Transfer(artifact.url, partial, this.logger, this.progressIntervalMs);
    if (url.protocol === 'file:') {
      await this.copyFile(url, transfer, signal);
    } else {
      await transfer.resume();
      // A partial file may be complete already (the agent stopped before renaming it).
      if (transfer.bytes === 0 || transfer.digest() !== sha256) await this.get(transfer, signal);
    }

    const digest = transfer.digest();
    if (digest !== sha256) {
      await rm(partial, { force: true });
      throw new LoamError('Invalid', `the download of ${artifact.url} has sha256 ${digest}, not ${sha256}`);
    }
    const path = this.pathOf(sha256);
    await chmod(partial, 0o644);
    await rename(partial, path);
    transfer.done(path);
    return path;
  }

  private async copyFile(url: URL, transfer: Transfer, signal: AbortSignal): Promise<void> {
    const source = fileURLToPath(url);
    const found = await stat(source).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') throw new LoamError('NotFound', `${source} does not exist`);
      throw new LoamError('Invalid', `cannot read ${source}: ${err.message}`);
    });
    if (!found.isFile()) throw new LoamError('Invalid', `${source} is not a regular file`);
    // A local copy is quick: no resume, always from the start.
    transfer.restart(found.size);
    try {
      await transfer.copy(createReadStream(source, { signal }));
    } catch (err) {
      if (signal.aborted) throw cancelled(url.href);
      throw new LoamError('Unavailable', `cannot copy ${source}: ${(err as Error).message}`, { cause: err });
    }
  }

  private async get(transfer: Transfer, signal: AbortSignal): Promise<void> {
    const { url } = transfer;
    const idle = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const touch = () => {
      clearTimeout(timer);
      timer = setTimeout(() => idle.abort(), this.idleTimeoutMs);
    };
    const both = AbortSignal.any([signal, idle.signal]);
    try {
      for (;;) {
        touch();
        const offset = transfer.bytes;
        const response = await fetch(url, {
          signal: both,
          // identity: the bytes hashed (and counted for Range) are the bytes the server stores.
          headers: { 'accept-encoding': 'identity', ...(offset > 0 ? { range: `bytes=${offset}-` } : {}) },
        });
        touch();
        if (response.status === 416 && offset > 0) {
          // The partial file is longer than the resource: it cannot be a prefix of it.
          await response.body?.cancel();
          transfer.restart(undefined);
          continue;
        }
        if (!response.ok || response.body === null) {
          await response.body?.cancel();
          const text = response.statusText || STATUS_CODES[response.status];
          const answer = `${url} answered ${response.status}${text ? ` ${text}` : ''}`;
          if (response.status === 404 || response.status === 410) throw new LoamError('NotFound', answer);
          throw new LoamError('Unavailable', answer);
        }
        const length = Number(response.headers.get('content-length') ?? Number.NaN);
        if (response.status === 206 && offset > 0) {
          const range = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(response.headers.get('content-range') ?? '');
          if (range?.[1] !== String(offset)) {
            await response.body.cancel();
            await transfer.discard();
            throw new LoamError('Unavailable', `${url} answered a range other than the one asked for`);
          }
          transfer.append(range[2] === '*' ? undefined : Number(range[2]));
        } else {
          // 200 to a Range request: the server sends everything, so the partial file goes.
          transfer.restart(Number.isFinite(length) ? length : undefined);
        }
        await transfer.copy(response.body, touch);
        return;
      }
    } catch (err) {
      if (signal.aborted) throw cancelled(url);
      if (idle.signal.aborted) {
        throw new LoamError(
          'Unavailable',
          `the download of ${url} made no progress for ${this.idleTimeoutMs / 1000} s (${transfer.bytes} bytes so far)`,
        );
      }
      if (err instanceof LoamError) throw err;
      // fetch says "fetch failed" and puts the reason (ECONNREFUSED, a cut connection) in cause.
      const reason = ((err as Error).cause as Error | undefined)?.message ?? (err as Error).message;
      throw new LoamError('Unavailable', `cannot download ${url}: ${reason}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
  }
}

/** One attempt at filling the partial file: its bytes, their running hash, and progress logs. */
class Transfer {
  bytes = 0;
  private hash: Hash = createHash('sha256');
  private total: number | undefined;
  private flags = 'w';
  private readonly started = Date.now();
  private sessionBytes = 0;
  private lastLog = 0;

  constructor(
    readonly url: string,
    private readonly partial: string,
    private readonly logger: Logger,
    private readonly progressIntervalMs: number,
  ) {}

  /** Takes the bytes a previous attempt left, hashing them so the new ones can follow. */
  async resume(): Promise<void> {
    try {
      for await (const chunk of createReadStream(this.partial)) {
        this.hash.update(chunk as Buffer);
        this.bytes += (chunk as Buffer).length;
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }

  digest(): string {
    return this.hash.copy().digest('hex');
  }

  restart(total: number | undefined): void {
    this.bytes = 0;
    this.hash = createHash('sha256');
    this.flags = 'w';
    this.total = total;
  }

  async discard(): Promise<void> {
    await rm(this.partial, { force: true });
    this.restart(undefined);
  }

  append(total: number | undefined): void {
    this.flags = 'a';
    this.total = total;
  }

  /** Each chunk is on disk before the next is read, so a failure leaves exactly the bytes hashed. */
  async copy(source: AsyncIterable<Uint8Array>, onChunk?: () => void): Promise<void> {
    this.logger.info(
      { url: this.url, from: this.bytes, total: this.total },
      this.bytes > 0 ? `resuming ${this.url} at byte ${this.bytes}` : `downloading ${this.url}`,
    );
    const file = await open(this.partial, this.flags, 0o644);
    try {
      for await (const chunk of source) {
        onChunk?.();
        await file.write(chunk);
        this.hash.update(chunk);
        this.bytes += chunk.length;
        this.sessionBytes += chunk.length;
        this.progress();
      }
    } finally {
      await file.close();
    }
  }

  done(path: string): void {
    const seconds = (Date.now() - this.started) / 1000;
    this.logger.info(
      { url: this.url, path, bytes: this.bytes, seconds },
      `cached ${this.url} (${size(this.bytes)})`,
    );
  }

  private progress(): void {
    const now = Date.now();
    if (now - this.lastLog < this.progressIntervalMs) return;
    this.lastLog = now;
    const bytesPerSecond = Math.round(this.sessionBytes / Math.max((now - this.started) / 1000, 0.001));
    const percent = this.total ? Math.floor((this.bytes * 100) / this.total) : undefined;
    const of = this.total === undefined ? '' : ` of ${size(this.total)} (${percent}%)`;
    this.logger.info(
      { url: this.url, bytes: this.bytes, total: this.total, percent, bytesPerSecond },
      `${this.url}: ${size(this.bytes)}${of} at ${size(bytesPerSecond)}/s`,
    );
  }
}

function cancelled(url: string): LoamError {
  return new LoamError('Closed', `the download of ${url} was cancelled`);
}

function size(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}
