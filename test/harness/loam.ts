/** `loam up` as a user runs it: the real CLI in a child process, on loopback, stopped by SIGTERM. */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';

const cli = new URL('../../bin/loam.js', import.meta.url).pathname;

export interface LoamOptions {
  dataDir: string;
  store: 'sqlite' | 'etcd';
  etcdEndpoints?: string[];
  /** 0 (default) picks a free port. */
  port?: number;
  /** The agent hub's port; 0 (default) picks a free port. */
  agentPort?: number;
  /** The agent hub's listening host, 127.0.0.1 by default; 0.0.0.0 for agents in network namespaces. */
  agentHost?: string;
  /** --tls-san: more names or addresses in the serving certificates (an address agents dial). */
  tlsSans?: string[];
  /**
   * Run this machine's libvirt agent (only) on this libvirt URI, with its storage beside the data
   * dir (`<dataDir>-libvirt`); without it, --no-local-agents.
   */
  libvirtUri?: string;
}

export class LoamProcess {
  private constructor(
    private readonly child: ChildProcess,
    readonly url: string,
    readonly kubeconfig: string,
  ) {}

  static async start(options: LoamOptions, timeoutMs = 30_000): Promise<LoamProcess> {
    const args = [
      cli,
      'up',
      '--data-dir',
      options.dataDir,
      '--api-address',
      `127.0.0.1:${options.port ?? 0}`,
      '--agent-address',
      `${options.agentHost ?? '127.0.0.1'}:${options.agentPort ?? 0}`,
      '--store',
      options.store,
      '--log-level',
      'warn',
    ];
    if (options.etcdEndpoints) args.push('--etcd-endpoints', options.etcdEndpoints.join(','));
    for (const san of options.tlsSans ?? []) args.push('--tls-san', san);
    args.push(
      ...(options.libvirtUri
        ? [
            '--local-agents',
            'libvirt',
            '--libvirt-uri',
            options.libvirtUri,
            '--storage-dir',
            `${options.dataDir}-libvirt`,
          ]
        : ['--no-local-agents']),
    );
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`loam up did not come up in ${timeoutMs} ms: ${stderr}`));
      }, timeoutMs);
      child.stderr?.on('data', (chunk: Buffer) => {
        stderr += chunk;
        const match = /Loam is up: (https:\/\/\S+)/.exec(stderr);
        if (match) {
          clearTimeout(timer);
          resolve(match[1] as string);
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`loam up exited ${code}: ${stderr}`));
      });
    });
    return new LoamProcess(child, url, join(options.dataDir, 'admin.kubeconfig'));
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** SIGKILL, as a crash or a power cut would end it; resolves once it is gone. */
  async kill(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGKILL');
    await exited;
  }

  /** SIGTERM, then SIGKILL if it has not exited within the deadline. */
  async stop(timeoutMs = 10_000): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    await exited;
    clearTimeout(timer);
  }
}
