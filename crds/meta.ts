/**
 * The parts every kind shares, following Kubernetes' metav1: ObjectMeta, Conditions, timestamps,
 * label maps and list-maps.
 */

import { z } from 'zod';
import { dnsLabel, isDnsSubdomain } from './formats.js';
import { addFieldIssue } from './issues.js';

export type Scope = 'Namespaced' | 'Cluster';

/** metadata.generation, status.observedGeneration and condition.observedGeneration. */
export function generation() {
  return z.number().int().min(0);
}

/**
 * `.meta()` input putting CEL rules (x-kubernetes-validations) in the CRD, so a cluster enforces
 * a cross-field rule that a schema's superRefine enforces here. Keep the two in step.
 */
export function celRules(...rules: { rule: string; message: string }[]) {
  return { 'x-kubernetes-validations': rules };
}

/**
 * `.meta()` input making a field immutable once set: the CEL transition rule a cluster enforces,
 * which the built-in API server reads back from the schema (validateUpdate).
 */
export function immutable() {
  return celRules({ rule: immutableRule, message: 'field is immutable' });
}

export const immutableRule = 'self == oldSelf';

const rfc3339 = z.iso.datetime({ offset: true });

/** An RFC 3339 timestamp, as metav1.Time serializes. */
export function timestamp() {
  return z
    .string()
    .refine(
      (value) => rfc3339.safeParse(value).success,
      'must be an RFC 3339 timestamp such as 2024-05-01T12:00:00Z',
    )
    .meta({ format: 'date-time' });
}

