/**
 * What `loam console NAMESPACE/NAME` does: opens the Instance's console subresource as a
 * WebSocket with the user's credentials (the kubeconfig's, as kubectl uses them) and joins it to
 * the terminal: raw mode when stdin is a TTY, Ctrl+] to detach (as `virsh console`), and plain
 * pipes otherwise, so scripts and tests can drive it. The API server's pings keep an idle session
 * open (ws answers them). Every failure is a LoamError with a one-line message.
 */
import { spawnSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import type { KubeConfig } from '@kubernetes/client-node';
import { type ClientOptions, WebSocket } from 'ws';
import { isLoamError, LoamError } from '../../crds/errors.js';
import { instanceSubresourceUrl, refusal } from './subresource-request.js';

/** Ctrl+] detaches, as in virsh and telnet. */
export const escapeByte = 0x1d;

/** The API server answers once the agent opened the console (within the hub's 10 s) or refused. */
const handshakeTimeoutMs = 30_000;
/** A refusal's Status is small; anything longer is cut. */
const maxRefusalBytes = 64 * 1024;
/** How often to ask again while waiting for the Instance to run. */
const retryIntervalMs = 500;

export interface ConsoleTerminal {
  input: NodeJS.ReadableStream & { isTTY?: boolean; fd?: number; setRawMode?(raw: boolean): unknown };
  output: NodeJS.WritableStream;
  /** Where notices go (stderr), so the output is the console's bytes alone. */
  notices: NodeJS.WritableStream;
  /** Aborting detaches, as the escape character does (SIGINT, SIGTERM), or stops the wait. */
  signal?: AbortSignal;
}

export interface AttachOptions {
  /**
   * How long to keep asking while the Instance is not running yet or its agent is not connected
   * (409, 503), as `virtctl console --timeout` waits; 0 fails at once.
   */
  waitMs?: number;
}

/** The bytes of `chunk` before the escape character, and whether it came. */
export function beforeEscape(chunk: Buffer): { data: Buffer; detach: boolean } {
  const at = chunk.indexOf(escapeByte);
  return at < 0 ? { data: chunk, detach: false } : { data: chunk.subarray(0, at), detach: true };
}

/** The WebSocket URL of an Instance's console on the API server at `server` (https://host:port[/prefix]). */
export function consoleUrl(server: string, namespace: string, name: string): string {
  return instanceSubresourceUrl(server, namespace, name, 'console').replace(/^http/, 'ws');
}

/**
 * Attaches the terminal to the console of namespace/name until the user detaches (resolves), the
 * console ends (resolves, with a notice: the domain stopped) or the session fails (rejects).
 */
export async function attachConsole(
  kubeConfig: KubeConfig,
  namespace: string,
  name: string,
  terminal: ConsoleTerminal,
  attach: AttachOptions = {},
): Promise<void> {
  const instance = `${namespace}/${name}`;
  const ws = await connect(kubeConfig, namespace, name, terminal, attach.waitMs ?? 0);
  const { input, output, notices, signal } = terminal;
  const raw = input.isTTY === true && input.setRawMode !== undefined;
  if (raw) makeRaw(input);
  notices.write(`Connected to instance ${instance}; escape character is ^] (Ctrl + ])\r\n`);
  let detached = false;
  const detach = () => {
    detached = true;
    ws.close(1000, 'detached');
  };
  const onInput = (chunk: Buffer | string) => {
    const { data, detach: escaped } = beforeEscape(Buffer.from(chunk));
    if (data.length > 0) {
      // One chunk in flight: a large pipe waits for the socket instead of filling memory.
      input.pause();
      ws.send(data, { binary: true }, () => input.resume());
    }
    if (escaped) detach();
  };
  ws.on('message', (data: Buffer) => {
    if (output.write(data)) return;
    ws.pause();
    output.once('drain', () => ws.resume());
  });
  input.on('data', onInput);
  input.resume();
  signal?.addEventListener('abort', detach, { once: true });
  if (signal?.aborted) detach();
  try {
    const { code, reason } = await new Promise<{ code: number; reason: string }>((resolve) => {
      ws.once('close', (closeCode: number, closeReason: Buffer) =>
        resolve({ code: closeCode, reason: closeReason.toString() }),
      );
    });
    if (detached) return;
    if (code === 1000) {
      notices.write(`\r\nThe console of instance ${instance} closed: ${reason || 'it ended'}\r\n`);
      return;
    }
    const why = code === 1006 ? 'the connection to the API server was lost' : reason || `code ${code}`;
    throw new LoamError('Unavailable', `the console of instance ${instance} closed: ${why}`);
  } finally {
    signal?.removeEventListener('abort', detach);
    input.removeListener('data', onInput);
    input.pause();
    if (raw) input.setRawMode?.(false);
  }
}

/**
 * Raw as virsh and kubectl make a terminal (cfmakeraw): Node's raw mode keeps output processing,
 * whose \n -> \r\n a full-screen program in the guest does not expect, so stty turns it off
 * too. Leaving raw mode (setRawMode(false), or libuv at exit) restores the terminal as it was.
 */
function makeRaw(input: ConsoleTerminal['input']): void {
  input.setRawMode?.(true);
  if (input.fd !== undefined)
    spawnSync('stty', ['-opost'], { stdio: [input.fd, 'ignore', 'ignore'], timeout: 5_000 });
}

/**
 * The console's WebSocket once the API server accepted it. While it answers that the Instance is
 * not running or its agent is not there (or cannot be reached), it is asked again until `waitMs`
 * has passed; every other refusal fails at once.
 */
async function connect(
  kubeConfig: KubeConfig,
  namespace: string,
  name: string,
  { notices, signal }: ConsoleTerminal,
  waitMs: number,
): Promise<WebSocket> {
  const instance = `${namespace}/${name}`;
  const server = kubeConfig.getCurrentCluster()?.server;
  if (server === undefined) throw new LoamError('BadRequest', 'the kubeconfig names no cluster');
  const deadline = Date.now() + waitMs;
  for (let attempt = 1; ; attempt++) {
    const options: ClientOptions = { handshakeTimeout: handshakeTimeoutMs };
    await kubeConfig.applyToHTTPSOptions(options);
    const ws = new WebSocket(consoleUrl(server, namespace, name), options);
    try {
      await opened(ws, server, instance, signal);
      return ws;
    } catch (err) {
      const interrupted = new LoamError(
        'Closed',
        `interrupted before the console of instance ${instance} opened`,
      );
      if (signal?.aborted) throw interrupted;
      const left = deadline - Date.now();
      if (!(isLoamError(err, 'Conflict') || isLoamError(err, 'Unavailable')) || left <= 0) throw err;
      if (attempt === 1) notices.write(`Waiting for instance ${instance}: ${err.message}\r\n`);
      try {
        await sleep(Math.min(retryIntervalMs, left), undefined, signal ? { signal } : {});
      } catch {
        throw interrupted;
      }
    }
  }
}

/** Resolves once the handshake is done; rejects with the API server's refusal or why it failed. */
function opened(ws: WebSocket, server: string, instance: string, signal?: AbortSignal): Promise<void> {
  const abort = () => ws.terminate();
  signal?.addEventListener('abort', abort, { once: true });
  return new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (req, res) => {
      let body = '';
      const refuse = () => {
        reject(refusal(res.statusCode ?? 0, body, instance, 'open the console of'));
        req.destroy();
      };
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        if (body.length < maxRefusalBytes) body += chunk;
      });
      res.on('end', refuse);
      res.on('error', refuse);
    });
    // The first failure settles it; later ones (the aborted request after a refusal) change nothing.
    ws.on('error', (err: Error) =>
      reject(new LoamError('Unavailable', `cannot reach the API server at ${server}: ${err.message}`)),
    );
  }).finally(() => signal?.removeEventListener('abort', abort));
}
