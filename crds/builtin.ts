/**
 * The Kubernetes built-in kinds the API server serves beside loam.dev: core/v1 Namespace, Secret
 * and Event, and coordination.k8s.io/v1 Lease. Controllers and client-node need them (tenancy,
 * generated WireGuard configs, events, leader election), and kubectl treats them as the real
 * thing, so the fields, defaults and checks follow kube-apiserver's.
 */

import { z } from 'zod';
import { isDnsSubdomain } from './formats.js';
import { addFieldIssue } from './issues.js';
import type { KindInfo, PrinterColumn } from './kind.js';
import { conditionStatuses, objectMeta, type Scope, timestamp } from './meta.js';
import { ageColumn } from './v1alpha1/common.js';
import { kinds as loamKinds } from './v1alpha1/index.js';

export const coreGroup = '';
export const coordinationGroup = 'coordination.k8s.io';

const dnsSubdomainMessage =
  "must be a lower-case RFC 1123 subdomain: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit (e.g. 'example.com')";

/**
 * ObjectMeta for kinds whose names are DNS subdomains rather than labels (Secrets such as Helm's
 * `sh.helm.release.v1.loam.v1`, Events named `<object>.<hex>`, Leases), as kube-apiserver allows.
 */
function subdomainObjectMeta(scope: Scope) {
  return objectMeta(scope).safeExtend({
    name: z.string().max(253).refine(isDnsSubdomain, dnsSubdomainMessage).optional(),
    // A prefix the server appends five characters to, so one trailing '-' is allowed.
    generateName: z
      .string()
      .max(253)
      .refine((value) => isDnsSubdomain(value.replace(/-$/, 'a')), dnsSubdomainMessage)
      .optional(),
  });
}

function int32() {
  return z.number().int().min(-2147483648).max(2147483647).meta({ format: 'int32' });
}

/** metav1.MicroTime: an RFC 3339 timestamp with microseconds, e.g. 2024-05-01T12:00:00.000000Z. */
function microTime() {
  return timestamp();
}

function builtinKind<Schema extends z.ZodType>(
  info: Pick<
    KindInfo<Schema>,
    | 'group'
    | 'version'
    | 'kind'
    | 'plural'
    | 'shortNames'
    | 'scope'
    | 'statusSubresource'
    | 'schema'
    | 'selectableFields'
  > & { printerColumns: PrinterColumn[] },
): KindInfo<Schema> {
  return {
    ...info,
    singular: info.kind.toLowerCase(),
    listKind: `${info.kind}List`,
    categories: [],
  };
}

// --- Namespace ---------------------------------------------------------------------------------

export const namespacePhases = ['Active', 'Terminating'] as const;

export const namespaceSchema = z
  .object({
    apiVersion: z.literal('v1'),
    kind: z.literal('Namespace'),
    // Namespace names are DNS labels, as objectMeta checks.
    metadata: objectMeta('Cluster'),
    spec: z
      .object({
        // Qualified names, checked exactly as metadata.finalizers are.
        finalizers: objectMeta('Cluster').shape.finalizers.describe(
          'Values that must be empty before the Namespace is removed from storage (e.g. kubernetes).',
        ),
      })
      .optional(),
    status: z
      .object({
        phase: z
          .enum(namespacePhases)
          .default('Active')
          .describe('Active, or Terminating once deletion has been requested.'),
        conditions: z
          .array(
            z.object({
              type: z.string().min(1),
              status: z.enum(conditionStatuses),
              lastTransitionTime: timestamp().optional(),
              reason: z.string().optional(),
              message: z.string().optional(),
            }),
          )
          .optional(),
      })
      // Defaulted like kube-apiserver does: a Namespace always has a phase.
      .prefault({}),
  })
  .describe('A scope for names, and the unit of tenancy: one tenant never sees into another namespace.');

export type Namespace = z.infer<typeof namespaceSchema>;

export const namespaceKind = builtinKind({
  group: coreGroup,
  version: 'v1',
  kind: 'Namespace',
  plural: 'namespaces',
  shortNames: ['ns'],
  scope: 'Cluster',
  statusSubresource: true,
  schema: namespaceSchema,
  selectableFields: { 'status.phase': 'status.phase' },
  printerColumns: [{ name: 'Status', type: 'string', jsonPath: '.status.phase' }, ageColumn],
});

