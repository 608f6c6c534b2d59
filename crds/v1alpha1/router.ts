import { z } from 'zod';
import { networkHost } from '../formats.js';
import { timestamp } from '../meta.js';
import { ageColumn, defineKind, readyColumn, segmentIdRange, statusSchema } from './common.js';

export const routerDrivers = ['openwrt', 'linux'] as const;

export const routerSpecSchema = z.object({
  driver: z.enum(routerDrivers).describe('openwrt (UCI) or linux (iproute2, nftables, dnsmasq).'),
  unschedulable: z.boolean().default(false).describe('Place no new Networks here.'),
  segmentPool: z
    .object({
      vlan: segmentIdRange('vlan').optional(),
      vxlan: segmentIdRange('vxlan').optional(),
    })
    .default({ vxlan: { start: 4096, end: 8191 } })
    .describe('Segment ids given to Networks that do not choose one.'),
  wireguardEndpointHost: networkHost()
    .optional()
    .describe('The public DNS name or address WireGuard peers dial.'),
});

export const routerStatusSchema = statusSchema({
  facts: z
    .object({
      hostname: z.string().optional(),
      agentVersion: z.string().optional(),
      driverVersion: z.string().optional(),
      driver: z.enum(routerDrivers).optional(),
      nftablesVersion: z.string().optional(),
      dnsmasqVersion: z.string().optional(),
      wireguardToolsVersion: z.string().optional(),
      interfaces: z.string().optional().describe("The router's own network interfaces, comma-separated."),
    })
    .optional(),
  heartbeatTime: timestamp().optional(),
  networks: z.number().int().min(0).optional().describe('How many Networks the router serves.'),
});

export const routerKind = defineKind({
  kind: 'Router',
  plural: 'routers',
  shortNames: ['rtr'],
  scope: 'Cluster',
  description: 'A router running the network agent; created when the agent enrolls.',
  spec: routerSpecSchema,
  status: routerStatusSchema,
  printerColumns: [
    { name: 'Driver', type: 'string', jsonPath: '.spec.driver' },
    readyColumn,
    { name: 'Networks', type: 'integer', jsonPath: '.status.networks' },
    ageColumn,
  ],
});

export const routerSchema = routerKind.schema;
export type Router = z.infer<typeof routerSchema>;
export type RouterSpec = z.infer<typeof routerSpecSchema>;
export type RouterStatus = z.infer<typeof routerStatusSchema>;
