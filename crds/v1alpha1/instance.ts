import { z } from 'zod';
import { artifactUrl, dnsLabel, macAddress, sha256Hex } from '../formats.js';
import { ipv4 } from '../ip.js';
import { addFieldIssue, requireExactlyOne } from '../issues.js';
import { actionSubresources } from '../kind.js';
import { celRules, labelMap, listMap } from '../meta.js';
import { quantity } from '../quantity.js';
import { ageColumn, defineKind, phaseColumn, statusSchema } from './common.js';

/** KubeVirt's run strategies: what the controller does when the VM stops. */
export const runStrategies = ['Always', 'RerunOnFailure', 'Manual', 'Halted'] as const;

export const instancePhases = [
  'Pending',
  'Scheduling',
  'Scheduled',
  'Provisioning',
  'Running',
  'Stopped',
  'Failed',
  'Terminating',
  'Unknown',
] as const;

/** A file an agent downloads and checks before use. */
const artifactSchema = z.object({
  url: artifactUrl(),
  sha256: sha256Hex().describe('SHA-256 of the file; the download is rejected when it differs.'),
});

const kernelBootSchema = artifactSchema.extend({
  initrd: artifactSchema.optional(),
  cmdline: z.string().optional().describe('Kernel command line.'),
});

const cloudInitSchema = z
  .object({
    userData: z.string().optional().describe('cloud-init user data, inline.'),
    userDataSecretRef: z
      .object({
        name: dnsLabel().describe('A Secret in the Instance namespace.'),
        key: z.string().min(1).default('userdata'),
      })
      .optional(),
  })
  .superRefine((cloudInit, ctx) => requireExactlyOne(ctx, cloudInit, 'userData', 'userDataSecretRef'))
  .meta(
    celRules({
      rule: 'has(self.userData) != has(self.userDataSecretRef)',
      message: 'exactly one of userData or userDataSecretRef must be set',
    }),
  );

const diskSchema = z.object({
  name: dnsLabel(),
  size: quantity(),
});

const networkAttachmentSchema = z.object({
  name: dnsLabel().describe('A Network in the Instance namespace.'),
  address: ipv4().optional().describe('A static address in the Network; allocated when omitted.'),
  mac: macAddress().optional().describe('Generated when omitted.'),
});

export const instanceSpecSchema = z
  .object({
    runStrategy: z
      .enum(runStrategies)
      .default('Always')
      .describe(
        'Always: keep it running; RerunOnFailure: restart unless it stopped cleanly; Manual; Halted: stopped.',
      ),
    cpus: z.number().int().min(1).max(256).default(1).describe('Virtual CPUs.'),
    memory: quantity({ min: '16Mi' }).default('512Mi').describe('Guest memory, e.g. 2Gi.'),
    machineType: z
      .string()
      .optional()
      .describe('libvirt machine type, e.g. q35; the host default when omitted.'),
    image: artifactSchema
      .optional()
      .describe('Boot a disk image (qcow2 or raw). Exactly one of image or kernel.'),
    kernel: kernelBootSchema
      .optional()
      .describe('Boot a kernel directly (unikernels). Exactly one of image or kernel.'),
    rootDisk: z
      .object({ size: quantity() })
      .optional()
      .describe('Grow the root disk made from image to this size.'),
    disks: listMap(diskSchema, 'name').optional().describe('Extra empty data disks.'),
    cloudInit: cloudInitSchema.optional(),
    networks: listMap(networkAttachmentSchema, 'name').optional(),
    host: dnsLabel().optional().describe('Run on this Host only.'),
    nodeSelector: labelMap().optional().describe('Run only on Hosts with all these labels.'),
  })
  .superRefine((spec, ctx) => {
    requireExactlyOne(ctx, spec, 'image', 'kernel');
    // Both need a disk image: cloud-init reads a seed disk the image's OS looks for, and a root
    // disk is made from the image.
    for (const field of ['cloudInit', 'rootDisk'] as const) {
      if (spec[field] !== undefined && spec.image === undefined) {
        addFieldIssue(ctx, [field], 'FieldValueForbidden', 'may only be set when booting an image');
      }
    }
  })
  .meta(
    celRules(
      { rule: 'has(self.image) != has(self.kernel)', message: 'exactly one of image or kernel must be set' },
      {
        rule: '!has(self.cloudInit) || has(self.image)',
        message: 'cloudInit may only be set when booting an image',
      },
      {
        rule: '!has(self.rootDisk) || has(self.image)',
        message: 'rootDisk may only be set when booting an image',
      },
    ),
  );

export const instanceStatusSchema = statusSchema({
  phase: z.enum(instancePhases).optional(),
  host: dnsLabel().optional().describe('The Host the Instance is scheduled to.'),
  interfaces: listMap(
    z.object({
      network: dnsLabel(),
      mac: macAddress().optional(),
      ipAddress: ipv4().optional(),
    }),
    'network',
  ).optional(),
});

export const instanceKind = defineKind({
  kind: 'Instance',
  plural: 'instances',
  shortNames: ['inst'],
  scope: 'Namespaced',
  description: 'A virtual machine booted from a disk image, or a unikernel booted from a kernel.',
  spec: instanceSpecSchema,
  status: instanceStatusSchema,
  printerColumns: [
    phaseColumn,
    { name: 'Host', type: 'string', jsonPath: '.status.host' },
    { name: 'IP', type: 'string', jsonPath: '.status.interfaces[0].ipAddress' },
    ageColumn,
  ],
  // The serial console, through the hub to the agent of the Instance's Host.
  connectSubresources: ['console'],
  // Power actions, through the hub to the same agent (or a change of spec.runStrategy).
  actionSubresources,
});

export const instanceSchema = instanceKind.schema;
export type Instance = z.infer<typeof instanceSchema>;
export type InstanceSpec = z.infer<typeof instanceSpecSchema>;
export type InstanceStatus = z.infer<typeof instanceStatusSchema>;
