/**
 * Request bodies in Kubernetes' protobuf encoding (application/vnd.kubernetes.protobuf), turned
 * into exactly the object kube's JSON encoding of the same value would be. Typed Go clients send
 * built-in kinds this way: kubectl 1.33's `create namespace`, `create secret`, `auth can-i` and
 * `auth whoami` among them. Responses stay JSON, which their Accept header also allows.
 *
 * On the wire: the magic bytes "k8s\0", then a runtime.Unknown whose typeMeta names apiVersion and
 * kind and whose raw holds the object's generated.proto message (proto/k8s/*.proto, a subset with
 * upstream's field numbers). Pure apart from loading those .proto files once.
 *
 * Go's protobuf marshaller writes every non-pointer field, zero or not, so presence on the wire
 * is not presence in JSON: zero scalars are dropped as `omitempty` drops them, except the pointer
 * fields and the fields without omitempty listed in `keepZero`. A zero Time (JSON null) is left
 * out rather than written as null; kube's decoder reads both the same.
 */
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { LoamError } from '../../crds/errors.js';

export const protobufContentType = 'application/vnd.kubernetes.protobuf';

/** Loads checked-in .proto files (paths under the repository's proto/, which sits beside dist/). */
export function loadProtoRoot(...files: string[]): protobuf.Root {
  const root = new protobuf.Root();
  const paths = files.map((file) => fileURLToPath(new URL(`../../../proto/${file}`, import.meta.url)));
  return root.loadSync(paths, { keepCase: true });
}

const magic = Buffer.from('k8s\0', 'latin1');
const meta = 'k8s.io.apimachinery.pkg.apis.meta.v1';

/** The message of each kind accepted as protobuf, by `apiVersion/kind`. */
const messages: Readonly<Record<string, string>> = {
  'v1/Namespace': 'k8s.io.api.core.v1.Namespace',
  'v1/Secret': 'k8s.io.api.core.v1.Secret',
  'v1/Event': 'k8s.io.api.core.v1.Event',
  'coordination.k8s.io/v1/Lease': 'k8s.io.api.coordination.v1.Lease',
  'authorization.k8s.io/v1/SelfSubjectAccessReview': 'k8s.io.api.authorization.v1.SelfSubjectAccessReview',
  'authentication.k8s.io/v1/SelfSubjectReview': 'k8s.io.api.authentication.v1.SelfSubjectReview',
};

/**
 * Scalar fields kube's JSON keeps at their zero value: Go pointers (set means present, as in
 * `gracePeriodSeconds: 0`) and fields whose json tag has no omitempty (`allowed: false`).
 */
const keepZero = new Set([
  `${meta}.ObjectMeta.deletionGracePeriodSeconds`,
  `${meta}.OwnerReference.apiVersion`,
  `${meta}.OwnerReference.kind`,
  `${meta}.OwnerReference.name`,
  `${meta}.OwnerReference.uid`,
  `${meta}.OwnerReference.controller`,
  `${meta}.OwnerReference.blockOwnerDeletion`,
  `${meta}.DeleteOptions.gracePeriodSeconds`,
  `${meta}.DeleteOptions.orphanDependents`,
  `${meta}.DeleteOptions.propagationPolicy`,
  `${meta}.DeleteOptions.ignoreStoreReadErrorWithClusterBreakingPotential`,
  `${meta}.Preconditions.uid`,
  `${meta}.Preconditions.resourceVersion`,
  `${meta}.FieldSelectorRequirement.key`,
  `${meta}.FieldSelectorRequirement.operator`,
  `${meta}.LabelSelectorRequirement.key`,
  `${meta}.LabelSelectorRequirement.operator`,
  'k8s.io.api.core.v1.NamespaceCondition.type',
  'k8s.io.api.core.v1.NamespaceCondition.status',
  'k8s.io.api.core.v1.Secret.immutable',
  'k8s.io.api.core.v1.Event.reportingComponent',
  'k8s.io.api.core.v1.Event.reportingInstance',
  'k8s.io.api.coordination.v1.LeaseSpec.holderIdentity',
  'k8s.io.api.coordination.v1.LeaseSpec.leaseDurationSeconds',
  'k8s.io.api.coordination.v1.LeaseSpec.leaseTransitions',
  'k8s.io.api.coordination.v1.LeaseSpec.strategy',
  'k8s.io.api.coordination.v1.LeaseSpec.preferredHolder',
  'k8s.io.api.authorization.v1.SubjectAccessReviewStatus.allowed',
]);

let root: protobuf.Root | undefined;

function types(): protobuf.Root {
  root ??= loadProtoRoot(
    'k8s/runtime.proto',
    'k8s/core.proto',
    'k8s/coordination.proto',
    'k8s/authorization.proto',
    'k8s/authentication.proto',
  );
  return root;
}

type Plain = Record<string, unknown>;

/** Decodes `bytes` as `type` into a plain object holding only the fields present on the wire. */
function decodeMessage(type: protobuf.Type, bytes: Uint8Array): Plain {
  return type.toObject(type.decode(bytes), { longs: Number, defaults: false }) as Plain;
}

