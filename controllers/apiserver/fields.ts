/**
 * Unknown-field detection for `fieldValidation` (Strict, Warn, Ignore), as kube-apiserver does
 * it: fields the kind's schema does not declare are reported by path, so a typo in a manifest is
 * an error (or a warning) instead of being dropped without a word.
 */
import { z } from 'zod';
import { LoamError } from '../../crds/errors.js';
import type { KindInfo } from '../../crds/kind.js';

type JsonSchema = {
  properties?: Record<string, JsonSchema>;
  additionalProperties?: boolean | JsonSchema;
  items?: JsonSchema;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
};

const schemas = new WeakMap<KindInfo, JsonSchema>();

function schemaOf(kind: KindInfo): JsonSchema {
  let schema = schemas.get(kind);
  if (!schema) {
    schema = z.toJSONSchema(kind.schema, {
      io: 'input',
      unrepresentable: 'any',
      reused: 'inline',
    }) as JsonSchema;
    schemas.set(kind, schema);
  }
  return schema;
}

function walk(value: unknown, schema: JsonSchema | undefined, path: string, out: string[]): void {
  if (!schema || value === null || typeof value !== 'object') return;
  // A union (int-or-string, nullable) is not an object shape worth second-guessing.
  if (schema.anyOf || schema.oneOf) return;
  if (Array.isArray(value)) {
    for (const [i, item] of value.entries()) walk(item, schema.items, `${path}[${i}]`, out);
    return;
  }
  for (const [key, child] of Object.entries(value as Record<string, unknown>)) {
    const childPath = path ? `${path}.${key}` : key;
    const declared = schema.properties?.[key];
    if (declared) walk(child, declared, childPath, out);
    else if (typeof schema.additionalProperties === 'object')
      walk(child, schema.additionalProperties, childPath, out);
    else if (schema.properties) out.push(childPath);
  }
}

/** Paths of the fields in `obj` that `kind` does not declare, e.g. `spec.cpu`. */
export function unknownFields(kind: KindInfo, obj: unknown): string[] {
  const out: string[] = [];
  // managedFields entries are server bookkeeping, passed through as they are.
  const { managedFields: _m, ...metadata } = ((obj as { metadata?: object })?.metadata ?? {}) as Record<
    string,
    unknown
  >;
  walk({ ...(obj as object), metadata }, schemaOf(kind), '', out);
  return out;
}

export type FieldValidation = 'Strict' | 'Warn' | 'Ignore';

export function parseFieldValidation(value: string | null): FieldValidation {
  if (value === null || value === '') return 'Warn'; // kube-apiserver's default
  if (value === 'Strict' || value === 'Warn' || value === 'Ignore') return value;
  throw new LoamError(
    'BadRequest',
    `fieldValidation: Unsupported value: "${value}": supported values: "Ignore", "Strict", "Warn"`,
  );
}

/** Applies the directive: Strict fails with every unknown field named, Warn returns warnings. */
export function checkUnknownFields(kind: KindInfo, obj: unknown, validation: FieldValidation): string[] {
  if (validation === 'Ignore') return [];
  const unknown = unknownFields(kind, obj);
  if (unknown.length === 0) return [];
  if (validation === 'Strict') {
    throw new LoamError(
      'BadRequest',
      `strict decoding error: ${unknown.map((f) => `unknown field "${f}"`).join(', ')}`,
    );
  }
  return unknown.map((f) => `unknown field "${f}"`);
}
