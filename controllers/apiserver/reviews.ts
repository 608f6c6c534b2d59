/**
 * The create-only review resources kubectl asks about itself: SelfSubjectAccessReview
 * (`kubectl auth can-i`) and SelfSubjectReview (`kubectl auth whoami`). Nothing is stored; the
 * answer comes from the same authorize() every request goes through.
 */
import { servedKindFor } from '../../crds/builtin.js';
import { LoamError } from '../../crds/errors.js';
import { adminGroup, authorize, type User } from './auth.js';
import type { Verb } from './routing.js';

/** A resource discovery lists that is not a stored kind. */
export interface ReviewResource {
  group: string;
  version: string;
  plural: string;
  kind: string;
}

export const reviewResources: readonly ReviewResource[] = [
  {
    group: 'authorization.k8s.io',
    version: 'v1',
    plural: 'selfsubjectaccessreviews',
    kind: 'SelfSubjectAccessReview',
  },
  { group: 'authentication.k8s.io', version: 'v1', plural: 'selfsubjectreviews', kind: 'SelfSubjectReview' },
  // kubectl 1.27's `auth whoami` asks for the beta.
  {
    group: 'authentication.k8s.io',
    version: 'v1beta1',
    plural: 'selfsubjectreviews',
    kind: 'SelfSubjectReview',
  },
];

const verbs = new Set<string>([
  'get',
  'list',
  'watch',
  'create',
  'update',
  'patch',
  'delete',
  'deletecollection',
]);

/** The review resource a POST to `path` creates, if it is one. */
export function reviewFor(method: string, path: string): ReviewResource | undefined {
  if (method !== 'POST') return undefined;
  return reviewResources.find(
    (r) => path.replace(/\/+$/, '') === `/apis/${r.group}/${r.version}/${r.plural}`,
  );
}

interface AccessReviewSpec {
  resourceAttributes?: {
    namespace?: string;
    verb?: string;
    group?: string;
    resource?: string;
    subresource?: string;
    name?: string;
  };
  nonResourceAttributes?: { path?: string; verb?: string };
}

/** The answered review: the request body with `status` filled in. */
export function review(resource: ReviewResource, user: User, body: unknown): unknown {
  const apiVersion = `${resource.group}/${resource.version}`;
  if (resource.kind === 'SelfSubjectReview') {
    return {
      apiVersion,
      kind: resource.kind,
      metadata: { creationTimestamp: null },
      status: { userInfo: { username: user.name, groups: user.groups } },
    };
  }
  const spec = (body as { spec?: AccessReviewSpec } | undefined)?.spec;
  if (!spec || (!spec.resourceAttributes && !spec.nonResourceAttributes)) {
    throw new LoamError(
      'Invalid',
      'SelfSubjectAccessReview is invalid: spec: one of resourceAttributes or nonResourceAttributes must be set',
      {
        causes: [
          {
            field: 'spec',
            reason: 'FieldValueRequired',
            message: 'Required value: resourceAttributes or nonResourceAttributes',
          },
        ],
      },
    );
  }
  return {
    apiVersion,
    kind: resource.kind,
    metadata: { creationTimestamp: null },
    spec,
    status: decide(user, spec),
  };
}

function decide(user: User, spec: AccessReviewSpec): { allowed: boolean; reason?: string } {
  if (user.groups.includes(adminGroup)) return { allowed: true, reason: `member of ${adminGroup}` };
  const attributes = spec.resourceAttributes;
  // Discovery and OpenAPI are open to every authenticated user; nothing else outside resources.
  if (!attributes) return { allowed: spec.nonResourceAttributes?.verb === 'get' };
  const kind = servedKindFor(attributes.group ?? '', attributes.resource ?? '');
  const verb = attributes.verb === '*' ? undefined : attributes.verb;
  if (!kind || !verb || !verbs.has(verb)) return { allowed: false };
  try {
    authorize(user, {
      type: 'resource',
      kind,
      verb: verb as Verb,
      ...(attributes.namespace ? { namespace: attributes.namespace } : {}),
      ...(attributes.name ? { name: attributes.name } : {}),
      ...(attributes.subresource === 'status' ? { subresource: 'status' as const } : {}),
    });
    return { allowed: true };
  } catch (err) {
    // As RBAC answers: a plain no, which kubectl prints as "no".
    if (err instanceof LoamError && err.code === 'Forbidden') return { allowed: false };
    throw err;
  }
}
