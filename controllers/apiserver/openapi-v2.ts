/**
 * OpenAPI v2 (Swagger 2.0) for the served kinds, in the shape kube-apiserver publishes at
 * /openapi/v2, and its gnostic protobuf encoding (proto/openapiv2/openapiv2.proto). kubectl 1.27
 * and 1.28 download it on apply, create and explain: they parse every definition, find a kind's
 * schema by its x-kubernetes-group-version-kind, and leave field validation to the server when
 * the kind's PATCH operation declares a fieldValidation parameter.
 *
 * Pure apart from loading the .proto once: derived from the OpenAPI v3 documents of openapi.ts,
 * converted the way kube does it (schemas as apiextensions-apiserver's ToStructuralOpenAPIV2
 * publishes CRD schemas to v2: no allOf/anyOf/oneOf/not, no nullable).
 */

import type protobuf from 'protobufjs';
import YAML from 'yaml';
import type { JsonSchema } from '../../crds/crd.js';
import type { KindInfo } from '../../crds/kind.js';
import { openapiDocuments } from './openapi.js';
import { loadProtoRoot } from './protobuf.js';

export interface SwaggerParameter {
  name: string;
  in: 'body' | 'path' | 'query';
  description?: string;
  required?: boolean;
  /** Path and query parameters. */
  type?: string;
  uniqueItems?: boolean;
  /** Body parameters. */
  schema?: JsonSchema;
}

export interface SwaggerResponse {
  description: string;
  schema?: JsonSchema;
}

export interface SwaggerOperation {
  description?: string;
  consumes?: string[];
  produces?: string[];
  schemes?: string[];
  tags?: string[];
  operationId: string;
  parameters?: SwaggerParameter[];
  responses: Record<string, SwaggerResponse>;
  'x-kubernetes-action': string;
  'x-kubernetes-group-version-kind': { group: string; version: string; kind: string };
}

export type SwaggerMethod = 'get' | 'put' | 'post' | 'delete' | 'patch';

export type SwaggerPathItem = { parameters?: SwaggerParameter[] } & {
  [method in SwaggerMethod]?: SwaggerOperation;
};

export interface SwaggerDocument {
  swagger: '2.0';
  info: { title: string; version: string };
  paths: Record<string, SwaggerPathItem>;
  definitions: Record<string, JsonSchema>;
}

/**
 * The Content-Type of the protobuf encoding, as kube-openapi's handler sends it. Clients still ask
 * for the deprecated `...spec.v2@v1.0+protobuf`, but a response must not carry it: Go's
 * mime.ParseMediaType rejects the '@', and client-go fails the request.
 */
export const openapiV2ProtobufType = 'application/com.github.proto-openapi.spec.v2.v1.0+protobuf';
const openapiV2ProtobufTypes = [
  openapiV2ProtobufType,
  'application/com.github.proto-openapi.spec.v2@v1.0+protobuf',
];

// --- From OpenAPI v3 -----------------------------------------------------------------------------

const v3RefPrefix = '#/components/schemas/';
const v2RefPrefix = '#/definitions/';
const preserveUnknownFields = 'x-kubernetes-preserve-unknown-fields';
const gvkExtension = 'x-kubernetes-group-version-kind';
const methods: readonly SwaggerMethod[] = ['get', 'put', 'post', 'delete', 'patch'];

interface V3Parameter {
  name: string;
  in: 'path' | 'query';
  description: string;
  required?: true;
  schema: { type: string; uniqueItems?: boolean };
}

interface V3Content {
  [mediaType: string]: { schema: JsonSchema };
}

interface V3Operation {
  description: string;
  operationId: string;
  parameters?: V3Parameter[];
  requestBody?: { content: V3Content; required?: boolean };
  responses: Record<string, { description: string; content?: V3Content }>;
  tags: string[];
  'x-kubernetes-action': string;
  'x-kubernetes-group-version-kind': { group: string; version: string; kind: string };
}

type V3PathItem = { parameters?: V3Parameter[] } & { [method in SwaggerMethod]?: V3Operation };

interface V3Document {
  info: { title: string; version: string };
  paths: Record<string, V3PathItem>;
  components: { schemas: Record<string, JsonSchema> };
}

