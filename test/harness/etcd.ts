/**
 * A real etcd for tests: started from Debian's etcd-server on free loopback ports with a temporary
 * data dir, killed (or stopped) and restarted on the same dir for durability tests.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, pollUntil } from './poll.js';

const etcdBinary = '/usr/bin/etcd';

export class EtcdServer {
  readonly dataDir: string;
  private process: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private clientPort = 0;
  private peerPort = 0;
  private stderr = '';

  private constructor() {
    this.dataDir = mkdtempSync(join(tmpdir(), 'loam-etcd-'));
  }

  static async start(): Promise<EtcdServer> {
    if (!existsSync(etcdBinary)) {
      throw new Error(`${etcdBinary} not found: install etcd-server (hack/install-deps.sh)`);
    }
    const server = new EtcdServer();
    // A port free a moment ago can be taken by the time etcd binds it: try fresh ones, a few times.
    for (let attempt = 1; ; attempt++) {
      server.clientPort = await freePort();
      server.peerPort = await freePort();
      try {
        await server.launch();
        return server;
      } catch (err) {
        if (attempt >= 5 || !/address already in use/.test(String(err))) throw err;
        rmSync(server.dataDir, { recursive: true, force: true });
        mkdirSync(server.dataDir);
      }
    }
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.clientPort}`;
  }

  /** Starts etcd again on the same data dir and ports, after kill() or stop(). */
  async restart(): Promise<void> {
    await this.exited;
    await this.launch();
  }

  /** SIGKILL: what a power cut or OOM kill looks like to etcd. */
  async kill(): Promise<void> {
    this.process?.kill('SIGKILL');
    await this.exited;
  }

  async stop(): Promise<void> {
    this.process?.kill('SIGTERM');
    await this.exited;
  }

  async destroy(): Promise<void> {
    await this.kill();
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  private async launch(): Promise<void> {
    const client = `http://127.0.0.1:${this.clientPort}`;
    const peer = `http://127.0.0.1:${this.peerPort}`;
    const child = spawn(
      etcdBinary,
      [
        '--name=loam-test',
        `--data-dir=${this.dataDir}`,
        `--listen-client-urls=${client}`,
        `--advertise-client-urls=${client}`,
        `--listen-peer-urls=${peer}`,
        `--initial-advertise-peer-urls=${peer}`,
        `--initial-cluster=loam-test=${peer}`,
        '--logger=zap',
        '--log-level=error',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    this.process = child;
    this.stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString()).slice(-4000);
    });
    // 'close' comes after stderr is drained, so an early exit is reported with etcd's last words.
    let closed = false;
    this.exited = new Promise((resolve) =>
      child.once('close', () => {
        closed = true;
        resolve();
      }),
    );
    await pollUntil(
      async () => {
        if (closed) throw new Error(`etcd exited with ${child.exitCode}: ${this.stderr}`);
        const res = await fetch(`${client}/health`, { signal: AbortSignal.timeout(1000) }).catch(
          () => undefined,
        );
        return res?.ok === true;
      },
      { timeoutMs: 20_000, what: 'etcd to become healthy' },
    );
  }
}
