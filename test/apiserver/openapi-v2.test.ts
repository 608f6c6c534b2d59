/**
 * /openapi/v2: the Swagger 2.0 document, its gnostic protobuf encoding, and what kubectl 1.27 and
 * 1.28 do with it (they download it on apply, create and explain, and fail without it).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as k8s from '@kubernetes/client-node';
import protobuf from 'protobufjs';
import YAML from 'yaml';
import { schemaName } from '../../controllers/apiserver/openapi.js';
import {
  decodeOpenapiV2,
  encodeOpenapiV2,
  openapiV2Document,
  openapiV2ProtobufType,
  type SwaggerMethod,
  type SwaggerOperation,
  schemaV2,
  wantsOpenapiV2Protobuf,
} from '../../controllers/apiserver/openapi-v2.js';
import type { ControlPlane } from '../../controllers/up.js';
import { servedKinds } from '../../crds/builtin.js';
import type { KindInfo } from '../../crds/kind.js';
import { startPlane, tempDir } from '../harness/plane.js';

const exec = promisify(execFile);

type Json = { [key: string]: unknown };

const document = openapiV2Document(servedKinds);
const methods: SwaggerMethod[] = ['get', 'put', 'post', 'delete', 'patch'];

function operations(): [path: string, method: SwaggerMethod, operation: SwaggerOperation][] {
  return Object.entries(document.paths).flatMap(([path, item]) =>
    methods.flatMap((method) => {
      const operation = item[method];
      return operation ? [[path, method, operation] as const] : [];
    }),
  );
}

/** Every schema node below `value` (definitions, parameter and response schemas), with where it is. */
function schemaNodes(value: unknown, where: string): [string, Json][] {
  if (typeof value !== 'object' || value === null) return [];
  const node = value as Json;
  const children: [string, Json][] = [];
  for (const [name, property] of Object.entries((node.properties ?? {}) as Record<string, Json>))
    children.push(...schemaNodes(property, `${where}.${name}`));
  if (node.items) children.push(...schemaNodes(node.items, `${where}[]`));
  if (typeof node.additionalProperties === 'object')
    children.push(...schemaNodes(node.additionalProperties, `${where}[*]`));
  return [[where, node], ...children];
}

const allSchemaNodes = [
  ...Object.entries(document.definitions).flatMap(([name, schema]) => schemaNodes(schema, name)),
  ...operations().flatMap(([path, method, operation]) => [
    ...(operation.parameters ?? []).flatMap((p) => schemaNodes(p.schema, `${method} ${path} ${p.name}`)),
    ...Object.entries(operation.responses).flatMap(([code, r]) =>
      schemaNodes(r.schema, `${method} ${path} ${code}`),
    ),
  ]),
];

function gvkOf(kind: KindInfo, name = kind.kind) {
  return { group: kind.group, version: kind.version, kind: name };
}