/** The object an application/vnd.kubernetes.protobuf body carries, in kube's JSON form. */
export function decodeKubernetesProtobuf(body: Buffer): unknown {
  if (body.length < magic.length || !body.subarray(0, magic.length).equals(magic)) {
    throw new LoamError(
      'BadRequest',
      `the request body is not ${protobufContentType}: it does not start with the "k8s\\0" prefix`,
    );
  }
  const root = types();
  let envelope: Plain;
  try {
    envelope = decodeMessage(root.lookupType('k8s.io.apimachinery.pkg.runtime.Unknown'), body.subarray(4));
  } catch (err) {
    throw new LoamError('BadRequest', `the request body is not valid protobuf: ${(err as Error).message}`);
  }
  const typeMeta = (envelope.typeMeta ?? {}) as { apiVersion?: string; kind?: string };
  const apiVersion = typeMeta.apiVersion ?? '';
  const kind = typeMeta.kind ?? '';
  if (!kind || !apiVersion) {
    throw new LoamError('BadRequest', 'the protobuf request body does not name its apiVersion and kind');
  }
  // Go clients leave both empty: the raw bytes are the object's own protobuf message.
  const { contentEncoding, contentType } = envelope as { contentEncoding?: string; contentType?: string };
  if (contentEncoding || (contentType && contentType !== protobufContentType)) {
    throw new LoamError(
      'UnsupportedMediaType',
      `unsupported ${contentEncoding ? `contentEncoding ${JSON.stringify(contentEncoding)}` : `contentType ${JSON.stringify(contentType)}`} in the protobuf envelope`,
    );
  }
  // DeleteOptions is registered in every group version, always as the same meta/v1 message.
  const name = kind === 'DeleteOptions' ? `${meta}.DeleteOptions` : messages[`${apiVersion}/${kind}`];
  if (!name) {
    throw new LoamError(
      'UnsupportedMediaType',
      `${kind} (${apiVersion}) cannot be sent as ${protobufContentType} to this server; send it as application/json`,
    );
  }
  const type = root.lookupType(name);
  let plain: Plain;
  try {
    plain = decodeMessage(type, (envelope.raw as Uint8Array | undefined) ?? new Uint8Array());
  } catch (err) {
    throw new LoamError(
      'BadRequest',
      `the ${kind} in the request body is not valid protobuf: ${(err as Error).message}`,
    );
  }
  return { apiVersion, kind, ...messageJson(type, plain) };
}

/** A decoded message in kube's JSON form. */
function messageJson(type: protobuf.Type, plain: Plain): Plain {
  const out: Plain = {};
  for (const field of type.fieldsArray) {
    const value = plain[field.name];
    if (value === undefined || value === null) continue;
    let json: unknown;
    if (field.map) {
      const entries = Object.entries(value as Plain).map(([k, v]) => [k, valueJson(field, v, true)]);
      json = entries.length > 0 ? Object.fromEntries(entries) : undefined;
    } else if (field.repeated) {
      const items = (value as unknown[]).map((v) => valueJson(field, v, true));
      json = items.length > 0 ? items : undefined;
    } else {
      json = valueJson(field, value, keepZero.has(`${type.fullName.slice(1)}.${field.name}`));
    }
    if (json !== undefined) out[field.name] = json;
  }
  return out;
}

/** One value of `field` (an element, for maps and lists) in kube's JSON form; undefined to omit it. */
function valueJson(field: protobuf.Field, value: unknown, keep: boolean): unknown {
  const message = field.resolvedType;
  if (message instanceof protobuf.Type) {
    const plain = value as Plain;
    switch (message.fullName.slice(1)) {
      case `${meta}.Time`:
        return timestamp(plain, false);
      case `${meta}.MicroTime`:
        return timestamp(plain, true);
      case `${meta}.FieldsV1`:
        return fieldsV1(plain);
      case 'k8s.io.api.authentication.v1.ExtraValue':
        return (plain.items as string[] | undefined) ?? [];
      default:
        return messageJson(message, plain);
    }
  }
  if (value instanceof Uint8Array) {
    return !keep && value.length === 0 ? undefined : Buffer.from(value).toString('base64');
  }
  if (!keep && (value === '' || value === 0 || value === false)) return undefined;
  return value;
}

/** 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the years Go's time.Time writes as JSON. */
const minSeconds = -62167219200;
const maxSeconds = 253402300799;

/**
 * metav1.Time (whole seconds: kube ignores nanos on decode) or MicroTime (6 fractional digits)
 * as RFC 3339 in UTC. An empty message is the zero time, null in JSON: left out.
 */
function timestamp(plain: Plain, micro: boolean): string | undefined {
  if (plain.seconds === undefined && plain.nanos === undefined) return undefined;
  let seconds = Number(plain.seconds ?? 0);
  let nanos = micro ? Number(plain.nanos ?? 0) : 0;
  seconds += Math.floor(nanos / 1e9);
  nanos = ((nanos % 1e9) + 1e9) % 1e9;
  if (!(seconds >= minSeconds && seconds <= maxSeconds)) {
    throw new LoamError(
      'BadRequest',
      `a timestamp in the request body is out of range: ${plain.seconds} seconds`,
    );
  }
  const whole = new Date(seconds * 1000).toISOString().slice(0, 19);
  return micro ? `${whole}.${String(Math.floor(nanos / 1000)).padStart(6, '0')}Z` : `${whole}Z`;
}

/** FieldsV1 is its raw bytes in JSON: a JSON object describing the managed fields. */
function fieldsV1(plain: Plain): unknown {
  if (plain.Raw === undefined) return undefined;
  const text = Buffer.from(plain.Raw as Uint8Array).toString('utf8');
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new LoamError('BadRequest', `managedFields fieldsV1 is not valid JSON: ${(err as Error).message}`);
  }
}
