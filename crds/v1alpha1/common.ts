/** What the kinds of loam.dev/v1alpha1 share: the group, the object envelope, columns, segments. */

import { z } from 'zod';
import { addFieldIssue } from '../issues.js';
import type { ActionSubresource, ConnectSubresource, KindInfo, PrinterColumn } from '../kind.js';
import { celRules, conditionList, generation, objectMeta, type Scope } from '../meta.js';

export const group = 'loam.dev';
export const version = 'v1alpha1';
export const apiVersion = `${group}/${version}` as const;

/** A status object with the fields every kind's status has: conditions and observedGeneration. */
export function statusSchema<Shape extends z.ZodRawShape>(shape: Shape) {
  return z.object({
    ...shape,
    conditions: conditionList().optional(),
    observedGeneration: generation().optional(),
  });
}

/**
 * A kind of this group: its object schema (apiVersion, kind, metadata for its scope, spec,
 * optional status) and the names and columns derived the Kubernetes way.
 */
export function defineKind<
  Kind extends string,
  Spec extends z.ZodType,
  Status extends z.ZodType,
>(definition: {
  kind: Kind;
  plural: string;
  shortNames: string[];
  scope: Scope;
  description: string;
  spec: Spec;
  status: Status;
  printerColumns: PrinterColumn[];
  connectSubresources?: readonly ConnectSubresource[];
  actionSubresources?: readonly ActionSubresource[];
}) {
  const {
    kind,
    plural,
    shortNames,
    scope,
    description,
    spec,
    status,
    printerColumns,
    connectSubresources,
    actionSubresources,
  } = definition;
  const schema = z
    .object({
      apiVersion: z.literal(apiVersion),
      kind: z.literal(kind),
      metadata: objectMeta(scope),
      spec,
      status: status.optional(),
    })
    .describe(description);
  const info: KindInfo<typeof schema> = {
    group,
    version,
    kind,
    plural,
    singular: kind.toLowerCase(),
    listKind: `${kind}List`,
    shortNames,
    // `kubectl get loam` lists every Loam object.
    categories: ['loam'],
    scope,
    statusSubresource: true,
    ...(connectSubresources ? { connectSubresources } : {}),
    ...(actionSubresources ? { actionSubresources } : {}),
    schema,
    printerColumns,
  };
  return info;
}

export const phaseColumn: PrinterColumn = { name: 'Phase', type: 'string', jsonPath: '.status.phase' };
export const readyColumn: PrinterColumn = {
  name: 'Ready',
  type: 'string',
  jsonPath: '.status.conditions[?(@.type=="Ready")].status',
};
export const ageColumn: PrinterColumn = {
  name: 'Age',
  type: 'date',
  jsonPath: '.metadata.creationTimestamp',
};

export const segmentTypes = ['vlan', 'vxlan'] as const;
export type SegmentType = (typeof segmentTypes)[number];

/** 802.1Q VLAN ids are 1..4094 (0 and 4095 are reserved); VXLAN network identifiers are 24 bits. */
export const maxSegmentId: Record<SegmentType, number> = { vlan: 4094, vxlan: 16777215 };

function segmentId(type: SegmentType) {
  return z.number().int().min(1).max(maxSegmentId[type]);
}

/** An inclusive range of segment ids of one type, from which networks without a segment get one. */
export function segmentIdRange(type: SegmentType) {
  return z
    .object({ start: segmentId(type), end: segmentId(type) })
    .superRefine((range, ctx) => {
      if (range.start > range.end) {
        addFieldIssue(ctx, ['end'], 'FieldValueInvalid', 'must be greater than or equal to start');
      }
    })
    .meta(
      celRules({ rule: 'self.start <= self.end', message: 'end must be greater than or equal to start' }),
    );
}