describe('controllers/apiserver/openapi-v2', () => {
  describe('the Swagger 2.0 document', () => {
    it('is Swagger 2.0 with sorted paths and definitions, as kube-apiserver serves them', () => {
      assert.equal(document.swagger, '2.0');
      assert.deepEqual(document.info, { title: 'Loam', version: 'unversioned' });
      for (const record of [document.paths, document.definitions]) {
        const keys = Object.keys(record);
        assert.deepEqual(keys, [...keys].sort());
      }
    });

    for (const kind of servedKinds) {
      it(`${kind.kind}.${kind.group || 'core'}: a PATCH operation with fieldValidation and the kind's gvk`, () => {
        const patches = operations().filter(
          ([, method, operation]) =>
            method === 'patch' &&
            JSON.stringify(operation['x-kubernetes-group-version-kind']) === JSON.stringify(gvkOf(kind)),
        );
        assert.equal(patches.length, kind.statusSubresource ? 2 : 1);
        for (const [path, , operation] of patches) {
          assert.ok(path.endsWith('/{name}') || path.endsWith('/{name}/status'), path);
          assert.equal(operation['x-kubernetes-action'], 'patch');
          const query = (operation.parameters ?? []).filter((p) => p.in === 'query').map((p) => p.name);
          for (const name of ['dryRun', 'fieldManager', 'fieldValidation', 'force'])
            assert.ok(query.includes(name));
          assert.deepEqual(operation.parameters?.[0], {
            name: 'body',
            in: 'body',
            required: true,
            schema: { $ref: '#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.Patch' },
          });
          assert.ok(operation.consumes?.includes('application/merge-patch+json'));
          assert.ok(operation.consumes?.includes('application/apply-patch+yaml'));
          assert.deepEqual(operation.responses['200']?.schema, { $ref: `#/definitions/${schemaName(kind)}` });
        }
      });

      it(`${kind.kind}.${kind.group || 'core'}: definitions for the kind and its list, with their gvk`, () => {
        const object = document.definitions[schemaName(kind)];
        const list = document.definitions[schemaName(kind, kind.listKind)];
        assert.ok(object && list);
        assert.deepEqual(object['x-kubernetes-group-version-kind'], [gvkOf(kind)]);
        assert.deepEqual(list['x-kubernetes-group-version-kind'], [gvkOf(kind, kind.listKind)]);
        assert.equal(object.type, 'object');
        const properties = object.properties as Record<string, Json>;
        assert.deepEqual(properties.metadata, {
          $ref: '#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta',
          description: "Standard object's metadata: name, namespace, labels, annotations, ...",
        });
        assert.equal(properties.apiVersion?.type, 'string');
        assert.deepEqual((list.properties as Record<string, Json>).items?.items, {
          $ref: `#/definitions/${schemaName(kind)}`,
        });
      });
    }

    it('declares dryRun, fieldManager and fieldValidation on every write, with action and gvk on every operation', () => {
      for (const [path, method, operation] of operations()) {
        const where = `${method} ${path}`;
        assert.ok(operation.operationId, where);
        assert.ok(operation['x-kubernetes-action'], where);
        assert.ok(operation['x-kubernetes-group-version-kind'].kind, where);
        assert.deepEqual(operation.schemes, ['https'], where);
        if (method === 'post' || method === 'put' || method === 'patch') {
          const names = (operation.parameters ?? []).map((p) => p.name);
          for (const name of ['body', 'dryRun', 'fieldManager', 'fieldValidation']) {
            assert.ok(names.includes(name), `${where} lacks ${name}`);
          }
        }
      }
    });

    it('uses only what Swagger 2.0 and kubectl understand: no junctors, no nullable, typed arrays', () => {
      assert.ok(allSchemaNodes.length > 500);
      for (const [where, node] of allSchemaNodes) {
        for (const key of ['oneOf', 'anyOf', 'allOf', 'not', 'nullable']) {
          assert.ok(!(key in node), `${where} has ${key}`);
        }
        if (typeof node.$ref === 'string') {
          assert.deepEqual(
            Object.keys(node).filter((key) => key !== 'description'),
            ['$ref'],
            where,
          );
          const target = node.$ref.replace(/^#\/definitions\//, '');
          assert.ok(node.$ref.startsWith('#/definitions/') && document.definitions[target], where);
        }
        // kube-openapi's parser (kubectl) rejects an array without one item schema, and other types.
        if (node.type === 'array') assert.ok(node.items && !Array.isArray(node.items), where);
        if (node.type !== undefined) {
          assert.ok(
            ['object', 'array', 'string', 'integer', 'number', 'boolean'].includes(node.type as string),
          );
        }
      }
    });

    it('publishes int-or-string and nullable fields untyped, as kube does for CRDs', () => {
      const instance = document.definitions['dev.loam.v1alpha1.Instance'] as Json;
      const spec = (instance.properties as Record<string, Json>).spec as Json;
      assert.deepEqual((spec.properties as Record<string, Json>).memory, {
        description: 'Guest memory, e.g. 2Gi.',
        default: '512Mi',
        'x-kubernetes-int-or-string': true,
      });
      const event = document.definitions['io.k8s.api.core.v1.Event'] as Json;
      assert.deepEqual((event.properties as Record<string, Json>).firstTimestamp, {
        description: 'When this event was first recorded.',
        format: 'date-time',
      });
    });

    it('lists every group-version on the definitions they share', () => {
      const deleteOptions = document.definitions[
        'io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions'
      ] as Json;
      assert.deepEqual(deleteOptions['x-kubernetes-group-version-kind'], [
        { group: '', version: 'v1', kind: 'DeleteOptions' },
        { group: 'loam.dev', version: 'v1alpha1', kind: 'DeleteOptions' },
        { group: 'coordination.k8s.io', version: 'v1', kind: 'DeleteOptions' },
      ]);
    });
  });

  describe('schemaV2 (ToStructuralOpenAPIV2)', () => {
    const cases: [string, Json, Json][] = [
      [
        'an OpenAPI 3.0 allOf reference becomes a plain $ref, keeping the description',
        { allOf: [{ $ref: '#/components/schemas/a.B' }], default: {}, description: 'd' },
        { $ref: '#/definitions/a.B', description: 'd' },
      ],
      [
        'junctors are dropped',
        { type: 'string', allOf: [{ pattern: 'a' }, { pattern: 'b' }], oneOf: [{ format: 'x' }], not: {} },
        { type: 'string' },
      ],
      [
        'a nullable node loses its type, properties and items, and is no longer required',
        {
          type: 'object',
          required: ['a', 'b'],
          properties: {
            a: { type: 'object', nullable: true, properties: { c: { type: 'string' } } },
            b: { type: 'string' },
          },
        },
        { type: 'object', required: ['b'], properties: { a: {}, b: { type: 'string' } } },
      ],
      [
        'nullable map values empty the required list',
        { type: 'object', required: ['a'], additionalProperties: { type: 'string', nullable: true } },
        { type: 'object', additionalProperties: {} },
      ],
      [
        'preserve-unknown-fields drops properties and the object type',
        {
          type: 'object',
          'x-kubernetes-preserve-unknown-fields': true,
          properties: { a: { type: 'string' } },
        },
        { 'x-kubernetes-preserve-unknown-fields': true },
      ],
      [
        'an array without items is untyped',
        { type: 'array', 'x-kubernetes-preserve-unknown-fields': true, items: { type: 'string' } },
        { 'x-kubernetes-preserve-unknown-fields': true },
      ],
    ];
    for (const [name, input, expected] of cases) {
      it(name, () => assert.deepEqual(schemaV2(input), expected));
    }
  });

  describe('the gnostic protobuf', () => {
    it('decodes to the same document', () => {
      const bytes = encodeOpenapiV2(document);
      assert.deepEqual(decodeOpenapiV2(bytes), document);
    });

    it('keeps the field numbers of gnostic OpenAPIv2.proto', () => {
      const root = new protobuf.Root().loadSync(
        fileURLToPath(new URL('../../../proto/openapiv2/openapiv2.proto', import.meta.url)),
        { keepCase: true },
      );
      // Upstream numbers of the fields kubectl reads (google/gnostic openapiv2/OpenAPIv2.proto).
      const upstream: Record<string, Record<string, number>> = {
        Document: { swagger: 1, info: 2, paths: 8, definitions: 9, vendor_extension: 16 },
        Paths: { vendor_extension: 1, path: 2 },
        NamedPathItem: { name: 1, value: 2 },
        PathItem: { get: 2, put: 3, post: 4, delete: 5, patch: 8, parameters: 9, vendor_extension: 10 },
        Operation: {
          tags: 1,
          description: 3,
          operation_id: 5,
          parameters: 8,
          responses: 9,
          vendor_extension: 13,
        },
        ParametersItem: { parameter: 1, json_reference: 2 },
        Parameter: { body_parameter: 1, non_body_parameter: 2 },
        NonBodyParameter: { query_parameter_sub_schema: 3, path_parameter_sub_schema: 4 },
        QueryParameterSubSchema: { required: 1, in: 2, description: 3, name: 4, type: 6, unique_items: 20 },
        PathParameterSubSchema: { required: 1, in: 2, description: 3, name: 4, type: 5, unique_items: 19 },
        BodyParameter: { description: 1, name: 2, in: 3, required: 4, schema: 5 },
        NamedAny: { name: 1, value: 2 },
        Any: { yaml: 2 },
        Definitions: { additional_properties: 1 },
        NamedSchema: { name: 1, value: 2 },
        Schema: {
          _ref: 1,
          format: 2,
          description: 4,
          default: 5,
          maximum: 7,
          minimum: 9,
          max_length: 11,
          pattern: 13,
          required: 19,
          enum: 20,
          additional_properties: 21,
          type: 22,
          items: 23,
          properties: 25,
          vendor_extension: 31,
        },
        Properties: { additional_properties: 1 },
        ItemsItem: { schema: 1 },
        TypeItem: { value: 1 },
        Responses: { response_code: 1 },
        ResponseValue: { response: 1 },
        Response: { description: 1, schema: 2 },
      };
      for (const [message, fields] of Object.entries(upstream)) {
        const type = root.lookupType(`openapi.v2.${message}`);
        for (const [field, id] of Object.entries(fields)) {
          assert.equal(type.fields[field]?.id, id, `${message}.${field}`);
        }
      }
    });

    it('carries vendor extensions as YAML, the way kubectl reads the PATCH gvk', () => {
      const root = new protobuf.Root().loadSync(
        fileURLToPath(new URL('../../../proto/openapiv2/openapiv2.proto', import.meta.url)),
        { keepCase: true },
      );
      const type = root.lookupType('openapi.v2.Document');
      const raw = type.toObject(type.decode(encodeOpenapiV2(document))) as {
        paths: {
          path: {
            name: string;
            value: { patch?: { vendor_extension: { name: string; value: { yaml: string } }[] } };
          }[];
        };
      };
      const network = raw.paths.path.find(
        (p) => p.name === '/apis/loam.dev/v1alpha1/namespaces/{namespace}/networks/{name}',
      );
      const gvk = network?.value.patch?.vendor_extension.find(
        (e) => e.name === 'x-kubernetes-group-version-kind',
      );
      assert.ok(gvk);
      assert.deepEqual(YAML.parse(gvk.value.yaml), {
        group: 'loam.dev',
        version: 'v1alpha1',
        kind: 'Network',
      });
    });
  });

  it('negotiates protobuf only when the Accept header prefers it', () => {
    const cases: [string | undefined, boolean][] = [
      [undefined, false],
      ['*/*', false],
      ['application/json', false],
      ['application/com.github.proto-openapi.spec.v2@v1.0+protobuf', true],
      ['application/com.github.proto-openapi.spec.v2.v1.0+protobuf', true],
      ['application/json, application/com.github.proto-openapi.spec.v2@v1.0+protobuf', false],
      ['application/json;q=0.5, application/com.github.proto-openapi.spec.v2@v1.0+protobuf', true],
      ['application/com.github.proto-openapi.spec.v2@v1.0+protobuf;q=0, */*', false],
      ['text/html', false],
    ];
    for (const [accept, protobufWanted] of cases) {
      assert.equal(wantsOpenapiV2Protobuf(accept), protobufWanted, String(accept));
    }
  });
});

describe('/openapi/v2 with kubectl 1.27 and 1.28', function () {
  this.timeout(120_000);
  let dir: string;
  let plane: ControlPlane;

  before(async () => {
    dir = tempDir('openapi-v2');
    plane = await startPlane(dir);
  });
  after(async () => {
    await plane?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function get(path: string, accept?: string): Promise<{ type: string; body: Buffer }> {
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(plane.kubeconfigPath);
    const options: Parameters<typeof request>[1] = { timeout: 5000, headers: accept ? { accept } : {} };
    await kc.applyToHTTPSOptions(options);
    return new Promise((resolve, reject) => {
      const req = request(`${plane.apiServer.url}${path}`, options, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          if (res.statusCode !== 200) reject(new Error(`GET ${path}: ${res.statusCode}`));
          else resolve({ type: res.headers['content-type'] ?? '', body: Buffer.concat(chunks) });
        });
      });
      req.on('error', reject);
      req.end();
    });
  }

  it('serves protobuf to who asks for it, JSON otherwise, and protobuf on the legacy path', async () => {
    const asked = await get('/openapi/v2', 'application/com.github.proto-openapi.spec.v2@v1.0+protobuf');
    assert.equal(asked.type, openapiV2ProtobufType);
    assert.deepEqual(decodeOpenapiV2(asked.body), openapiV2Document(servedKinds));
    const json = await get('/openapi/v2', 'application/json');
    assert.equal(json.type, 'application/json');
    assert.deepEqual(JSON.parse(json.body.toString('utf8')), openapiV2Document(servedKinds));
    const legacy = await get('/swagger-2.0.0.pb-v1', 'application/json, */*');
    assert.equal(legacy.type, openapiV2ProtobufType);
    assert.deepEqual(legacy.body, asked.body);
  });

  for (const version of ['1.27', '1.28']) {
    describe(`kubectl ${version}`, () => {
      const binary = `/usr/lib/google-cloud-sdk/bin/kubectl.${version}`;
      const kubectl = async (...args: string[]) => {
        const { stdout } = await exec(binary, ['--kubeconfig', plane.kubeconfigPath, ...args], {
          timeout: 30_000,
        });
        return stdout;
      };
      const name = `lab-${version.replace('.', '-')}`;

      it('applies crds/samples/network.yaml: created, then unchanged', async () => {
        const sample = readFileSync(new URL('../../../crds/samples/network.yaml', import.meta.url), 'utf8');
        const manifest = join(dir, `${name}.yaml`);
        writeFileSync(manifest, sample.replace('name: lab', `name: ${name}`));
        assert.match(await kubectl('apply', '-f', manifest), new RegExp(`network.loam.dev/${name} created`));
        assert.match(
          await kubectl('apply', '-f', manifest),
          new RegExp(`network.loam.dev/${name} unchanged`),
        );
      });

      it('explains network.spec, from OpenAPI v3 and from the v2 definitions', async () => {
        const cidr =
          /cidr\s+<string> -required-\s+The IPv4 subnet, e\.g\. 10\.20\.0\.0\/24; cannot be changed\./;
        assert.match(await kubectl('explain', 'network.spec'), cidr);
        const v2 = await kubectl('explain', 'network.spec', '--output=plaintext-openapiv2');
        assert.match(v2, /VERSION:\s+loam\.dev\/v1alpha1/);
        assert.match(v2, cidr);
      });

      it('refuses to create a manifest with an unknown field, naming it', async () => {
        const manifest = join(dir, `typo-${name}.yaml`);
        writeFileSync(
          manifest,
          `apiVersion: loam.dev/v1alpha1\nkind: Network\nmetadata: {name: typo-${name}, namespace: default}\nspec: {cidr: 10.1.0.0/24, egres: true}\n`,
        );
        await assert.rejects(kubectl('create', '-f', manifest), /unknown field "spec\.egres"/);
      });
    });
  }
});