// --- Secret ------------------------------------------------------------------------------------

/** kube-apiserver's limit on the total size of a Secret's data. */
export const maxSecretBytes = 1024 * 1024;

// A key of Secret or ConfigMap data, checked as apimachinery's IsConfigMapKey does.
function configKey() {
  return z.string().superRefine((key, ctx) => {
    if (key.length > 253) {
      addFieldIssue(ctx, [], 'FieldValueTooLong', 'may not be more than 253 characters');
    } else if (!/^[-._a-zA-Z0-9]+$/.test(key)) {
      addFieldIssue(
        ctx,
        [],
        'FieldValueInvalid',
        "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name')",
      );
    } else if (key === '.') {
      addFieldIssue(ctx, [], 'FieldValueInvalid', "must not be '.'");
    } else if (key.startsWith('..')) {
      addFieldIssue(ctx, [], 'FieldValueInvalid', "must not start with '..'");
    }
  });
}

const base64Value = z.base64('must be a base64-encoded string').meta({ format: 'byte' });

export const secretSchema = z
  .object({
    apiVersion: z.literal('v1'),
    kind: z.literal('Secret'),
    metadata: subdomainObjectMeta('Namespaced'),
    type: z
      .string()
      .max(253)
      .default('Opaque')
      .describe('How data is used, e.g. Opaque or kubernetes.io/tls; Opaque when omitted.'),
    data: z
      .record(configKey(), base64Value)
      .optional()
      .describe('Secret values, each base64-encoded. Keys are letters, digits, -, _ and .'),
    stringData: z
      .record(configKey(), z.string())
      .optional()
      .describe('Write-only plain-text values, merged into data on write; never read back.'),
    immutable: z.boolean().optional().describe('When true, data cannot be changed, only the Secret deleted.'),
  })
  .superRefine((secret, ctx) => {
    let bytes = 0;
    for (const value of Object.values(secret.data ?? {})) bytes += Buffer.from(value, 'base64').length;
    for (const value of Object.values(secret.stringData ?? {})) bytes += Buffer.byteLength(value);
    if (bytes > maxSecretBytes) {
      addFieldIssue(ctx, ['data'], 'FieldValueTooLong', `may not be more than ${maxSecretBytes} bytes`);
    }
  })
  .describe('Secret data of some type, such as credentials or a WireGuard client configuration.');

export type Secret = z.infer<typeof secretSchema>;

export const secretKind = builtinKind({
  group: coreGroup,
  version: 'v1',
  kind: 'Secret',
  plural: 'secrets',
  shortNames: [],
  scope: 'Namespaced',
  statusSubresource: false,
  schema: secretSchema,
  selectableFields: { type: 'type' },
  // kube-apiserver also shows DATA (the number of keys), which no JSONPath expresses.
  printerColumns: [{ name: 'Type', type: 'string', jsonPath: '.type' }, ageColumn],
});

// --- Event -------------------------------------------------------------------------------------

export const eventTypes = ['Normal', 'Warning'] as const;

/** corev1.ObjectReference. */
const objectReferenceSchema = z.object({
  apiVersion: z.string().optional(),
  kind: z.string().optional(),
  name: z.string().optional(),
  namespace: z.string().optional(),
  uid: z.string().optional(),
  resourceVersion: z.string().optional(),
  fieldPath: z
    .string()
    .optional()
    .describe('A part of the object rather than the whole, e.g. spec.networks{lan}.'),
});

// Go clients write an unset metav1.Time or MicroTime as null.
export const eventSchema = z
  .object({
    apiVersion: z.literal('v1'),
    kind: z.literal('Event'),
    metadata: subdomainObjectMeta('Namespaced'),
    involvedObject: objectReferenceSchema.describe('The object this event is about.'),
    reason: z.string().optional().describe('Why, in UpperCamelCase a machine can match on.'),
    message: z.string().optional().describe('What happened, for people.'),
    type: z.enum(eventTypes).optional(),
    count: int32().optional().describe('How many times this event has occurred.'),
    firstTimestamp: timestamp().nullable().optional().describe('When this event was first recorded.'),
    lastTimestamp: timestamp().nullable().optional().describe('When this event most recently occurred.'),
    eventTime: microTime().nullable().optional().describe('When this event was first observed.'),
    series: z
      .object({ count: int32().optional(), lastObservedTime: microTime().optional() })
      .optional()
      .describe('For an event that keeps recurring: how often, and when last.'),
    source: z
      .object({ component: z.string().optional(), host: z.string().optional() })
      .optional()
      .describe('The component (and host) that reported the event.'),
    reportingComponent: z.string().optional().describe('The controller that emitted this event.'),
    reportingInstance: z.string().optional().describe('Which instance of that controller.'),
    action: z.string().optional().describe('What the reporting component did or failed to do.'),
    related: objectReferenceSchema.optional().describe('A second object involved, if any.'),
  })
  .describe('A report of something that happened to an object, shown by kubectl describe and get events.');

