/** Kubernetes `Status` objects: the body of every API error, built from Loam's coded errors. */
import { isLoamError, LoamError } from '../../crds/errors.js';
import type { KindInfo } from '../../crds/kind.js';

export interface StatusObject {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Success' | 'Failure';
  message: string;
  reason: string;
  details?: {
    name?: string;
    group?: string;
    kind?: string;
    causes?: { field: string; reason: string; message: string }[];
  };
  code: number;
}

export interface ErrorSubject {
  /** Resource plural (as kube-apiserver names it in errors: `instances.loam.dev`). */
  resource?: string;
  group?: string;
  name?: string;
}

export function statusFromError(err: unknown, subject: ErrorSubject = {}): StatusObject {
  const e = isLoamError(err) ? err : new LoamError('Internal', 'Internal error occurred');
  const details: StatusObject['details'] = {};
  if (subject.name) details.name = subject.name;
  if (subject.group) details.group = subject.group;
  if (subject.resource) details.kind = subject.resource;
  if (e.causes.length > 0)
    details.causes = e.causes.map((c) => ({ field: c.field, reason: c.reason, message: c.message }));
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: e.message,
    reason: e.reason,
    ...(Object.keys(details).length > 0 ? { details } : {}),
    code: e.httpStatus,
  };
}

/** `instances.loam.dev`, or `namespaces` for the core group: how kube-apiserver names a resource in messages. */
export function groupResource(kind: KindInfo): string {
  return kind.group ? `${kind.plural}.${kind.group}` : kind.plural;
}

/** `instances.loam.dev "web"`. */
export function qualifiedName(kind: KindInfo, name: string): string {
  return `${groupResource(kind)} ${JSON.stringify(name)}`;
}

export function notFoundError(kind: KindInfo, name: string): LoamError {
  return new LoamError('NotFound', `${qualifiedName(kind, name)} not found`);
}

export function conflictError(kind: KindInfo, name: string): LoamError {
  return new LoamError(
    'Conflict',
    `Operation cannot be fulfilled on ${qualifiedName(kind, name)}: the object has been modified; please apply your changes to the latest version and try again`,
  );
}
