/**
 * CustomResourceDefinitions derived from the zod schemas, for running on an existing Kubernetes
 * cluster. Pure: hack/update-crds.ts writes the result, hack/verify-crds.ts checks it is current.
 */

import { z } from 'zod';
import type { KindInfo, PrinterColumn } from './kind.js';

export type JsonSchema = { [key: string]: unknown };

export interface CustomResourceDefinition {
  apiVersion: 'apiextensions.k8s.io/v1';
  kind: 'CustomResourceDefinition';
  metadata: { name: string };
  spec: {
    group: string;
    names: {
      kind: string;
      listKind: string;
      plural: string;
      singular: string;
      shortNames: string[];
      categories: string[];
    };
    scope: KindInfo['scope'];
    versions: {
      name: string;
      served: boolean;
      storage: boolean;
      schema: { openAPIV3Schema: JsonSchema };
      /** Present only for kinds with a status subresource. */
      subresources?: { status: Record<string, never> };
      additionalPrinterColumns: PrinterColumn[];
    }[];
  };
}

/**
 * The kind's whole-object schema as a structural OpenAPI v3 schema: what a CRD carries, and what
 * the built-in API server's OpenAPI documents start from.
 */
export function structuralSchema(kind: KindInfo): JsonSchema {
  const jsonSchema = z.toJSONSchema(kind.schema, { target: 'openapi-3.0', io: 'input', reused: 'inline' });
  return structural(jsonSchema as JsonSchema);
}

