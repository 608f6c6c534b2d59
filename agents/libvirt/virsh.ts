/**
 * The Hypervisor over the `virsh` command line. Every call is bounded by a timeout, output is
 * read with real parsers (XML with fast-xml-parser, `domstats --raw` as key=value lines), and
 * libvirt's error messages become LoamError codes.
 *
 * Two ways to run virsh:
 * - exec (default): one `virsh -c <uri> <command>` process per call. Simple and isolated: a hung
 *   call is killed alone, and libvirtd holds all state.
 * - session: one long-lived interactive virsh reading commands from stdin, so one libvirt
 *   connection serves every call. Needed for `test:///default`, whose in-memory driver lives in
 *   the client process and starts afresh with each connection; it also saves a process per call.
 *   A call that times out kills the session; the next call starts a new one.
 */

import { type ChildProcessWithoutNullStreams, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ErrorCode, isLoamError, LoamError } from '../../crds/errors.js';
import {
  type DomainEvent,
  type DomainStatus,
  decodeState,
  type Hypervisor,
  type HypervisorVersion,
  pollEvents,
  type StatsGroup,
  waitForShutoff,
} from './hypervisor.js';

export interface VirshOptions {
  /** libvirt connection URI. */
  uri?: string;
  /** Bound on every virsh call. */
  timeoutMs?: number;
  /** One long-lived virsh for all calls instead of one process per call (see above). */
  session?: boolean;
  /** How to run virsh, e.g. ['sudo', 'virsh']. */
  command?: readonly string[];
  /** How often events() polls, and shutdown() checks whether the guest is off yet. */
  pollIntervalMs?: number;
}

/** Runs one virsh command and returns its standard output; throws a LoamError when it fails. */
type Runner = (args: readonly string[], timeoutMs: number) => Promise<string>;

// Fixed locale and terminal, so messages and the session's line echo look as the parsers expect.
const virshEnv = () => ({ ...process.env, LC_ALL: 'C', TERM: 'dumb' });

export class Virsh implements Hypervisor {
  readonly uri: string;
  private readonly timeoutMs: number;
  private readonly pollIntervalMs: number;
  private readonly run: Runner;
  private readonly session?: VirshSession;

  constructor(options: VirshOptions = {}) {
    this.uri = options.uri ?? 'qemu:///system';
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.pollIntervalMs = options.pollIntervalMs ?? 2_000;
    const argv = [...(options.command ?? ['virsh']), '-q', '-c', this.uri];
    if (options.session) {
      const session = new VirshSession(argv);
      this.session = session;
      this.run = (args, timeoutMs) => session.run(args, timeoutMs);
    } else {
      this.run = (args, timeoutMs) => execVirsh(argv, args, timeoutMs);
    }
  }

  private virsh(...args: string[]): Promise<string> {
    return this.run(args, this.timeoutMs);
  }

  async version(): Promise<HypervisorVersion> {
    return parseVersion(await this.virsh('version'));
  }