function v2Ref(ref: string): string {
  return ref.startsWith(v3RefPrefix) ? v2RefPrefix + ref.slice(v3RefPrefix.length) : ref;
}

/** The $ref of OpenAPI 3.0's `allOf: [{$ref}]` wrapper, which Swagger 2.0 writes as a plain $ref. */
function wrappedRef(node: JsonSchema): string | undefined {
  const allOf = node.allOf;
  if (!Array.isArray(allOf) || allOf.length !== 1) return undefined;
  const [only] = allOf as JsonSchema[];
  return only && Object.keys(only).length === 1 && typeof only.$ref === 'string' ? only.$ref : undefined;
}

/**
 * One schema node in Swagger 2.0: references as `#/definitions/...` (with only a description
 * beside them, as kube publishes them), and the rest as ToStructuralOpenAPIV2 does it — junctors
 * dropped, nullable nodes untyped and emptied (and no longer required by their parent),
 * preserve-unknown-fields nodes without properties or items (and untyped if objects), arrays
 * without items untyped.
 */
export function schemaV2(input: JsonSchema): JsonSchema {
  const wrapped = wrappedRef(input);
  if (wrapped !== undefined || typeof input.$ref === 'string') {
    return {
      $ref: v2Ref(wrapped ?? (input.$ref as string)),
      ...(typeof input.description === 'string' ? { description: input.description } : {}),
    };
  }
  const node: JsonSchema = { ...input };
  for (const junctor of ['allOf', 'anyOf', 'oneOf', 'not']) delete node[junctor];
  if (node.nullable === true) {
    delete node.type;
    delete node.items;
    delete node.properties;
  }
  delete node.nullable;
  if (node[preserveUnknownFields] === true) {
    delete node.items;
    delete node.properties;
    if (node.type === 'object') delete node.type;
  }
  if (node.type === 'array' && node.items === undefined) delete node.type;

  const properties = node.properties as Record<string, JsonSchema> | undefined;
  let required = Array.isArray(node.required) ? (node.required as string[]) : undefined;
  if (properties !== undefined) {
    required = required?.filter((name) => properties[name]?.nullable !== true);
    node.properties = Object.fromEntries(
      Object.entries(properties).map(([name, property]) => [name, schemaV2(property)]),
    );
  }
  const additional = node.additionalProperties;
  if (typeof additional === 'object' && additional !== null) {
    if ((additional as JsonSchema).nullable === true) required = undefined;
    node.additionalProperties = schemaV2(additional as JsonSchema);
  }
  if (required?.length) node.required = required;
  else delete node.required;
  if (typeof node.items === 'object' && node.items !== null) node.items = schemaV2(node.items as JsonSchema);
  return node;
}

function firstSchema(content: V3Content | undefined): JsonSchema | undefined {
  const [first] = Object.values(content ?? {});
  return first ? schemaV2(first.schema) : undefined;
}

function parameterV2(parameter: V3Parameter): SwaggerParameter {
  const { schema, ...rest } = parameter;
  return { ...rest, ...schema };
}

function operationV2(operation: V3Operation): SwaggerOperation {
  const { requestBody, responses, parameters = [], ...rest } = operation;
  const body: SwaggerParameter[] = requestBody
    ? [
        {
          name: 'body',
          in: 'body',
          ...(requestBody.required ? { required: true } : {}),
          schema: firstSchema(requestBody.content) ?? {},
        },
      ]
    : [];
  const all = [...body, ...parameters.map(parameterV2)];
  const produces = [
    ...new Set(Object.values(responses).flatMap((response) => Object.keys(response.content ?? {}))),
  ];
  return {
    ...rest,
    consumes: requestBody ? Object.keys(requestBody.content) : ['*/*'],
    produces,
    schemes: ['https'],
    ...(all.length > 0 ? { parameters: all } : {}),
    responses: Object.fromEntries(
      Object.entries(responses).map(([code, response]) => {
        const schema = firstSchema(response.content);
        return [code, { description: response.description, ...(schema ? { schema } : {}) }];
      }),
    ),
  };
}

function pathItemV2(item: V3PathItem): SwaggerPathItem {
  const out: SwaggerPathItem = {};
  if (item.parameters) out.parameters = item.parameters.map(parameterV2);
  for (const method of methods) {
    const operation = item[method];
    if (operation) out[method] = operationV2(operation);
  }
  return out;
}

