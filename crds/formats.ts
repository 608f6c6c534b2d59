/**
 * Schema builders for the string formats the API uses more than once. Each one validates in zod
 * and, where a regex can say it, also emits a `pattern` so a cluster enforces the same rule.
 */

import ipaddr from 'ipaddr.js';
import { z } from 'zod';

const dnsLabelPattern = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const dnsSubdomainPattern = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** A lower-case RFC 1123 label: object names, and references to them. */
export function dnsLabel() {
  return z
    .string()
    .max(63)
    .regex(
      dnsLabelPattern,
      "must be a lower-case RFC 1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit (e.g. 'my-name')",
    );
}

export function isDnsSubdomain(value: string): boolean {
  return value.length <= 253 && dnsSubdomainPattern.test(value);
}

/** A DNS name or an IP address (v4 or v6) that a client dials. */
export function networkHost() {
  return z.string().refine(isNetworkHost, 'must be a DNS name or an IP address');
}

function isNetworkHost(value: string): boolean {
  return isDnsSubdomain(value) || ipaddr.IPv4.isValidFourPartDecimal(value) || ipaddr.IPv6.isValid(value);
}

export function port() {
  return z.number().int().min(1).max(65535);
}

/** "host:port", an IPv6 host in brackets ("[2001:db8::1]:51820"), as WireGuard's Endpoint takes it. */
export function hostPort() {
  return z.string().refine((value) => {
    const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
    if (!match) return false;
    const [, bracketedHost, host, portText] = match;
    const portNumber = Number(portText);
    const hostOk =
      bracketedHost !== undefined ? ipaddr.IPv6.isValid(bracketedHost) : isNetworkHost(host ?? '');
    return hostOk && portNumber >= 1 && portNumber <= 65535;
  }, 'must be host:port with a DNS name or IP address and a port from 1 to 65535 (IPv6 in brackets)');
}

/** Where an agent downloads a disk image or kernel from. */
export function artifactUrl() {
  const message = 'must be an http, https or file URL';
  return z
    .string()
    .regex(/^(https?|file):\/\//, { message, abort: true })
    .refine((value) => URL.canParse(value), message);
}

export function sha256Hex() {
  return z.string().regex(/^[0-9a-f]{64}$/, 'must be a SHA-256 digest: 64 lower-case hex digits');
}

/**
 * A unicast MAC address written as libvirt prints it. The second hex digit of the first octet being
 * even is the multicast bit being clear, so the pattern alone says "unicast".
 */
export function macAddress() {
  return z
    .string()
    .regex(
      /^[0-9a-f][02468ace](:[0-9a-f]{2}){5}$/,
      'must be a unicast MAC address written as six lower-case hex pairs (e.g. 52:54:00:12:34:56)',
    );
}

/** A WireGuard (Curve25519) key: the base64 encoding of exactly 32 bytes. */
export function wireguardKey() {
  const message = 'must be a WireGuard key: base64 of exactly 32 bytes (44 characters)';
  return z
    .string()
    .regex(/^[A-Za-z0-9+/]{43}=$/, { message, abort: true })
    .refine((value) => {
      const bytes = Buffer.from(value, 'base64');
      // Re-encoding catches non-canonical trailing bits that decode to the same 32 bytes.
      return bytes.length === 32 && bytes.toString('base64') === value;
    }, message);
}

const durationPattern = /^(\d+[smhd])+$/;
const secondsPerUnit: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/** Seconds in a duration such as "12h", "30m" or "1h30m" (units s, m, h, d). */
export function parseDuration(value: string): number {
  if (!durationPattern.test(value)) throw new Error(`invalid duration ${JSON.stringify(value)}`);
  let seconds = 0;
  for (const [, amount, unit] of value.matchAll(/(\d+)([smhd])/g)) {
    seconds += Number(amount) * (secondsPerUnit[unit ?? ''] ?? 0);
  }
  return seconds;
}

export function duration(options: { min?: string } = {}) {
  const { min } = options;
  return z
    .string()
    .regex(durationPattern, {
      message: 'must be a duration such as 12h, 30m or 1h30m (units s, m, h, d)',
      abort: true,
    })
    .refine(
      (value) => min === undefined || parseDuration(value) >= parseDuration(min),
      `must be at least ${min}`,
    );
}
