/**
 * WireGuard keys and the wg-quick client configuration of a WireGuardPeer.
 *
 * A WireGuard key is the base64 of the raw 32 bytes of an X25519 key (44 characters), which is
 * what Node's X25519 keys are once the DER or JWK wrapping is taken off. renderClientConfig is
 * pure; generateKeyPair is the only function here that is not (it draws random bytes).
 */

import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';

export interface KeyPair {
  /** Base64 of the 32-byte X25519 private key, as `wg genkey` prints it. */
  privateKey: string;
  /** Base64 of the 32-byte X25519 public key, as `wg pubkey` prints it. */
  publicKey: string;
}

/** A fresh X25519 key pair, as `wg genkey | tee privatekey | wg pubkey` makes one. */
export function generateKeyPair(): KeyPair {
  const { privateKey } = generateKeyPairSync('x25519');
  const jwk = privateKey.export({ format: 'jwk' });
  return { privateKey: fromBase64url(jwk.d), publicKey: fromBase64url(jwk.x) };
}

// PKCS#8 PrivateKeyInfo for X25519 (RFC 8410) up to the 32 key bytes: Node imports a raw X25519
// private key only this way (a JWK would need the public half we are after).
const pkcs8X25519Prefix = Buffer.from('302e020100300506032b656e04220420', 'hex');

/** The public key of a WireGuard private key, as `wg pubkey` derives it. Throws on a malformed key. */
export function publicKeyOf(privateKey: string): string {
  const raw = Buffer.from(privateKey, 'base64');
  if (raw.length !== 32 || raw.toString('base64') !== privateKey) {
    throw new Error('a WireGuard private key is base64 of exactly 32 bytes');
  }
  const key = createPrivateKey({
    key: Buffer.concat([pkcs8X25519Prefix, raw]),
    format: 'der',
    type: 'pkcs8',
  });
  return fromBase64url(createPublicKey(key).export({ format: 'jwk' }).x);
}

function fromBase64url(value: string | undefined): string {
  if (value === undefined) throw new Error('X25519 JWK without key material');
  return Buffer.from(value, 'base64url').toString('base64');
}

/** Everything a client needs to dial a Network's WireGuard server. */
export interface ClientConfig {
  privateKey: string;
  /** The peer's tunnel address, without a prefix: the interface gets it as a /32. */
  address: string;
  /** DNS servers to use while the tunnel is up; the line is left out when empty. */
  dns: readonly string[];
  serverPublicKey: string;
  /** host:port of the server. */
  endpoint: string;
  /** What the client routes through the tunnel: the Network's subnet and its tunnel subnet. */
  allowedIPs: readonly string[];
  /** Seconds between keepalives; 0 leaves the line out (WireGuard's default: none). */
  persistentKeepalive: number;
}

/** The wg-quick(8) configuration for `config`: deterministic, so equal inputs give equal Secrets. */
export function renderClientConfig(config: ClientConfig): string {
  const lines = [
    '[Interface]',
    `PrivateKey = ${config.privateKey}`,
    `Address = ${config.address}/32`,
    ...(config.dns.length > 0 ? [`DNS = ${config.dns.join(', ')}`] : []),
    '',
    '[Peer]',
    `PublicKey = ${config.serverPublicKey}`,
    `Endpoint = ${config.endpoint}`,
    `AllowedIPs = ${config.allowedIPs.join(', ')}`,
    ...(config.persistentKeepalive > 0 ? [`PersistentKeepalive = ${config.persistentKeepalive}`] : []),
  ];
  return `${lines.join('\n')}\n`;
}