/** `date` the way Kubernetes writes timestamps: UTC, whole seconds. */
export function formatTimestamp(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

const qualifiedNamePart = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;

// The same checks and wording as apimachinery's IsQualifiedName.
function qualifiedNameProblem(value: string): string | undefined {
  const parts = value.split('/');
  if (parts.length > 2) {
    return "must be a qualified name: a name, optionally prefixed by a DNS subdomain and '/' (e.g. 'example.com/my-name')";
  }
  const [prefix, name = ''] = parts.length === 2 ? parts : [undefined, parts[0]];
  if (prefix !== undefined && !isDnsSubdomain(prefix)) {
    return 'prefix part must be a lower-case DNS subdomain (e.g. example.com)';
  }
  if (name.length === 0) return 'name part must not be empty';
  if (name.length > 63) return 'name part must be no more than 63 characters';
  if (!qualifiedNamePart.test(name)) {
    return "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
  }
  return undefined;
}

/** A label key or finalizer: `[dns-subdomain/]name`. Annotation keys pass `ignoreCase`, as in Kubernetes. */
function qualifiedName(options: { ignoreCase?: boolean } = {}) {
  return z.string().superRefine((value, ctx) => {
    const problem = qualifiedNameProblem(options.ignoreCase ? value.toLowerCase() : value);
    if (problem) addFieldIssue(ctx, [], 'FieldValueInvalid', problem);
  });
}

const labelValue = z
  .string()
  .max(63)
  .regex(
    /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/,
    "a label value must be empty or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
  );

/** Labels, or anything matched against labels (a node selector). */
export function labelMap() {
  return z.record(qualifiedName(), labelValue);
}

const maxAnnotationBytes = 256 * 1024;

const annotationMap = z
  .record(qualifiedName({ ignoreCase: true }), z.string())
  .superRefine((annotations, ctx) => {
    const bytes = Object.entries(annotations).reduce(
      (total, [key, value]) => total + Buffer.byteLength(key) + Buffer.byteLength(value),
      0,
    );
    if (bytes > maxAnnotationBytes) {
      addFieldIssue(
        ctx,
        [],
        'FieldValueTooLong',
        `may not be more than ${maxAnnotationBytes} bytes in total`,
      );
    }
  });

export const ownerReferenceSchema = z.object({
  apiVersion: z.string().min(1),
  kind: z.string().min(1),
  name: z.string().min(1),
  uid: z.string().min(1),
  controller: z.boolean().optional(),
  blockOwnerDeletion: z.boolean().optional(),
});

const objectMetaFields = {
  name: dnsLabel().optional(),
  // A name prefix: the server appends five random characters, so one trailing '-' is allowed.
  generateName: z
    .string()
    .max(63)
    .regex(
      /^[a-z0-9]([-a-z0-9]*[a-z0-9])?-?$/,
      "must be a lower-case RFC 1123 label, optionally followed by one '-' (e.g. 'web-')",
    )
    .optional(),
  uid: z.string().optional(),
  resourceVersion: z.string().optional(),
  generation: generation().optional(),
  // Go clients serialize an unset metav1.Time as null ("kubectl create --dry-run -o yaml" output).
  creationTimestamp: timestamp().nullable().optional(),
  deletionTimestamp: timestamp().optional(),
  deletionGracePeriodSeconds: z.number().int().min(0).optional(),
  labels: labelMap().optional(),
  annotations: annotationMap.optional(),
  finalizers: z.array(qualifiedName()).optional(),
  ownerReferences: z.array(ownerReferenceSchema).optional(),
  // Server-side apply bookkeeping; kept as written, never interpreted.
  managedFields: z.array(z.looseObject({})).optional(),
};

/**
 * ObjectMeta for a kind of the given scope: namespaced kinds take a DNS-label namespace (the API
 * server fills it from the URL), cluster-scoped kinds must not have one.
 */
export function objectMeta(scope: Scope) {
  return z
    .object({
      ...objectMetaFields,
      namespace: scope === 'Namespaced' ? dnsLabel().optional() : z.string().optional(),
    })
    .superRefine((meta, ctx) => {
      if (!meta.name && !meta.generateName) {
        addFieldIssue(ctx, ['name'], 'FieldValueRequired', 'name or generateName is required');
      }
      if (scope === 'Cluster' && meta.namespace) {
        addFieldIssue(ctx, ['namespace'], 'FieldValueForbidden', 'not allowed on this type');
      }
      const controllers = (meta.ownerReferences ?? []).filter((ref) => ref.controller === true);
      if (controllers.length > 1) {
        addFieldIssue(
          ctx,
          ['ownerReferences'],
          'FieldValueInvalid',
          'only one reference can have controller set to true',
        );
      }
    });
}

export type ObjectMeta = z.infer<ReturnType<typeof objectMeta>>;

/**
 * An array whose items are identified by `key` (x-kubernetes-list-type: map): keys are unique, and
 * server-side apply merges items by key instead of replacing the list.
 */
export function listMap<Item extends z.ZodObject, Key extends keyof z.output<Item> & string>(
  item: Item,
  key: Key,
) {
  return z
    .array(item)
    .superRefine((items, ctx) => {
      const seen = new Set<unknown>();
      items.forEach((entry, index) => {
        const value = (entry as Record<string, unknown>)[key];
        if (seen.has(value)) addFieldIssue(ctx, [index, key], 'FieldValueDuplicate', '');
        seen.add(value);
      });
    })
    .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': [key] });
}

export const conditionStatuses = ['True', 'False', 'Unknown'] as const;

/** metav1.Condition. */
export const conditionSchema = z.object({
  type: z
    .string()
    .max(316)
    .regex(
      /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$/,
      'must be a CamelCase condition type such as Ready, optionally prefixed by a DNS subdomain and /',
    ),
  status: z.enum(conditionStatuses),
  observedGeneration: generation().optional(),
  lastTransitionTime: timestamp(),
  reason: z
    .string()
    .min(1)
    .max(1024)
    .regex(
      /^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$/,
      'must be a CamelCase reason such as ImageDownloaded (letters, digits, _ , :)',
    ),
  message: z.string().max(32768),
});

export type Condition = z.infer<typeof conditionSchema>;
/** What a controller states about a condition; setCondition decides lastTransitionTime. */
export type ConditionUpdate = Omit<Condition, 'lastTransitionTime'>;

export function conditionList() {
  return listMap(conditionSchema, 'type');
}

export function getCondition(
  conditions: readonly Condition[] | undefined,
  type: string,
): Condition | undefined {
  return conditions?.find((condition) => condition.type === type);
}

/**
 * A new conditions array with `next` in place of the condition of its type (appended if absent).
 * lastTransitionTime moves to `now` only when the status changes, so it tells how long the
 * condition has been in its current state.
 */
export function setCondition(
  conditions: readonly Condition[] | undefined,
  next: ConditionUpdate,
  now: Date,
): Condition[] {
  const current = conditions ?? [];
  const existing = getCondition(current, next.type);
  const lastTransitionTime =
    existing !== undefined && existing.status === next.status
      ? existing.lastTransitionTime
      : formatTimestamp(now);
  const updated: Condition = { ...next, lastTransitionTime };
  if (existing === undefined) return [...current, updated];
  return current.map((condition) => (condition === existing ? updated : condition));
}

/** A condition a reconcile states, with the Event to record when the condition changes. */
export interface Finding {
  condition: Omit<ConditionUpdate, 'observedGeneration'>;
  event?: { type: 'Normal' | 'Warning'; reason: string };
}

/**
 * `previous` with each finding's condition set for `observedGeneration`, and an Event (carrying
 * the condition's message) for each finding whose condition says something new: a reconcile that
 * finds what status already says records nothing.
 */
export function applyFindings(
  previous: readonly Condition[] | undefined,
  findings: readonly Finding[],
  observedGeneration: number,
  now: Date,
): { conditions: Condition[]; events: { type: 'Normal' | 'Warning'; reason: string; message: string }[] } {
  const conditions = findings.reduce(
    (all, { condition }) => setCondition(all, { ...condition, observedGeneration }, now),
    previous ?? [],
  );
  const events = findings.flatMap(({ condition, event }) => {
    const before = getCondition(previous, condition.type);
    const changed =
      before?.status !== condition.status ||
      before.reason !== condition.reason ||
      before.message !== condition.message;
    return event && changed ? [{ ...event, message: condition.message }] : [];
  });
  return { conditions: [...conditions], events };
}
