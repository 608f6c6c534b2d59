/**
 * Bootstrap tokens, as kubeadm has them: `<id>.<secret>` ([a-z0-9]{6}.[a-z0-9]{16}), which an
 * agent trades once for a client certificate. Each is a Secret `bootstrap-token-<id>` in
 * kube-system holding only a SHA-256 of the secret, the role it may enroll, its expiry and its
 * usage count. They go through the Kubernetes API (client-node), never the store, so the same
 * code works against a cluster's kube-apiserver.
 */
import { createHash, randomInt, timingSafeEqual } from 'node:crypto';
import type { KubernetesObjectApi, V1Secret } from '@kubernetes/client-node';
import { LoamError } from '../../crds/errors.js';
import { formatTimestamp } from '../../crds/meta.js';
import { isApiStatus, retryOnConflict } from '../runtime/retry.js';
import { type AgentRole, agentRoles } from './certificates.js';

export const bootstrapTokenNamespace = 'kube-system';
export const bootstrapTokenSecretType = 'loam.dev/bootstrap-token';
const tokenPattern = /^([a-z0-9]{6})\.([a-z0-9]{16})$/;
const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
/** Concurrent enrollments with one token race on its Secret; each lost race re-reads it. */
const maxConsumeAttempts = 20;

/** What a token's Secret says, without the secret itself. */
export interface BootstrapTokenRecord {
  id: string;
  secretSha256: string;
  /** The only role it may enroll; any when absent. */
  role?: AgentRole;
  expiration: Date;
  usages: number;
  used: number;
}

export interface BootstrapTokenOptions {
  ttlSeconds: number;
  usages: number;
  role?: AgentRole;
}

function bootstrapTokenSecretName(id: string): string {
  return `bootstrap-token-${id}`;
}

function randomString(length: number): string {
  // randomInt draws without modulo bias.
  return Array.from({ length }, () => alphabet[randomInt(alphabet.length)]).join('');
}

const sha256Hex = (text: string) => createHash('sha256').update(text).digest('hex');
const b64 = (text: string) => Buffer.from(text).toString('base64');

function encodeRecord(record: BootstrapTokenRecord): Record<string, string> {
  return Object.fromEntries(
    Object.entries({
      'token-id': record.id,
      'token-secret-sha256': record.secretSha256,
      ...(record.role ? { role: record.role } : {}),
      expiration: formatTimestamp(record.expiration),
      usages: String(record.usages),
      used: String(record.used),
    }).map(([key, value]) => [key, b64(value)]),
  );
}

/** The record in a token Secret's data; undefined when any field is missing or malformed. */
export function decodeRecord(data: Record<string, string> | undefined): BootstrapTokenRecord | undefined {
  const field = (key: string) => {
    const value = data?.[key];
    return value === undefined ? undefined : Buffer.from(value, 'base64').toString();
  };
  const [id, secretSha256, role, expiration] = ['token-id', 'token-secret-sha256', 'role', 'expiration'].map(
    field,
  );
  const usages = Number(field('usages'));
  const used = Number(field('used'));
  const expires = new Date(expiration ?? '');
  const roleOk = role === undefined || (agentRoles as readonly string[]).includes(role);
  if (!id || !secretSha256 || !roleOk || Number.isNaN(expires.getTime())) return undefined;
  if (!Number.isSafeInteger(usages) || !Number.isSafeInteger(used)) return undefined;
  return {
    id,
    secretSha256,
    ...(role ? { role: role as AgentRole } : {}),
    expiration: expires,
    usages,
    used,
  };
}

/**
 * Why `secret` may not enroll an agent of `role` now under `record`, or undefined when it may.
 * The reasons name the token id (public, as in kubeadm) and never the secret.
 */