export type Event = z.infer<typeof eventSchema>;

export const eventKind = builtinKind({
  group: coreGroup,
  version: 'v1',
  kind: 'Event',
  plural: 'events',
  shortNames: ['ev'],
  scope: 'Namespaced',
  statusSubresource: false,
  schema: eventSchema,
  // What `kubectl describe` and `kubectl get events --field-selector` filter on.
  selectableFields: {
    ...Object.fromEntries(
      ['apiVersion', 'kind', 'name', 'namespace', 'uid', 'resourceVersion', 'fieldPath'].map((field) => [
        `involvedObject.${field}`,
        `involvedObject.${field}`,
      ]),
    ),
    reason: 'reason',
    reportingComponent: 'reportingComponent',
    source: 'source.component',
    type: 'type',
  },
  printerColumns: [
    { name: 'Last Seen', type: 'date', jsonPath: '.lastTimestamp' },
    { name: 'Type', type: 'string', jsonPath: '.type' },
    { name: 'Reason', type: 'string', jsonPath: '.reason' },
    { name: 'Object', type: 'string', jsonPath: '.involvedObject.name' },
    { name: 'Subobject', type: 'string', jsonPath: '.involvedObject.fieldPath', priority: 1 },
    { name: 'Source', type: 'string', jsonPath: '.source.component', priority: 1 },
    { name: 'Message', type: 'string', jsonPath: '.message' },
    { name: 'First Seen', type: 'date', jsonPath: '.firstTimestamp', priority: 1 },
    { name: 'Count', type: 'integer', jsonPath: '.count', priority: 1 },
  ],
});

// --- Lease -------------------------------------------------------------------------------------

export const leaseSchema = z
  .object({
    apiVersion: z.literal(`${coordinationGroup}/v1`),
    kind: z.literal('Lease'),
    metadata: subdomainObjectMeta('Namespaced'),
    spec: z
      .object({
        holderIdentity: z.string().optional().describe('Who holds the lease.'),
        leaseDurationSeconds: int32()
          .min(1)
          .optional()
          .describe('How long after renewTime other candidates must wait before taking the lease over.'),
        acquireTime: microTime().optional().describe('When the current holder acquired the lease.'),
        renewTime: microTime().optional().describe('When the current holder last renewed the lease.'),
        leaseTransitions: int32().min(0).optional().describe('How many times the lease changed holders.'),
        strategy: z.string().optional().describe('The coordinated leader election strategy, if any.'),
        preferredHolder: z.string().optional().describe('Who should hold the lease next, if set.'),
      })
      .optional(),
  })
  .describe('A lease, for leader election and heartbeats.');

export type Lease = z.infer<typeof leaseSchema>;

export const leaseKind = builtinKind({
  group: coordinationGroup,
  version: 'v1',
  kind: 'Lease',
  plural: 'leases',
  shortNames: [],
  scope: 'Namespaced',
  statusSubresource: false,
  schema: leaseSchema,
  printerColumns: [{ name: 'Holder', type: 'string', jsonPath: '.spec.holderIdentity' }, ageColumn],
});

// --- Everything served -------------------------------------------------------------------------

export const builtinKinds: readonly KindInfo[] = [namespaceKind, secretKind, eventKind, leaseKind];

/** Every kind the built-in API server serves: loam.dev first, then the Kubernetes ones. */
export const servedKinds: readonly KindInfo[] = [...loamKinds, ...builtinKinds];

const servedByResource = new Map(servedKinds.map((info) => [`${info.group}/${info.plural}`, info]));

/** The served kind of resource `plural` in `group` ('' for core), as in a request path; or undefined. */
export function servedKindFor(group: string, plural: string): KindInfo | undefined {
  return servedByResource.get(`${group}/${plural}`);
}
