/**
 * `loam console` as a script runs it: the real CLI (bin/loam, the shell entry point) in a child
 * process with piped stdin and stdout, so a test types into the console and reads what comes
 * back. Every wait is bounded.
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { symlinkSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { escapeByte } from '../../controllers/instance/console-command.js';
import { kubectlDir } from './kubectl.js';
import { pollUntil } from './poll.js';

const entryPoint = new URL('../../../bin/loam', import.meta.url).pathname;

export class ConsoleProcess {
  private out = '';
  private err = '';
  private exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    child.stdout.on('data', (chunk: Buffer) => {
      this.out += chunk.toString('latin1');
    });
    child.stderr.on('data', (chunk: Buffer) => {
      this.err += chunk;
    });
    child.once('exit', (code, signal) => {
      this.exit = { code, signal };
    });
    // A console that exited before a write: the exit says why.
    child.stdin.on('error', () => {});
  }

  /** `loam console <ref> --kubeconfig <kubeconfig> <flags>`, with $KUBECONFIG unset. */
  static start(ref: string, kubeconfig: string, flags: string[] = []): ConsoleProcess {
    const env = { ...process.env };
    delete env.KUBECONFIG;
    const args = ['console', ref, '--kubeconfig', kubeconfig, ...flags];
    return new ConsoleProcess(spawn(entryPoint, args, { env }));
  }

  /**
   * `kubectl loam console <ref>` with $KUBECONFIG: kubectl runs bin/loam as its plugin, linked as
   * kubectl-loam into `pluginDir`, which goes first on $PATH.
   */
  static startAsKubectlPlugin(ref: string, kubeconfig: string, pluginDir: string): ConsoleProcess {
    symlinkSync(entryPoint, join(pluginDir, 'kubectl-loam'));
    const env = {
      ...process.env,
      KUBECONFIG: kubeconfig,
      PATH: `${pluginDir}${delimiter}${process.env.PATH}`,
    };
    return new ConsoleProcess(spawn(join(kubectlDir, 'kubectl.1.33'), ['loam', 'console', ref], { env }));
  }

  /** What the console printed so far (bytes as latin1, so nothing is lost to decoding). */
  get stdout(): string {
    return this.out;
  }

  get stderr(): string {
    return this.err;
  }

  write(data: string | Buffer): void {
    this.child.stdin.write(data);
  }

  /** Waits until the console printed `text` (on stderr, its notices, when `from` says so). */
  async waitFor(text: string, timeoutMs = 30_000, from: 'stdout' | 'stderr' = 'stdout'): Promise<void> {
    const printed = () => (from === 'stdout' ? this.out : this.err);
    await pollUntil(() => printed().includes(text) || this.exit !== undefined, {
      timeoutMs,
      what: () =>
        `${JSON.stringify(text)} from loam console (it printed ${JSON.stringify(printed().slice(-500))})`,
    });
    if (!printed().includes(text)) {
      throw new Error(
        `loam console exited (${this.exit?.code}) without ${JSON.stringify(text)}: ${this.err}`,
      );
    }
  }

  /** Waits for the process to exit; resolves with its exit code. */
  async exited(timeoutMs = 30_000): Promise<number | null> {
    await pollUntil(() => this.exit !== undefined, {
      timeoutMs,
      what: () => `loam console to exit (stderr: ${this.err})`,
    });
    return this.exit?.code ?? null;
  }

  /** Closes its stdin, as the end of a piped script does. */
  endInput(): void {
    this.child.stdin.end();
  }

  /** SIGTERM, and waits for the exit. */
  terminate(): Promise<number | null> {
    this.child.kill('SIGTERM');
    return this.exited();
  }

  /** Types the escape character (Ctrl+]) and waits for the exit. */
  detach(): Promise<number | null> {
    this.write(String.fromCharCode(escapeByte));
    return this.exited();
  }

  /** Kills it if it still runs: cleanup after a failed test. */
  kill(): void {
    if (this.exit === undefined) this.child.kill('SIGKILL');
  }
}