  async define(xml: string): Promise<void> {
    // A file private to this process (virsh cannot read a pipe Node gives it as stdin): a kernel
    // command line can carry configuration a guest treats as secret.
    const dir = await mkdtemp(join(tmpdir(), 'loam-define-'));
    try {
      const file = join(dir, 'domain.xml');
      await writeFile(file, xml, { mode: 0o600 });
      // --validate checks the XML against libvirt's schema first, so a mistake is named, not ignored.
      await this.virsh('define', '--validate', file);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  async undefine(domain: string): Promise<void> {
    // No --nvram: Loam defines no UEFI domains (and the test driver rejects the flag).
    await this.virsh('undefine', domain);
  }

  async start(domain: string): Promise<void> {
    await this.virsh('start', domain);
  }

  async shutdown(domain: string, options: { timeoutMs: number }): Promise<'shutdown' | 'destroyed'> {
    // No --mode: with no guest agent configured QEMU sends the ACPI power button event, and the
    // test driver rejects an explicit mode.
    try {
      await this.virsh('shutdown', domain);
    } catch (err) {
      if (!isLoamError(err, 'Conflict')) throw err; // not running: already off
      return 'shutdown';
    }
    if (await waitForShutoff(() => this.state(domain), options.timeoutMs, this.pollIntervalMs))
      return 'shutdown';
    try {
      await this.destroy(domain);
    } catch (err) {
      // It went off between the last check and the destroy.
      if (!isLoamError(err, 'Conflict')) throw err;
      return 'shutdown';
    }
    return 'destroyed';
  }

  async destroy(domain: string): Promise<void> {
    await this.virsh('destroy', domain);
  }

  async reboot(domain: string): Promise<void> {
    await this.virsh('reboot', domain);
  }

  async reset(domain: string): Promise<void> {
    await this.virsh('reset', domain);
  }

  async state(domain: string): Promise<DomainStatus> {
    const [status] = statusesOf(parseDomstats(await this.virsh('domstats', '--raw', '--state', domain)));
    if (status === undefined) throw new LoamError('NotFound', `domain ${domain} not found`);
    return status;
  }

  async list(): Promise<DomainStatus[]> {
    return statusesOf(parseDomstats(await this.virsh('domstats', '--raw', '--state')));
  }

  async dumpxml(domain: string, options: { inactive?: boolean } = {}): Promise<string> {
    return this.virsh('dumpxml', ...(options.inactive ? ['--inactive'] : []), domain);
  }

  async domstats(
    domains: string[] = [],
    groups: readonly StatsGroup[] = [],
  ): Promise<Map<string, Record<string, string>>> {
    const flags = groups.map((group) => `--${group}`);
    return parseDomstats(await this.virsh('domstats', '--raw', ...flags, ...domains));
  }

  events(signal: AbortSignal): AsyncIterable<DomainEvent> {
    // Polling rather than `virsh event --loop`: it works in a session too (where a looping command
    // would block every other call) and against the test driver, and a missed poll loses nothing.
    return pollEvents(() => this.list(), this.pollIntervalMs, signal);
  }

  async close(): Promise<void> {
    await this.session?.close();
  }
}

function execVirsh(argv: readonly string[], words: readonly string[], timeoutMs: number): Promise<string> {
  const [file = 'virsh', ...leading] = argv;
  return new Promise((resolve, reject) => {
    execFile(
      file,
      [...leading, ...words],
      { env: virshEnv(), timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err === null) resolve(stdout);
        else if (err.killed) reject(timedOut(words, timeoutMs));
        else if (typeof err.code === 'string')
          reject(new LoamError('Unavailable', `cannot run ${file}: ${err.message}`));
        else reject(virshError(words, `${stderr}${stdout}`));
      },
    );
  });
}

function timedOut(words: readonly string[], timeoutMs: number): LoamError {
  return new LoamError('Unavailable', `virsh ${words[0]} did not answer within ${timeoutMs} ms`);
}

// libvirt's messages (virerror.c) and virsh's own, most specific first. "failed to get domain" is
// what virsh prints when a name or UUID matches no domain.
const errorPatterns: [RegExp, ErrorCode][] = [
  [/failed to get domain|Domain not found|no domain with matching/i, 'NotFound'],
  [
    /failed to connect to the hypervisor|Failed to connect socket|End of file while reading data|Cannot recv data|Cannot write data|no connection driver available|Timed out during operation|cannot acquire state change lock/i,
    'Unavailable',
  ],
  [/already exists|exists already/i, 'AlreadyExists'],
  [/Requested operation is not valid|is already active|not running/i, 'Conflict'],
  [
    /XML error|XML document failed to validate|failed to parse|unsupported configuration|invalid argument|unknown OS type|\(domain_definition\)/i,
    'Invalid',
  ],
];

/** The LoamError for a failed virsh command, from what it printed. */
export function virshError(words: readonly string[], output: string): LoamError {
  const detail = errorDetail(output);
  const code = errorPatterns.find(([pattern]) => pattern.test(detail))?.[1] ?? 'Internal';
  return new LoamError(code, `virsh ${words[0]}: ${detail}`);
}

/** virsh's "error: " lines joined, or all it said when there are none. */
function errorDetail(output: string): string {
  const messages = output
    .split('\n')
    .filter((line) => line.startsWith('error: '))
    .map((line) => line.slice('error: '.length).trim());
  return messages.length > 0 ? messages.join(': ') : output.trim() || 'no message';
}

/**
 * `virsh domstats --raw` output: a `Domain: 'name'` line, then indented key=value lines, per domain.
 * The name is everything between the first and the last quote, so quotes inside it survive.
 */
export function parseDomstats(output: string): Map<string, Record<string, string>> {
  const domains = new Map<string, Record<string, string>>();
  let current: Record<string, string> | undefined;
  for (const line of output.split('\n')) {
    if (line.startsWith('Domain: ')) {
      const name = line.slice(line.indexOf("'") + 1, line.lastIndexOf("'"));
      current = {};
      domains.set(name, current);
      continue;
    }
    const eq = line.indexOf('=');
    if (current === undefined || eq < 0) continue;
    current[line.slice(0, eq).trim()] = line.slice(eq + 1);
  }
  return domains;
}

function statusesOf(stats: Map<string, Record<string, string>>): DomainStatus[] {
  return [...stats].map(([name, fields]) => ({
    name,
    ...decodeState(Number(fields['state.state'] ?? 0), Number(fields['state.reason'] ?? 0)),
  }));
}

/** `virsh version`: "Using library: libvirt 9.0.0" and "Running hypervisor: QEMU 7.2.0" lines. */
export function parseVersion(output: string): HypervisorVersion {
  const field = (label: string) =>
    output
      .split('\n')
      .find((line) => line.startsWith(`${label}:`))
      ?.slice(label.length + 1)
      .trim();
  const library = field('Using library');
  if (library === undefined)
    throw new LoamError('Internal', `unexpected virsh version output: ${output.trim()}`);
  const hypervisor = field('Running hypervisor');
  return hypervisor === undefined ? { library } : { library, hypervisor };
}

/**
 * One argument for virsh's interactive parser, which splits on blanks and reads quotes and
 * backslashes: everything but a few plain characters is backslash-escaped.
 */
export function quoteVirshArg(arg: string): string {
  // Control characters reach readline (a tab completes, a newline ends the command).
  // biome-ignore lint/suspicious/noControlCharactersInRegex: that is the point
  if (/[\u0000-\u001f\u007f]/.test(arg)) {
    throw new LoamError('Invalid', `virsh argument ${JSON.stringify(arg)} contains a control character`);
  }
  return arg === '' ? "''" : arg.replace(/[^A-Za-z0-9_./:=@+,-]/g, (c) => `\\${c}`);
}

/**
 * One interactive virsh, commands written to its stdin one at a time. Its stdout and stderr are
 * one pipe, so an error lands between the markers of the command that caused it. Each command is
 * framed by `echo` commands with random markers; readline echoes every input line after the
 * prompt ("virsh # " as root, "virsh $ " otherwise), so a command's output starts after the line
 * that follows the begin marker's output and ends at the prompt that echoes the end marker.
 */
class VirshSession {
  private child?: ChildProcessWithoutNullStreams;
  private output = '';
  private wake?: () => void;
  private exited?: Error;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly argv: readonly string[]) {}

