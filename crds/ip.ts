/**
 * IPv4 address and CIDR schemas, and the arithmetic the schemas' cross-field rules (and the IPAM
 * that hands out addresses) need. Networks are IPv4-only for now, so IPv6 input gets a message
 * that says so instead of a generic "invalid".
 */

import ipaddr from 'ipaddr.js';
import { z } from 'zod';
import { addFieldIssue } from './issues.js';

function ipv4Problem(value: string): string | undefined {
  if (ipaddr.IPv4.isValidFourPartDecimal(value)) return undefined;
  if (ipaddr.IPv6.isValid(value)) return 'must be an IPv4 address (IPv6 is not supported)';
  return 'must be an IPv4 address such as 192.0.2.1';
}

function ipv4CidrProblem(value: string, minPrefix: number, maxPrefix: number): string | undefined {
  if (!ipaddr.IPv4.isValidCIDRFourPartDecimal(value)) {
    if (ipaddr.IPv6.isValidCIDR(value)) return 'must be an IPv4 CIDR (IPv6 is not supported)';
    return 'must be an IPv4 CIDR such as 10.0.0.0/24';
  }
  const [address, prefix] = ipaddr.IPv4.parseCIDR(value);
  if (prefix < minPrefix || prefix > maxPrefix) {
    return `prefix length must be between ${minPrefix} and ${maxPrefix}`;
  }
  if (ipaddr.IPv4.networkAddressFromCIDR(value).toString() !== address.toString()) {
    return 'host bits must be zero';
  }
  if (`${address}/${prefix}` !== value) return `must be written as ${address}/${prefix}`;
  return undefined;
}

/** A dotted-quad IPv4 address (no leading zeros, no shorthand forms). */
export function ipv4() {
  return z
    .string()
    .superRefine((value, ctx) => {
      const problem = ipv4Problem(value);
      if (problem) addFieldIssue(ctx, [], 'FieldValueInvalid', problem);
    })
    .meta({ format: 'ipv4' });
}

/** An IPv4 network in CIDR notation: host bits zero, prefix length within [minPrefix, maxPrefix]. */
export function ipv4Cidr(minPrefix: number, maxPrefix: number) {
  return z
    .string()
    .superRefine((value, ctx) => {
      const problem = ipv4CidrProblem(value, minPrefix, maxPrefix);
      if (problem) addFieldIssue(ctx, [], 'FieldValueInvalid', problem);
    })
    .meta({ format: 'cidr' });
}

/** The address as an unsigned 32-bit number, for ordering and range arithmetic. */
export function ipv4ToNumber(address: string): number {
  return ipaddr.IPv4.parse(address)
    .toByteArray()
    .reduce((n, octet) => n * 256 + octet, 0);
}

/** Whether `address` can be given to a host in `cidr`: inside it, and neither its network nor its broadcast address. */
export function isHostAddressIn(cidr: string, address: string): boolean {
  const parsed = ipaddr.IPv4.parse(address);
  if (!parsed.match(ipaddr.IPv4.parseCIDR(cidr))) return false;
  const text = parsed.toString();
  return (
    text !== ipaddr.IPv4.networkAddressFromCIDR(cidr).toString() &&
    text !== ipaddr.IPv4.broadcastAddressFromCIDR(cidr).toString()
  );
}

/** Whether two CIDRs share any address; with host bits zero, that is one containing the other's network address. */
export function cidrsOverlap(a: string, b: string): boolean {
  const [networkA, prefixA] = ipaddr.IPv4.parseCIDR(a);
  const [networkB, prefixB] = ipaddr.IPv4.parseCIDR(b);
  return networkA.match(networkB, prefixB) || networkB.match(networkA, prefixA);
}
