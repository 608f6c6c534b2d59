/**
 * Validation with the kind's zod schema, failing the way kube-apiserver does: a 422 Invalid
 * status whose message and causes use Kubernetes field paths and field error types.
 */

import type { z } from 'zod';
import { type JsonSchema, structuralSchema } from './crd.js';
import { type ErrorCause, LoamError } from './errors.js';
import type { FieldReason } from './issues.js';
import type { KindInfo } from './kind.js';
import { immutableRule } from './meta.js';

/** Parses `obj` as `kind`, returning it with defaults applied; throws LoamError('Invalid') listing every problem. */
export function validateObject<Schema extends z.ZodType>(
  kind: KindInfo<Schema>,
  obj: unknown,
): z.output<Schema> {
  const result = kind.schema.safeParse(obj);
  if (result.success) return result.data;
  throw invalidError(
    kind,
    obj,
    result.error.issues.map((issue) => fieldCause(issue, obj)),
  );
}

function invalidError(kind: KindInfo, obj: unknown, causes: ErrorCause[]): LoamError {
  const details = causes.map((cause) => (cause.field ? `${cause.field}: ${cause.message}` : cause.message));
  const summary = details.length === 1 ? details[0] : `[${details.join(', ')}]`;
  const name = valueAt(obj, ['metadata', 'name']);
  return new LoamError(
    'Invalid',
    `${kind.kind}.${kind.group} ${JSON.stringify(typeof name === 'string' ? name : '')} is invalid: ${summary}`,
    { causes },
  );
}

/**
 * The checks only an update has: fields whose schema carries the immutable() transition rule
 * (`self == oldSelf`) must keep the value they had. Throws LoamError('Invalid') naming each.
 */
export function validateUpdate(kind: KindInfo, previous: unknown, next: unknown): void {
  const causes: ErrorCause[] = [];
  for (const path of immutablePaths(kind)) {
    const before = valueAt(previous, path);
    const after = valueAt(next, path);
    if (before === undefined || JSON.stringify(before) === JSON.stringify(after)) continue;
    causes.push({
      field: fieldPath(path),
      reason: 'FieldValueInvalid',
      message: body('FieldValueInvalid', after, 'field is immutable'),
    });
  }
  if (causes.length > 0) throw invalidError(kind, next, causes);
}

const immutablePathsByKind = new WeakMap<KindInfo, string[][]>();

/** Paths (through object properties) whose schema has the immutable rule. */
function immutablePaths(kind: KindInfo): string[][] {
  let paths = immutablePathsByKind.get(kind);
  if (!paths) {
    const found: string[][] = [];
    const walk = (schema: JsonSchema, path: string[]) => {
      const rules = (schema['x-kubernetes-validations'] ?? []) as { rule: string }[];
      if (rules.some((r) => r.rule === immutableRule)) found.push(path);
      const properties = (schema.properties ?? {}) as Record<string, JsonSchema>;
      for (const [name, property] of Object.entries(properties)) walk(property, [...path, name]);
    };
    walk(structuralSchema(kind), []);
    paths = found;
    immutablePathsByKind.set(kind, paths);
  }
  return paths;
}

function fieldCause(issue: z.core.$ZodIssue, input: unknown): ErrorCause {
  // A bad map key is reported on the map with the key as the value, as Kubernetes does for labels.
  const badKey = issue.code === 'invalid_key';
  const path = badKey ? issue.path.slice(0, -1) : issue.path;
  const value = badKey ? issue.path.at(-1) : valueAt(input, path);
  const { reason, detail } = classify(issue, value);
  return { field: fieldPath(path), reason, message: body(reason, value, detail) };
}

