/**
 * Runs an agent's external tools (ip, nft, qemu-img, xorriso …): always bounded by a timeout and
 * killed with SIGKILL when it passes, in the C locale so messages can be matched, and failing with
 * a CommandFailed that says how it failed. Callers turn that into their own LoamError codes.
 */
import { type ExecFileException, execFile } from 'node:child_process';
import { LoamError } from '../../crds/errors.js';

export interface CommandOptions {
  timeoutMs: number;
  /** Aborts the command (a job's deadline). */
  signal?: AbortSignal;
  /** The whole environment of the command; LC_ALL=C is added. */
  env?: NodeJS.ProcessEnv;
  /** The command as errors name it, when argv wraps it (`ip netns exec NS …`). */
  shownAs?: readonly string[];
  /** Written to its stdin, which is then closed (`uci batch`). */
  input?: string;
}

/** missing: not on PATH; timeout: killed after timeoutMs; aborted: the signal fired; exited: non-zero exit. */
export type CommandFailure = 'missing' | 'timeout' | 'aborted' | 'exited';

/** A command that failed. Its message never holds stdout, which may be secret (`wg show … dump`). */
export class CommandFailed extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly failure: CommandFailure,
    /** stderr, trimmed, when it exited non-zero. */
    readonly stderr: string,
    detail: string,
  ) {
    super(`${argv.join(' ')}: ${detail}`);
    this.name = 'CommandFailed';
  }
}

export function runCommand(argv: readonly string[], options: CommandOptions): Promise<string> {
  const [file = '', ...args] = argv;
  const { timeoutMs, signal, shownAs = argv } = options;
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      {
        encoding: 'utf8',
        timeout: timeoutMs,
        killSignal: 'SIGKILL',
        maxBuffer: 64 << 20,
        env: { ...(options.env ?? process.env), LC_ALL: 'C' },
        ...(signal ? { signal } : {}),
      },
      (err: ExecFileException | null, stdout: string, stderr: string) => {
        if (!err) return resolve(stdout);
        const text = stderr.trim();
        if (signal?.aborted) reject(new CommandFailed(shownAs, 'aborted', text, "the job's deadline passed"));
        else if (err.code === 'ENOENT')
          reject(new CommandFailed(shownAs, 'missing', text, `${file} is not on PATH`));
        else if (err.killed) {
          reject(new CommandFailed(shownAs, 'timeout', text, `did not finish within ${timeoutMs} ms`));
        } else reject(new CommandFailed(shownAs, 'exited', text, text || err.message));
      },
    );
    if (options.input !== undefined) {
      // A command that exits without reading it all fails the write: its exit status says why.
      child.stdin?.on('error', () => {});
      child.stdin?.end(options.input);
    }
  });
}

/**
 * A failed command as the coded error an agent answers with: a passed deadline is
 * DeadlineExceeded, a missing tool or a timeout Unavailable (worth retrying once fixed), a
 * non-zero exit Internal with what it printed on stderr.
 */
export function commandError(err: CommandFailed): LoamError {
  const code =
    err.failure === 'aborted' ? 'DeadlineExceeded' : err.failure === 'exited' ? 'Internal' : 'Unavailable';
  return new LoamError(code, err.message, { cause: err });
}