/** A definition several group-versions share (DeleteOptions, WatchEvent) lists every one's kind. */
function mergeDefinition(existing: JsonSchema, next: JsonSchema): JsonSchema {
  const gvks = [...((existing[gvkExtension] as object[]) ?? []), ...((next[gvkExtension] as object[]) ?? [])];
  if (gvks.length === 0) return existing;
  const unique = [...new Map(gvks.map((gvk) => [JSON.stringify(gvk), gvk])).values()];
  return { ...existing, [gvkExtension]: unique };
}

function sortedByKey<T>(record: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(record).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/**
 * The Swagger 2.0 document of `kinds`: every path and operation of the OpenAPI v3 documents, and
 * their schemas as `definitions` under the same names, in key order as kube-apiserver serves them.
 */
export function openapiV2Document(kinds: readonly KindInfo[]): SwaggerDocument {
  const paths: Record<string, SwaggerPathItem> = {};
  const definitions: Record<string, JsonSchema> = {};
  let info = { title: 'Loam', version: 'unversioned' };
  for (const document of openapiDocuments(kinds).values() as Iterable<V3Document>) {
    info = document.info;
    for (const [path, item] of Object.entries(document.paths)) paths[path] = pathItemV2(item);
    for (const [name, schema] of Object.entries(document.components.schemas)) {
      // A kind that keeps unknown fields at its root is published to v2 as a bare object, as kube
      // does, so kubectl does not reject the fields it cannot know.
      const converted =
        schema[preserveUnknownFields] === true && schema[gvkExtension] !== undefined
          ? { type: 'object', [gvkExtension]: schema[gvkExtension] }
          : schemaV2(schema);
      const existing = definitions[name];
      definitions[name] = existing ? mergeDefinition(existing, converted) : converted;
    }
  }
  return { swagger: '2.0', info, paths: sortedByKey(paths), definitions: sortedByKey(definitions) };
}

/**
 * Whether an Accept header asks for the protobuf encoding of /openapi/v2 rather than JSON: the
 * acceptable media range with the highest q wins (the first on a tie); wildcards mean JSON.
 */
export function wantsOpenapiV2Protobuf(accept: string | undefined): boolean {
  const jsonTypes = ['application/json', 'application/*', '*/*'];
  let best: { q: number; protobuf: boolean } | undefined;
  for (const range of (accept ?? '').split(',')) {
    const [type = '', ...params] = range.split(';').map((part) => part.trim());
    const q = Number(params.find((param) => param.startsWith('q='))?.slice(2) ?? 1);
    const protobuf = openapiV2ProtobufTypes.includes(type.toLowerCase());
    if (!(q > 0) || (!protobuf && !jsonTypes.includes(type.toLowerCase()))) continue;
    if (best === undefined || q > best.q) best = { q, protobuf };
  }
  return best?.protobuf ?? false;
}

// --- gnostic protobuf ----------------------------------------------------------------------------

type Json = Record<string, unknown>;

/** Both directions between a JSON value and its gnostic message (field names as in the .proto). */
interface Codec {
  encode(value: unknown): unknown;
  decode(message: unknown): unknown;
}

const scalar: Codec = { encode: (value) => value, decode: (message) => message };

/** Any { yaml }: how gnostic carries defaults, enum values and vendor extensions. */
const any: Codec = {
  // YAML 1.1, as kube reads it: strings such as "on" or "yes" stay strings.
  encode: (value) => ({ yaml: YAML.stringify(value, { version: '1.1', lineWidth: 0 }) }),
  decode: (message) => YAML.parse((message as { yaml: string }).yaml, { version: '1.1' }),
};

function list(codec: Codec): Codec {
  return {
    encode: (value) => (value as unknown[]).map((entry) => codec.encode(entry)),
    decode: (message) => (message as unknown[]).map((entry) => codec.decode(entry)),
  };
}

/** A JSON object as gnostic's ordered (name, value) pairs in `field`. */
function named(field: string, codec: Codec): Codec {
  return {
    encode: (value) => ({
      [field]: Object.entries(value as Json).map(([name, entry]) => ({ name, value: codec.encode(entry) })),
    }),
    decode: (message) =>
      Object.fromEntries(
        (((message as Json)[field] ?? []) as { name: string; value: unknown }[]).map(({ name, value }) => [
          name,
          codec.decode(value),
        ]),
      ),
  };
}

/** A message whose JSON keys map to fields; `x-` keys go to vendor_extension when it has one. */
function message(fields: Record<string, [field: string, codec: Codec]>, extensions = true): Codec {
  const byField = new Map(
    Object.entries(fields).map(([key, [field, codec]]) => [field, [key, codec] as const]),
  );
  return {
    encode(value) {
      const out: Json = {};
      const vendor: { name: string; value: unknown }[] = [];
      for (const [key, entry] of Object.entries(value as Json)) {
        if (entry === undefined) continue;
        if (extensions && key.startsWith('x-')) {
          vendor.push({ name: key, value: any.encode(entry) });
          continue;
        }
        const mapped = fields[key];
        if (!mapped) throw new Error(`"${key}" has no field in the gnostic OpenAPIv2 message`);
        out[mapped[0]] = mapped[1].encode(entry);
      }
      if (vendor.length > 0) out.vendor_extension = vendor;
      return out;
    },
    decode(encoded) {
      const out: Json = {};
      for (const [field, entry] of Object.entries(encoded as Json)) {
        if (field === 'vendor_extension' && extensions) {
          for (const { name, value } of entry as { name: string; value: unknown }[])
            out[name] = any.decode(value);
          continue;
        }
        const mapped = byField.get(field);
        if (!mapped) throw new Error(`field ${field} of a gnostic OpenAPIv2 message is not supported`);
        out[mapped[0]] = mapped[1].decode(entry);
      }
      return out;
    },
  };
}

/** A codec defined later: Schema refers to itself. */
function lazy(get: () => Codec): Codec {
  return { encode: (value) => get().encode(value), decode: (encoded) => get().decode(encoded) };
}

const schema: Codec = message({
  $ref: ['_ref', scalar],
  format: ['format', scalar],
  title: ['title', scalar],
  description: ['description', scalar],
  default: ['default', any],
  multipleOf: ['multiple_of', scalar],
  maximum: ['maximum', scalar],
  exclusiveMaximum: ['exclusive_maximum', scalar],
  minimum: ['minimum', scalar],
  exclusiveMinimum: ['exclusive_minimum', scalar],
  maxLength: ['max_length', scalar],
  minLength: ['min_length', scalar],
  pattern: ['pattern', scalar],
  maxItems: ['max_items', scalar],
  minItems: ['min_items', scalar],
  uniqueItems: ['unique_items', scalar],
  maxProperties: ['max_properties', scalar],
  minProperties: ['min_properties', scalar],
  required: ['required', scalar],
  enum: ['enum', list(any)],
  additionalProperties: [
    'additional_properties',
    {
      encode: (value) => (typeof value === 'boolean' ? { boolean: value } : { schema: schema.encode(value) }),
      decode: (encoded) => {
        const { boolean, schema: inner } = encoded as { boolean?: boolean; schema?: unknown };
        return boolean ?? schema.decode(inner ?? {});
      },
    },
  ],
  type: [
    'type',
    {
      encode: (value) => ({ value: Array.isArray(value) ? value : [value] }),
      decode: (encoded) => {
        const values = (encoded as { value?: string[] }).value ?? [];
        return values.length === 1 ? values[0] : values;
      },
    },
  ],
  items: [
    'items',
    {
      encode: (value) => ({ schema: (Array.isArray(value) ? value : [value]).map((s) => schema.encode(s)) }),
      decode: (encoded) => {
        const schemas = ((encoded as { schema?: unknown[] }).schema ?? []).map((s) => schema.decode(s));
        return schemas.length === 1 ? schemas[0] : schemas;
      },
    },
  ],
  properties: ['properties', lazy(() => named('additional_properties', schema))],
  discriminator: ['discriminator', scalar],
  readOnly: ['read_only', scalar],
});

const nonBodyParameter = (extra: Record<string, [string, Codec]>) =>
  message({
    required: ['required', scalar],
    in: ['in', scalar],
    description: ['description', scalar],
    name: ['name', scalar],
    type: ['type', scalar],
    format: ['format', scalar],
    collectionFormat: ['collection_format', scalar],
    default: ['default', any],
    uniqueItems: ['unique_items', scalar],
    enum: ['enum', list(any)],
    ...extra,
  });

const bodyParameter = message({
  description: ['description', scalar],
  name: ['name', scalar],
  in: ['in', scalar],
  required: ['required', scalar],
  schema: ['schema', schema],
});
const queryParameter = nonBodyParameter({ allowEmptyValue: ['allow_empty_value', scalar] });
const pathParameter = nonBodyParameter({});

/** ParametersItem { parameter: Parameter { body_parameter | non_body_parameter { query | path } } }. */
const parameter: Codec = {
  encode(value) {
    const { in: where } = value as SwaggerParameter;
    if (where === 'body') return { parameter: { body_parameter: bodyParameter.encode(value) } };
    const sub =
      where === 'query'
        ? { query_parameter_sub_schema: queryParameter.encode(value) }
        : where === 'path'
          ? { path_parameter_sub_schema: pathParameter.encode(value) }
          : undefined;
    if (!sub) throw new Error(`a parameter in "${where}" has no field in the gnostic OpenAPIv2 message`);
    return { parameter: { non_body_parameter: sub } };
  },
  decode(encoded) {
    const { parameter: inner } = encoded as { parameter?: Json };
    if (inner?.body_parameter) return bodyParameter.decode(inner.body_parameter);
    const nonBody = (inner?.non_body_parameter ?? {}) as Json;
    if (nonBody.query_parameter_sub_schema) return queryParameter.decode(nonBody.query_parameter_sub_schema);
    if (nonBody.path_parameter_sub_schema) return pathParameter.decode(nonBody.path_parameter_sub_schema);
    throw new Error('unsupported parameter in a gnostic OpenAPIv2 message');
  },
};

const response = message({
  description: ['description', scalar],
  // SchemaItem { schema }
  schema: [
    'schema',
    {
      encode: (value) => ({ schema: schema.encode(value) }),
      decode: (encoded) => schema.decode((encoded as { schema?: unknown }).schema ?? {}),
    },
  ],
});

const responses: Codec = named('response_code', {
  // ResponseValue { response }
  encode: (value) => ({ response: response.encode(value) }),
  decode: (encoded) => response.decode((encoded as { response?: unknown }).response ?? {}),
});

const operation = message({
  tags: ['tags', scalar],
  summary: ['summary', scalar],
  description: ['description', scalar],
  operationId: ['operation_id', scalar],
  produces: ['produces', scalar],
  consumes: ['consumes', scalar],
  parameters: ['parameters', list(parameter)],
  responses: ['responses', responses],
  schemes: ['schemes', scalar],
  deprecated: ['deprecated', scalar],
});

const pathItem = message({
  $ref: ['_ref', scalar],
  ...Object.fromEntries(methods.map((method) => [method, [method, operation] as [string, Codec]])),
  parameters: ['parameters', list(parameter)],
});

const document = message({
  swagger: ['swagger', scalar],
  info: [
    'info',
    message({ title: ['title', scalar], version: ['version', scalar], description: ['description', scalar] }),
  ],
  host: ['host', scalar],
  basePath: ['base_path', scalar],
  schemes: ['schemes', scalar],
  consumes: ['consumes', scalar],
  produces: ['produces', scalar],
  paths: ['paths', named('path', pathItem)],
  definitions: ['definitions', named('additional_properties', schema)],
});

let documentType: protobuf.Type | undefined;

/** openapi.v2.Document, from the checked-in .proto (proto/ sits at the repository root, beside dist/). */
function documentMessage(): protobuf.Type {
  if (!documentType) {
    documentType = loadProtoRoot('openapiv2/openapiv2.proto').lookupType('openapi.v2.Document');
  }
  return documentType;
}

/** The document as gnostic's openapi.v2.Document protobuf, as kube-apiserver serves it. */
export function encodeOpenapiV2(doc: SwaggerDocument): Uint8Array {
  const type = documentMessage();
  return type.encode(type.fromObject(document.encode(doc) as Json)).finish();
}

/** The document back from its protobuf encoding. */
export function decodeOpenapiV2(bytes: Uint8Array): SwaggerDocument {
  const type = documentMessage();
  const plain = type.toObject(type.decode(bytes), { longs: Number, defaults: false, arrays: false });
  return document.decode(plain) as SwaggerDocument;
}