export function bootstrapTokenProblem(
  record: BootstrapTokenRecord,
  secret: string,
  role: AgentRole,
  now: Date,
): string | undefined {
  const expected = Buffer.from(record.secretSha256, 'hex');
  const actual = createHash('sha256').update(secret).digest();
  // Constant time, so the response time tells nothing about how much of the secret matched.
  if (expected.length !== actual.length || !timingSafeEqual(expected, actual)) {
    return `bootstrap token ${record.id}: wrong secret`;
  }
  if (now.getTime() >= record.expiration.getTime()) {
    return `bootstrap token ${record.id} expired at ${formatTimestamp(record.expiration)}`;
  }
  if (record.used >= record.usages) {
    return `bootstrap token ${record.id} has been used ${record.used} of ${record.usages} times`;
  }
  if (record.role !== undefined && record.role !== role) {
    return `bootstrap token ${record.id} is for ${record.role} agents, not ${role}`;
  }
  return undefined;
}

/** Makes a token and stores its Secret; returns the token (the only time the secret is seen). */
export async function createBootstrapToken(
  api: KubernetesObjectApi,
  options: BootstrapTokenOptions,
  now = new Date(),
): Promise<{ token: string; id: string; expiration: Date }> {
  const id = randomString(6);
  const secret = randomString(16);
  const expiration = new Date(now.getTime() + options.ttlSeconds * 1000);
  const record: BootstrapTokenRecord = {
    id,
    secretSha256: sha256Hex(secret),
    ...(options.role ? { role: options.role } : {}),
    expiration,
    usages: options.usages,
    used: 0,
  };
  await api.create<V1Secret>({
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: bootstrapTokenSecretName(id), namespace: bootstrapTokenNamespace },
    type: bootstrapTokenSecretType,
    data: encodeRecord(record),
  });
  return { token: `${id}.${secret}`, id, expiration };
}

/** The public half of a token, for logs; undefined when it is not shaped like a token. */
export function bootstrapTokenId(token: string): string | undefined {
  return tokenPattern.exec(token)?.[1];
}

/**
 * Uses `token` once for enrolling an agent of `role`, or fails with Unauthorized saying why.
 * The count goes up by a compare-and-swap on the Secret's resourceVersion, so concurrent
 * enrollments never use a token more often than allowed.
 */
export async function consumeBootstrapToken(
  api: KubernetesObjectApi,
  token: string,
  role: AgentRole,
  now = new Date(),
): Promise<BootstrapTokenRecord> {
  const match = tokenPattern.exec(token);
  const id = match?.[1];
  const secret = match?.[2];
  if (!id || !secret) throw new LoamError('Unauthorized', 'malformed bootstrap token');
  const ref = {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: bootstrapTokenSecretName(id), namespace: bootstrapTokenNamespace },
  };
  try {
    return await retryOnConflict(async () => {
      const stored = await api.read<V1Secret>(ref);
      const record = stored.type === bootstrapTokenSecretType ? decodeRecord(stored.data) : undefined;
      if (!record || record.id !== id) throw new LoamError('Unauthorized', `malformed bootstrap token ${id}`);
      const problem = bootstrapTokenProblem(record, secret, role, now);
      if (problem) throw new LoamError('Unauthorized', problem);
      const used = { ...record, used: record.used + 1 };
      // stored.metadata.resourceVersion makes this a compare-and-swap.
      await api.replace<V1Secret>({ ...stored, data: encodeRecord(used) });
      return used;
    }, maxConsumeAttempts);
  } catch (err) {
    if (err instanceof LoamError) throw err;
    // Deleted under us, or never there.
    if (isApiStatus(err, 404)) throw new LoamError('Unauthorized', `unknown bootstrap token ${id}`);
    throw new LoamError('Unavailable', `cannot use bootstrap token ${id} now`, { cause: err });
  }
}

/** The command that joins an agent of `role` to the control plane at `server` with `token`. */
export function joinCommand(role: AgentRole, server: string, token: string, pin: string): string {
  return `loam agent ${role} --server ${server} --token ${token} --ca-pin ${pin} --data-dir /var/lib/loam-agent`;
}