  run(words: readonly string[], timeoutMs: number): Promise<string> {
    const result = this.queue.then(() => this.exec(words, timeoutMs));
    this.queue = result.catch(() => undefined);
    return result;
  }

  private async exec(words: readonly string[], timeoutMs: number): Promise<string> {
    const line = words.map(quoteVirshArg).join(' ');
    const id = randomBytes(16).toString('hex');
    const child = this.spawn();
    child.stdin.write(`echo loam-begin-${id}\n${line}\necho loam-end-${id}\n`);
    const begin = new RegExp(`echo loam-begin-${id}\\r?\\nloam-begin-${id}\\r?\\n?virsh [#$] [^\\n]*\\n`);
    const end = new RegExp(`virsh [#$] echo loam-end-${id}\\r?\\nloam-end-${id}`);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const start = begin.exec(this.output);
      const stop = end.exec(this.output);
      if (start !== null && stop !== null) {
        const text = this.output.slice(start.index + start[0].length, stop.index);
        this.output = this.output.slice(stop.index + stop[0].length);
        if (/^error: /m.test(text)) throw virshError(words, text);
        return text;
      }
      if (this.exited !== undefined) {
        // What it said before exiting tells why, e.g. that it could not connect at startup.
        throw new LoamError(
          'Unavailable',
          `virsh ${words[0]}: ${this.exited.message}: ${errorDetail(this.output)}`,
        );
      }
      const left = deadline - Date.now();
      if (left <= 0 || !(await this.nextOutput(left))) {
        this.kill();
        throw timedOut(words, timeoutMs);
      }
    }
  }

  private spawn(): ChildProcessWithoutNullStreams {
    if (this.child !== undefined && this.exited === undefined) return this.child;
    this.output = '';
    this.exited = undefined;
    // The shell only joins stderr to stdout; exec leaves virsh as the child.
    const child = spawn('sh', ['-c', 'exec "$@" 2>&1', 'sh', ...this.argv], { env: virshEnv() });
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      if (this.child !== child) return; // a killed session's last words
      this.output += chunk;
      this.wake?.();
    });
    const ended = (err: Error) => {
      if (this.child !== child) return;
      this.exited ??= err;
      this.wake?.();
    };
    child.on('error', ended);
    child.on('exit', (code, signal) => ended(new Error(`virsh exited (${signal ?? code})`)));
    // A write after virsh died must not crash the agent; the exit above reports it.
    child.stdin.on('error', () => undefined);
    this.child = child;
    return child;
  }

  /** Resolves true when more output (or an exit) arrived, false after `ms` without any. */
  private nextOutput(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      this.wake = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve(true);
      };
    });
  }

  private kill(): void {
    this.child?.kill('SIGKILL');
    this.exited ??= new Error('virsh was killed');
  }

  async close(): Promise<void> {
    await this.queue;
    const child = this.child;
    if (child !== undefined && this.exited === undefined) {
      const gone = new Promise((resolve) => child.once('exit', resolve));
      child.stdin.end('quit\n');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await gone;
      clearTimeout(timer);
    }
    this.child = undefined;
  }
}
