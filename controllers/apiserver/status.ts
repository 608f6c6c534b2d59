/** Kubernetes `Status` objects: the body of every API error, built from Loam's coded errors. */
import { isLoamError, LoamError } from '../../crds/errors.js';

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

/** `instances.loam.dev "web"`, or `namespaces "dev"` for the core group, as kube-apiserver words it. */
export function qualifiedName(resource: string, group: string, name: string): string {
  return `${group ? `${resource}.${group}` : resource} ${JSON.stringify(name)}`;
}
