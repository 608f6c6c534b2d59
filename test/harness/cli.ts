/** The real `loam` CLI (dist/bin/loam.js) in a child process, as a user runs it. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';

const cli = new URL('../../bin/loam.js', import.meta.url).pathname;

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** `loam <args>`; $KUBECONFIG is `kubeconfigEnv`, never the caller's. Killed after `timeoutMs`. */
export function runLoam(args: string[], kubeconfigEnv?: string, timeoutMs = 60_000): Promise<CliRun> {
  const env = { ...process.env };
  delete env.KUBECONFIG;
  if (kubeconfigEnv !== undefined) env.KUBECONFIG = kubeconfigEnv;
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], { env, timeout: timeoutMs }, (err, stdout, stderr) => {
      resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** The one line a failed command prints, and that it exited 1. */
export function assertFails(run: CliRun, message: RegExp): void {
  assert.equal(run.code, 1, run.stderr);
  assert.equal(run.stdout, '');
  assert.equal(run.stderr.trimEnd().split('\n').length, 1, run.stderr);
  assert.match(run.stderr, message);
}
