import { z } from 'zod';
import { timestamp } from '../meta.js';
import { quantity } from '../quantity.js';
import { ageColumn, defineKind, readyColumn, statusSchema } from './common.js';

export const domainTypes = ['kvm', 'qemu'] as const;

const resourcesSchema = z.object({
  cpus: z.number().int().min(0),
  memory: quantity(),
});

/** Most orphaned domains a Host's status lists (the loam_host_orphaned_domains gauge counts them all). */
export const maxOrphanedDomains = 100;

export const orphanedDomainSchema = z.object({
  namespace: z.string(),
  name: z.string(),
  uid: z.string(),
});

export const hostSpecSchema = z.object({
  unschedulable: z.boolean().default(false).describe('Place no new Instances here (kubectl cordon).'),
});

export const hostStatusSchema = statusSchema({
  capacity: resourcesSchema.optional(),
  allocatable: resourcesSchema.optional().describe('Capacity minus what the host keeps for itself.'),
  facts: z
    .object({
      hostname: z.string().optional(),
      arch: z.string().optional(),
      kernelVersion: z.string().optional(),
      libvirtVersion: z.string().optional(),
      domainType: z
        .enum(domainTypes)
        .optional()
        .describe('kvm with hardware virtualization, qemu (TCG) without.'),
      agentVersion: z.string().optional(),
    })
    .optional(),
  heartbeatTime: timestamp().optional(),
  orphanedDomains: z
    .array(orphanedDomainSchema)
    .max(maxOrphanedDomains)
    .optional()
    .describe(
      'Domains with Loam metadata on this host that no Instance wants (no Instance of that namespace, name and uid), sorted; Loam never removes them by itself.',
    ),
});

export const hostKind = defineKind({
  kind: 'Host',
  plural: 'hosts',
  shortNames: ['hv'],
  scope: 'Cluster',
  description: 'A hypervisor running the libvirt agent; created when the agent enrolls.',
  spec: hostSpecSchema.prefault({}),
  status: hostStatusSchema,
  printerColumns: [
    readyColumn,
    { name: 'CPUs', type: 'integer', jsonPath: '.status.capacity.cpus' },
    { name: 'Memory', type: 'string', jsonPath: '.status.capacity.memory' },
    ageColumn,
  ],
});

export const hostSchema = hostKind.schema;
export type Host = z.infer<typeof hostSchema>;
export type HostSpec = z.infer<typeof hostSpecSchema>;
export type HostStatus = z.infer<typeof hostStatusSchema>;
export type OrphanedDomain = z.infer<typeof orphanedDomainSchema>;
