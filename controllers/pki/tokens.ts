/**
 * Bearer tokens for the API: JWTs signed (RS256) with the control plane's token key, naming a
 * user and its groups, like Kubernetes service-account tokens. Stateless, so `loam kubeconfig
 * --token` issues one with the key from the data dir and the API server checks it with the
 * public half. The verifier fixes the algorithm itself and never trusts the token's header for it.
 */
import { createPublicKey, type KeyObject, sign, verify } from 'node:crypto';

const issuer = 'loam';
const audience = 'loam';
const groupsClaim = 'loam.dev/groups';

export interface TokenSubject {
  user: string;
  groups: string[];
}

function encode(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

export function issueToken(
  signingKeyPem: string,
  subject: TokenSubject & { validityDays: number },
  now = new Date(),
): string {
  const issuedAt = Math.floor(now.getTime() / 1000);
  const signed = `${encode({ alg: 'RS256', typ: 'JWT' })}.${encode({
    iss: issuer,
    aud: [audience],
    sub: subject.user,
    [groupsClaim]: subject.groups,
    iat: issuedAt,
    nbf: issuedAt,
    exp: issuedAt + subject.validityDays * 86_400,
  })}`;
  return `${signed}.${sign('sha256', Buffer.from(signed), signingKeyPem).toString('base64url')}`;
}

export function tokenVerificationKey(signingKeyPem: string): KeyObject {
  return createPublicKey(signingKeyPem);
}

/** The subject of a valid, unexpired token signed by `key`; undefined for anything else. */
export function verifyToken(key: KeyObject, token: string, now = new Date()): TokenSubject | undefined {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  const [header, payload, signature] = parts as [string, string, string];
  try {
    if (!verify('sha256', Buffer.from(`${header}.${payload}`), key, Buffer.from(signature, 'base64url'))) {
      return undefined;
    }
    if ((JSON.parse(Buffer.from(header, 'base64url').toString()) as { alg?: unknown }).alg !== 'RS256') {
      return undefined;
    }
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as Record<string, unknown>;
    const seconds = now.getTime() / 1000;
    const groups = claims[groupsClaim];
    const valid =
      claims.iss === issuer &&
      Array.isArray(claims.aud) &&
      claims.aud.includes(audience) &&
      typeof claims.sub === 'string' &&
      claims.sub !== '' &&
      Array.isArray(groups) &&
      groups.every((g) => typeof g === 'string') &&
      typeof claims.exp === 'number' &&
      seconds < claims.exp &&
      typeof claims.nbf === 'number' &&
      seconds >= claims.nbf;
    return valid ? { user: claims.sub as string, groups: groups as string[] } : undefined;
  } catch {
    // Malformed base64 or JSON: not a token of ours.
    return undefined;
  }
}
