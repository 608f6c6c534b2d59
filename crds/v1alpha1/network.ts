import { z } from 'zod';
import { dnsLabel, duration, hostPort, port, wireguardKey } from '../formats.js';
import { cidrsOverlap, ipv4, ipv4Cidr, ipv4ToNumber, isHostAddressIn } from '../ip.js';
import { addFieldIssue } from '../issues.js';
import { celRules, immutable } from '../meta.js';
import { ageColumn, defineKind, maxSegmentId, phaseColumn, segmentTypes, statusSchema } from './common.js';

export const networkPhases = ['Pending', 'Ready', 'Failed', 'Terminating'] as const;

// /30 is the smallest subnet with room for a gateway and one host; /8 bounds what DHCP and IPAM
// have to track.
const minPrefix = 8;
const maxPrefix = 30;

const dhcpSchema = z
  .object({
    enabled: z.boolean().default(true),
    rangeStart: ipv4().optional().describe('First address handed out by DHCP; with rangeEnd.'),
    rangeEnd: ipv4().optional().describe('Last address handed out by DHCP; with rangeStart.'),
    // dnsmasq refuses leases shorter than two minutes.
    leaseTime: duration({ min: '2m' }).default('12h'),
  })
  .meta(
    celRules({
      rule: 'has(self.rangeStart) == has(self.rangeEnd)',
      message: 'rangeStart and rangeEnd must be set together',
    }),
  );

const segmentSchema = z
  .object({
    type: z.enum(segmentTypes),
    id: z
      .number()
      .int()
      .min(1)
      .max(maxSegmentId.vxlan)
      .describe('VLAN id (1-4094) or VXLAN VNI (1-16777215).'),
  })
  .superRefine((segment, ctx) => {
    const max = maxSegmentId[segment.type];
    if (segment.id > max) {
      addFieldIssue(
        ctx,
        ['id'],
        'FieldValueInvalid',
        `must be between 1 and ${max} for a ${segment.type} segment`,
      );
    }
  })
  .meta(
    celRules({
      rule: `self.type != 'vlan' || self.id <= ${maxSegmentId.vlan}`,
      message: `a vlan id must be between 1 and ${maxSegmentId.vlan}`,
    }),
  );

const wireguardServerSchema = z.object({
  enabled: z.boolean().default(true),
  port: port().default(51820).describe('UDP port the router listens on.'),
  cidr: ipv4Cidr(minPrefix, maxPrefix).describe(
    'Tunnel subnet peers get addresses from; must not overlap cidr.',
  ),
  endpoint: hostPort()
    .optional()
    .describe("host:port peers dial; the Router's wireguardEndpointHost and port when omitted."),
});

export const networkSpecSchema = z
  .object({
    cidr: ipv4Cidr(minPrefix, maxPrefix)
      .describe('The IPv4 subnet, e.g. 10.20.0.0/24; cannot be changed.')
      .meta(immutable()),
    gateway: ipv4().optional().describe("The router's address in cidr; set by the controller when omitted."),
    dhcp: dhcpSchema.prefault({}),
    segment: segmentSchema
      .optional()
      .describe('The L2 segment; allocated from the Router pool when omitted.'),
    egress: z.boolean().default(false).describe('Route (NAT) traffic to the internet.'),
    router: dnsLabel().optional().describe('The Router serving this Network; chosen when omitted.'),
    dns: z.array(ipv4()).optional().describe('DNS servers announced by DHCP.'),
    wireguard: wireguardServerSchema
      .optional()
      .describe('A WireGuard server for remote access to the Network.'),
  })
  .superRefine((spec, ctx) => {
    const { cidr, gateway, dhcp, wireguard } = spec;
    const hostAddressProblem = `must be a host address in ${cidr} (not its network or broadcast address)`;
    if (gateway !== undefined && !isHostAddressIn(cidr, gateway)) {
      addFieldIssue(ctx, ['gateway'], 'FieldValueInvalid', hostAddressProblem);
    }

    const { rangeStart, rangeEnd } = dhcp;
    if ((rangeStart === undefined) !== (rangeEnd === undefined)) {
      const missing = rangeStart === undefined ? 'rangeStart' : 'rangeEnd';
      addFieldIssue(
        ctx,
        ['dhcp', missing],
        'FieldValueRequired',
        'rangeStart and rangeEnd must be set together',
      );
    } else if (rangeStart !== undefined && rangeEnd !== undefined) {
      const startInside = isHostAddressIn(cidr, rangeStart);
      const endInside = isHostAddressIn(cidr, rangeEnd);
      if (!startInside) addFieldIssue(ctx, ['dhcp', 'rangeStart'], 'FieldValueInvalid', hostAddressProblem);
      if (!endInside) addFieldIssue(ctx, ['dhcp', 'rangeEnd'], 'FieldValueInvalid', hostAddressProblem);
      const start = ipv4ToNumber(rangeStart);
      const end = ipv4ToNumber(rangeEnd);
      if (startInside && endInside && start > end) {
        addFieldIssue(
          ctx,
          ['dhcp', 'rangeEnd'],
          'FieldValueInvalid',
          `must not be before rangeStart ${rangeStart}`,
        );
      }
      if (gateway !== undefined && ipv4ToNumber(gateway) >= start && ipv4ToNumber(gateway) <= end) {
        addFieldIssue(
          ctx,
          ['gateway'],
          'FieldValueInvalid',
          `must not be inside the DHCP range ${rangeStart}-${rangeEnd}`,
        );
      }
    }

    if (wireguard !== undefined && cidrsOverlap(cidr, wireguard.cidr)) {
      addFieldIssue(ctx, ['wireguard', 'cidr'], 'FieldValueInvalid', `must not overlap cidr ${cidr}`);
    }
  });

export const networkStatusSchema = statusSchema({
  phase: z.enum(networkPhases).optional(),
  router: dnsLabel().optional(),
  segment: segmentSchema.optional(),
  gateway: ipv4().optional(),
  wireguard: z
    .object({
      publicKey: wireguardKey().optional(),
      endpoint: hostPort().optional(),
    })
    .optional()
    .describe("What a peer's configuration needs: the server's public key and where to dial."),
});

export const networkKind = defineKind({
  kind: 'Network',
  plural: 'networks',
  shortNames: ['net'],
  scope: 'Namespaced',
  description:
    'An isolated L2 segment and IPv4 subnet with DHCP, optional egress and an optional WireGuard server.',
  spec: networkSpecSchema,
  status: networkStatusSchema,
  printerColumns: [
    { name: 'CIDR', type: 'string', jsonPath: '.spec.cidr' },
    { name: 'Segment', type: 'integer', jsonPath: '.status.segment.id' },
    { name: 'Router', type: 'string', jsonPath: '.status.router' },
    phaseColumn,
    ageColumn,
  ],
});

export const networkSchema = networkKind.schema;
export type Network = z.infer<typeof networkSchema>;
export type NetworkSpec = z.infer<typeof networkSpecSchema>;
export type NetworkStatus = z.infer<typeof networkStatusSchema>;