export function crdFor(kind: KindInfo): CustomResourceDefinition {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${kind.plural}.${kind.group}` },
    spec: {
      group: kind.group,
      names: {
        kind: kind.kind,
        listKind: kind.listKind,
        plural: kind.plural,
        singular: kind.singular,
        shortNames: [...kind.shortNames],
        categories: [...kind.categories],
      },
      scope: kind.scope,
      versions: [
        {
          name: kind.version,
          served: true,
          storage: true,
          schema: { openAPIV3Schema: structuralSchema(kind) },
          ...(kind.statusSubresource ? { subresources: { status: {} } } : {}),
          additionalPrinterColumns: kind.printerColumns.map((column) => ({ ...column })),
        },
      ],
    },
  };
}

// The JSONSchemaProps fields a CRD schema may use, in the order they are written out. Anything
// else zod emits ($schema, propertyNames, examples, ...) is dropped.
const schemaKeys = [
  'description',
  'type',
  'format',
  'nullable',
  'default',
  'enum',
  'minimum',
  'exclusiveMinimum',
  'maximum',
  'exclusiveMaximum',
  'multipleOf',
  'minLength',
  'maxLength',
  'pattern',
  'minItems',
  'maxItems',
  'minProperties',
  'maxProperties',
  'properties',
  'required',
  'additionalProperties',
  'items',
  'allOf',
  'anyOf',
  'oneOf',
  'not',
  'x-kubernetes-int-or-string',
  'x-kubernetes-preserve-unknown-fields',
  'x-kubernetes-embedded-resource',
  'x-kubernetes-list-type',
  'x-kubernetes-list-map-keys',
  'x-kubernetes-map-type',
  'x-kubernetes-validations',
] as const;

// Inside allOf/anyOf/oneOf/not a structural schema may only restrict values.
const junctorForbiddenKeys = [
  'type',
  'description',
  'default',
  'nullable',
  'additionalProperties',
  'properties',
  'items',
];
const junctors = ['allOf', 'anyOf', 'oneOf', 'not'] as const;

const intOrString = 'x-kubernetes-int-or-string';
const preserveUnknownFields = 'x-kubernetes-preserve-unknown-fields';

/**
 * Rewrites zod's OpenAPI 3.0 output into a structural schema, which apiextensions.k8s.io/v1
 * requires: every node typed, no $ref/$defs, no additionalProperties beside properties,
 * JSONSchemaProps keys only, and at the root the object envelope Kubernetes owns (apiVersion and
 * kind plain strings, metadata a bare object). Throws on what cannot be made structural, so a
 * schema change that needs new handling fails generation instead of producing a CRD a cluster
 * rejects.
 */
export function structural(schema: JsonSchema): JsonSchema {
  const properties = schema.properties as Record<string, JsonSchema> | undefined;
  if (properties === undefined) return structuralNode(schema, '');
  const envelope: Record<string, JsonSchema> = {
    apiVersion: { type: 'string' },
    kind: { type: 'string' },
    metadata: { type: 'object' },
  };
  const required = Array.isArray(schema.required) ? schema.required.filter((key) => !(key in envelope)) : [];
  return structuralNode(
    {
      ...schema,
      properties: Object.fromEntries(
        Object.entries(properties).map(([key, value]) => [key, envelope[key] ?? value]),
      ),
      required,
    },
    '',
  );
}

function structuralNode(input: JsonSchema, path: string): JsonSchema {
  const where = path || '<root>';
  if ('$ref' in input) {
    throw new Error(`${where}: $ref cannot be made structural; generate with reused: 'inline'`);
  }
  const node: JsonSchema = { ...input };

  if ('const' in node) {
    node.enum = [node.const];
    delete node.const;
  }
  // JSON Schema 2019+ writes exclusive bounds as numbers; JSONSchemaProps wants a bound plus a flag.
  for (const [bound, exclusive] of [
    ['minimum', 'exclusiveMinimum'],
    ['maximum', 'exclusiveMaximum'],
  ] as const) {
    if (typeof node[exclusive] === 'number') {
      node[bound] = node[exclusive];
      node[exclusive] = true;
    }
  }
  // zod bounds every integer to the safe-integer range; that is JavaScript's limit, not an API rule.
  if (node.minimum === Number.MIN_SAFE_INTEGER) delete node.minimum;
  if (node.maximum === Number.MAX_SAFE_INTEGER) delete node.maximum;

  if (node[intOrString] === true) {
    // The one anyOf a structural schema allows, exactly so: no type beside it, nothing inside.
    node.anyOf = [{ type: 'integer' }, { type: 'string' }];
    delete node.type;
  } else {
    for (const junctor of junctors) {
      if (node[junctor] === undefined) continue;
      node[junctor] =
        junctor === 'not'
          ? junctorEntry(node.not as JsonSchema, node.type, `${where}.not`)
          : (node[junctor] as JsonSchema[]).map((entry, i) =>
              junctorEntry(entry, node.type, `${where}.${junctor}[${i}]`),
            );
    }
  }

  if (node.properties !== undefined) {
    node.properties = Object.fromEntries(
      Object.entries(node.properties as Record<string, JsonSchema>).map(([key, value]) => [
        key,
        structuralNode(value, path ? `${path}.${key}` : key),
      ]),
    );
    delete node.additionalProperties;
  } else if (node.additionalProperties === true || isEmptySchema(node.additionalProperties)) {
    node[preserveUnknownFields] = true;
    delete node.additionalProperties;
  } else if (node.additionalProperties === false) {
    delete node.additionalProperties;
  } else if (node.additionalProperties !== undefined) {
    node.additionalProperties = structuralNode(node.additionalProperties as JsonSchema, `${path}[*]`);
  }

  if (node.items !== undefined) node.items = structuralNode(node.items as JsonSchema, `${path}[]`);
  if (Array.isArray(node.required) && node.required.length === 0) delete node.required;

  if (node.type === undefined && node[intOrString] !== true && node[preserveUnknownFields] !== true) {
    if (isEmptySchema(node)) {
      // z.unknown(): any value at all.
      node[preserveUnknownFields] = true;
    } else {
      node.type = enumType(node.enum, where);
    }
  }

  const out: JsonSchema = {};
  for (const key of schemaKeys) {
    if (node[key] !== undefined) out[key] = node[key];
  }
  return out;
}

function junctorEntry(entry: JsonSchema, parentType: unknown, where: string): JsonSchema {
  // zod repeats the parent's type in each entry (several regexes become allOf: [{type, pattern}]).
  const { type, ...rest } = entry;
  const forbidden = junctorForbiddenKeys.filter(
    (key) => key in rest || (key === 'type' && type !== parentType),
  );
  if (forbidden.length > 0) {
    throw new Error(
      `${where}: ${forbidden.join(', ')} cannot appear inside allOf/anyOf/oneOf/not of a structural schema`,
    );
  }
  return rest;
}

function isEmptySchema(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false;
  return Object.keys(value).every((key) => key === 'description');
}

function enumType(values: unknown, where: string): string {
  const types = new Set(Array.isArray(values) ? values.map((value) => typeof value) : []);
  const [only] = types;
  if (types.size === 1 && (only === 'string' || only === 'boolean' || only === 'number')) return only;
  throw new Error(`${where}: has no type and none can be inferred; give the schema a single type`);
}
