import { z } from 'zod';
import { dnsLabel, wireguardKey } from '../formats.js';
import { ipv4, ipv4Cidr } from '../ip.js';
import { immutable } from '../meta.js';
import { ageColumn, defineKind, phaseColumn, statusSchema } from './common.js';

export const wireguardPeerPhases = ['Pending', 'Ready', 'Failed'] as const;

export const wireguardPeerSpecSchema = z.object({
  network: dnsLabel()
    .describe('The Network in the same namespace this peer reaches; cannot be changed.')
    .meta(immutable()),
  publicKey: wireguardKey()
    .optional()
    .describe(
      "The peer's public key; when omitted a key pair is generated and the client config lands in a Secret.",
    ),
  address: ipv4()
    .optional()
    .describe("The peer's tunnel address; allocated from the Network's wireguard.cidr when omitted."),
  // No default route (/0 .. /7) behind a peer: it would pull the whole Network's traffic to one laptop.
  allowedIPs: z
    .array(ipv4Cidr(8, 32))
    .optional()
    .describe('Extra subnets routed to the peer, e.g. its home LAN.'),
  persistentKeepalive: z
    .number()
    .int()
    .min(0)
    .max(65535)
    .default(25)
    .describe('Seconds between keepalives that hold NAT mappings open; 0 disables them.'),
});

export const wireguardPeerStatusSchema = statusSchema({
  phase: z.enum(wireguardPeerPhases).optional(),
  address: ipv4().optional(),
  publicKey: wireguardKey().optional(),
  configSecretName: z
    .string()
    .optional()
    .describe('The Secret holding the wg-quick config of a generated key pair.'),
});

export const wireguardPeerKind = defineKind({
  kind: 'WireGuardPeer',
  plural: 'wireguardpeers',
  shortNames: ['wgpeer'],
  scope: 'Namespaced',
  description: 'Remote access to one Network over its WireGuard server.',
  spec: wireguardPeerSpecSchema,
  status: wireguardPeerStatusSchema,
  printerColumns: [
    { name: 'Network', type: 'string', jsonPath: '.spec.network' },
    { name: 'Address', type: 'string', jsonPath: '.status.address' },
    phaseColumn,
    ageColumn,
  ],
});

export const wireguardPeerSchema = wireguardPeerKind.schema;
export type WireGuardPeer = z.infer<typeof wireguardPeerSchema>;
export type WireGuardPeerSpec = z.infer<typeof wireguardPeerSpecSchema>;
export type WireGuardPeerStatus = z.infer<typeof wireguardPeerStatusSchema>;