function classify(issue: z.core.$ZodIssue, value: unknown): { reason: FieldReason; detail: string } {
  // Whatever zod expected (a type, one of an enum, a literal), a missing field is just missing.
  if (value === undefined && issue.code !== 'custom') return { reason: 'FieldValueRequired', detail: '' };
  switch (issue.code) {
    case 'invalid_type':
      return { reason: 'FieldValueInvalid', detail: `must be of type ${typeName(issue.expected)}` };
    case 'invalid_value':
      return {
        reason: 'FieldValueNotSupported',
        detail: `supported values: ${issue.values.map((supported) => JSON.stringify(supported)).join(', ')}`,
      };
    case 'too_big':
      if (issue.origin === 'string') {
        return { reason: 'FieldValueTooLong', detail: `may not be more than ${issue.maximum} characters` };
      }
      if (issue.origin === 'array') {
        return { reason: 'FieldValueTooMany', detail: `must have at most ${issue.maximum} items` };
      }
      return {
        reason: 'FieldValueInvalid',
        detail: `must be less than ${issue.inclusive ? 'or equal to ' : ''}${issue.maximum}`,
      };
    case 'too_small':
      if (issue.origin === 'string') {
        if (value === '') return { reason: 'FieldValueRequired', detail: '' };
        return { reason: 'FieldValueInvalid', detail: `must be at least ${issue.minimum} characters` };
      }
      if (issue.origin === 'array') {
        return { reason: 'FieldValueInvalid', detail: `must have at least ${issue.minimum} items` };
      }
      return {
        reason: 'FieldValueInvalid',
        detail: `must be greater than ${issue.inclusive ? 'or equal to ' : ''}${issue.minimum}`,
      };
    case 'invalid_union': {
      // Unions here are int-or-string quantities: say which types fit instead of "Invalid input".
      const expected = issue.errors.flatMap((errors) =>
        errors.flatMap((inner) =>
          inner.code === 'invalid_type' && inner.path.length === 0 ? [inner.expected] : [],
        ),
      );
      const detail =
        expected.length === issue.errors.length
          ? `must be of type ${expected.map(typeName).join(' or ')}`
          : issue.message;
      return { reason: 'FieldValueInvalid', detail };
    }
    case 'invalid_key':
      return { reason: 'FieldValueInvalid', detail: issue.issues[0]?.message ?? issue.message };
    case 'custom':
      return {
        reason: (issue.params?.reason as FieldReason | undefined) ?? 'FieldValueInvalid',
        detail: issue.message,
      };
    default:
      return { reason: 'FieldValueInvalid', detail: issue.message };
  }
}

function typeName(expected: string): string {
  if (expected === 'int') return 'integer';
  if (expected === 'record') return 'object';
  return expected;
}

/** The cause message, worded as apimachinery's field.Error.ErrorBody(). */
function body(reason: FieldReason, value: unknown, detail: string): string {
  const shown = JSON.stringify(value) ?? 'null';
  switch (reason) {
    case 'FieldValueRequired':
      return detail ? `Required value: ${detail}` : 'Required value';
    case 'FieldValueInvalid':
      return `Invalid value: ${shown}: ${detail}`;
    case 'FieldValueNotSupported':
      return `Unsupported value: ${shown}: ${detail}`;
    case 'FieldValueDuplicate':
      return `Duplicate value: ${shown}`;
    case 'FieldValueTooLong':
      return `Too long: ${detail}`;
    case 'FieldValueTooMany':
      return `Too many: ${detail}`;
    case 'FieldValueForbidden':
      return `Forbidden: ${detail}`;
  }
}

/** `spec.networks[0].address`; map keys that are not identifiers go in brackets, as field.Path.Key does. */
function fieldPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const segment of path) {
    const text = String(segment);
    if (typeof segment === 'number' || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(text)) out += `[${text}]`;
    else out += out ? `.${text}` : text;
  }
  return out;
}

function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let current = input;
  for (const segment of path) {
    if (typeof current !== 'object' || current === null) return undefined;
    current = (current as Record<PropertyKey, unknown>)[segment];
  }
  return current;
}
