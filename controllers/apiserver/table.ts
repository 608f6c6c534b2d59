/**
 * Server-side printing: the meta.k8s.io/v1 Table kubectl asks for (`Accept: ...;as=Table`), with
 * a Name column, the kind's printer columns, and each row's object as PartialObjectMetadata.
 */
import { JSONPath } from 'jsonpath-plus';
import type { KindInfo, PrinterColumn } from '../../crds/kind.js';
import type { ApiObject } from './objects.js';

export function wantsTable(accept: string | undefined): boolean {
  return (accept ?? '').split(',').some((part) => {
    const params = part.split(';').map((p) => p.trim());
    return params.includes('as=Table') && params.includes('g=meta.k8s.io') && params.includes('v=v1');
  });
}

/** kubectl's short ages: 45s, 12m, 5h, 3d, 2y (apimachinery duration.HumanDuration, simplified). */
export function humanAge(from: Date, now: Date): string {
  const seconds = Math.max(0, Math.floor((now.getTime() - from.getTime()) / 1000));
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 10) return `${minutes}m${seconds % 60 ? `${seconds % 60}s` : ''}`;
  if (minutes < 180) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 8) return `${hours}h${minutes % 60 ? `${minutes % 60}m` : ''}`;
  if (hours < 48) return `${hours}h`;
  const days = Math.floor(hours / 24);
  if (days < 365 * 2) return `${days}d`;
  return `${Math.floor(days / 365)}y`;
}

function cell(column: PrinterColumn, obj: ApiObject, now: Date): unknown {
  const found: unknown = JSONPath({ path: `$${column.jsonPath}`, json: obj, wrap: false });
  const value = Array.isArray(found) ? found[0] : found;
  if (value === undefined || value === null)
    return column.type === 'string' || column.type === 'date' ? '' : null;
  if (column.type === 'date' && typeof value === 'string') return humanAge(new Date(value), now);
  return value;
}

export function toTable(
  kind: KindInfo,
  objects: ApiObject[],
  listMetadata: Record<string, unknown>,
  now: Date,
) {
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata: listMetadata,
    columnDefinitions: [
      { name: 'Name', type: 'string', format: 'name', description: 'Name of the object', priority: 0 },
      ...kind.printerColumns.map((c) => ({
        name: c.name,
        type: c.type === 'date' ? 'string' : c.type,
        format: c.type === 'date' ? 'date' : '',
        description: c.description ?? '',
        priority: c.priority ?? 0,
      })),
    ],
    rows: objects.map((obj) => ({
      cells: [obj.metadata.name, ...kind.printerColumns.map((c) => cell(c, obj, now))],
      object: { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: obj.metadata },
    })),
  };
}
