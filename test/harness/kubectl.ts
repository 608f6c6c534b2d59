/** Runs the real kubectl binaries (1.27–1.33 ship in the Cloud SDK directory), bounded in time. */
import { spawn } from 'node:child_process';

export const kubectlDir = '/usr/lib/google-cloud-sdk/bin';

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface Kubectl {
  (...args: string[]): Promise<string>;
  /** Runs without throwing on a non-zero exit. */
  run(args: string[], options?: { input?: string; env?: Record<string, string> }): Promise<KubectlResult>;
  /** Starts a long-running kubectl (e.g. `get -w`); its output accumulates until it is killed. */
  start(args: string[]): { output: () => string; stop: () => Promise<void> };
  readonly version: string;
}

/** kubectl `version` (e.g. "1.27"; "" for the default binary) talking to the cluster in `kubeconfig`. */
export function kubectl(version: string, kubeconfig: string, timeoutMs = 30_000): Kubectl {
  const binary = `${kubectlDir}/kubectl${version ? `.${version}` : ''}`;
  const run: Kubectl['run'] = (args, options = {}) =>
    new Promise((resolve, reject) => {
      const child = spawn(binary, ['--kubeconfig', kubeconfig, ...args], {
        env: { ...process.env, ...options.env },
        timeout: timeoutMs,
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => {
        stdout += d;
      });
      child.stderr.on('data', (d: Buffer) => {
        stderr += d;
      });
      child.once('error', reject);
      child.once('close', (code, signal) => {
        if (signal) reject(new Error(`kubectl ${args.join(' ')} killed by ${signal}: ${stderr}`));
        else resolve({ code: code ?? 1, stdout, stderr });
      });
      child.stdin.end(options.input ?? '');
    });
  const call = async (...args: string[]) => {
    const result = await run(args);
    if (result.code !== 0) {
      throw new Error(`kubectl ${args.join(' ')} exited ${result.code}: ${result.stderr.trim()}`);
    }
    return result.stdout;
  };
  const start: Kubectl['start'] = (args) => {
    const child = spawn(binary, ['--kubeconfig', kubeconfig, ...args], { timeout: timeoutMs });
    let output = '';
    child.stdout.on('data', (d: Buffer) => {
      output += d;
    });
    const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
    return {
      output: () => output,
      stop: async () => {
        child.kill();
        await closed;
      },
    };
  };
  return Object.assign(call, { run, start, version });
}
