/**
 * What the end-to-end tests of the libvirt agent share: a loopback HTTP server for the images and
 * kernels Instances fetch (files can be published late, to see an agent recover from a 404), an
 * Instance's status read through kubectl, a wait for a condition of it, and the removal of
 * domains a killed earlier run left on `qemu:///system`.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { virsh } from '../../hack/libvirtd.js';
import type { Kubectl } from './kubectl.js';
import { pollUntil } from './poll.js';

export interface FileServer {
  /** The URL a file is (or will be) served at. */
  url(path: string): string;
  /** Serves `bytes` at `path` from now on; until then `path` answers 404. */
  publish(path: string, bytes: Buffer): void;
  close(): Promise<void>;
}

export async function serveFiles(files: Record<string, Buffer> = {}): Promise<FileServer> {
  const served = new Map(Object.entries(files));
  const server = createServer((request, response) => {
    const bytes = served.get(request.url ?? '');
    if (bytes === undefined) response.writeHead(404).end();
    else response.writeHead(200, { 'content-length': bytes.length }).end(bytes);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: (path) => `http://127.0.0.1:${port}${path}`,
    publish: (path, bytes) => served.set(path, bytes),
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
  lastTransitionTime: string;
}

export interface ObjectStatus {
  phase?: string;
  host?: string;
  conditions?: Condition[];
}

/** The status of `kind/name` (default namespace for namespaced kinds); undefined while it does not exist. */
export async function statusOf(k: Kubectl, kind: string, name: string): Promise<ObjectStatus | undefined> {
  const got = await k.run(['get', kind, name, '-o', 'json']);
  if (got.code !== 0) {
    if (/NotFound/.test(got.stderr)) return undefined;
    throw new Error(`kubectl get ${kind} ${name} exited ${got.code}: ${got.stderr.trim()}`);
  }
  return (JSON.parse(got.stdout) as { status?: ObjectStatus }).status ?? {};
}

export function conditionOf(status: ObjectStatus | undefined, type: string): Condition | undefined {
  return status?.conditions?.find((condition) => condition.type === type);
}

/**
 * Polls `kind/name` until `accept` takes its status, and returns that status; a timeout names
 * `what` and shows the last status seen.
 */
export async function waitForStatus(
  k: Kubectl,
  kind: string,
  name: string,
  what: string,
  accept: (status: ObjectStatus) => boolean,
  timeoutMs = 60_000,
): Promise<ObjectStatus> {
  let last: ObjectStatus | undefined;
  await pollUntil(
    async () => {
      last = await statusOf(k, kind, name);
      return last !== undefined && accept(last);
    },
    { timeoutMs, intervalMs: 250, what: () => `${kind} ${name}: ${what} (status: ${JSON.stringify(last)})` },
  );
  return last as ObjectStatus;
}

/** The names of every domain on `qemu:///system`, defined or running. */
export async function systemDomains(): Promise<string[]> {
  const listed = await virsh(['list', '--all', '--name']);
  if (listed.code !== 0) throw new Error(`virsh list --all exited ${listed.code}: ${listed.stderr.trim()}`);
  return listed.stdout.split('\n').filter(Boolean);
}

/** Destroys and undefines these domains where they exist, so a failed run leaves nothing behind. */
export async function removeDomains(names: string[]): Promise<void> {
  const present = await systemDomains();
  for (const name of names.filter((candidate) => present.includes(candidate))) {
    await virsh(['destroy', name]);
    await virsh(['undefine', name]);
  }
}
