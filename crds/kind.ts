import type { z } from 'zod';
import type { Scope } from './meta.js';

/** A column of `kubectl get` output (CRD additionalPrinterColumns; Table rows in the built-in API server). */
export interface PrinterColumn {
  name: string;
  type: 'string' | 'integer' | 'number' | 'boolean' | 'date';
  jsonPath: string;
  description?: string;
  /** 0 shows by default; higher only with `-o wide`. */
  priority?: number;
}

/** What a connect subresource streams; an agent's driver serves the stream of the same kind. */
export type ConnectSubresource = 'console';

/** What an action subresource asks of what an Instance stands for: power it on or off, reboot it, reset it. */
export const actionSubresources = ['start', 'stop', 'reboot', 'reset'] as const;
export type ActionSubresource = (typeof actionSubresources)[number];

/**
 * Everything the API server, the CRD generator and clients need to know about one kind. Both
 * derive names, scope, validation and columns from this, never from their own copies.
 */
export interface KindInfo<Schema extends z.ZodType = z.ZodType> {
  group: string;
  version: string;
  kind: string;
  plural: string;
  singular: string;
  listKind: string;
  shortNames: string[];
  categories: string[];
  scope: Scope;
  /**
   * Whether status is written only through the `/status` subresource (and ignored on writes to the
   * main resource), as for CRDs with `subresources.status` and most built-in kinds.
   */
  statusSubresource: boolean;
  /**
   * Subresources that connect to what the object stands for instead of reading or writing it:
   * a GET upgraded to a WebSocket carrying a byte stream, as KubeVirt's
   * virtualmachineinstances/console (the built-in API server only; CRDs cannot declare them).
   */
  connectSubresources?: readonly ConnectSubresource[];
  /**
   * Subresources a PUT asks to act once, without changing the object, as KubeVirt's
   * virtualmachines/restart (RBAC's verb update; the built-in API server only).
   */
  actionSubresources?: readonly ActionSubresource[];
  /** The whole object (apiVersion, kind, metadata, spec, status); parsing applies defaults. */
  schema: Schema;
  printerColumns: PrinterColumn[];
  /**
   * Field selector names a list or watch may filter on beyond metadata.name and
   * metadata.namespace, each with the dotted path of the value it reads (Event's `source` reads
   * `source.component`, as in kube-apiserver).
   */
  selectableFields?: Record<string, string>;
}
