/**
 * The writes every controller makes, through the Kubernetes API (so they work against Loam's API
 * server and a cluster alike): status through the status subresource, finalizers by a merge
 * patch, both with the resourceVersion the decision was based on, so a decision made on a stale
 * cache fails with 409 and is made again instead of overwriting newer state; and Events.
 */
import {
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { KindInfo } from '../../crds/kind.js';
import type { ApiObject } from './controller.js';

const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
/** Whom managedFields name for the controllers' writes. */
export const controllerFieldManager = 'loam-controller';

export class ObjectWriter {
  private readonly custom: CustomObjectsApi;

  constructor(kubeConfig: KubeConfig) {
    this.custom = kubeConfig.makeApiClient(CustomObjectsApi);
  }

  /** Writes `status` for `object` as read; returns the stored object. */
  async replaceStatus<T extends ApiObject>(kind: KindInfo, object: T, status: unknown): Promise<T> {
    const target = request(kind, object, { ...object, status });
    return (await (kind.scope === 'Namespaced'
      ? this.custom.replaceNamespacedCustomObjectStatus(target)
      : this.custom.replaceClusterCustomObjectStatus(target))) as T;
  }

  /**
   * Merges `fields` into the status of `object`, whatever its resourceVersion: for a status
   * another writer keeps too (the hub a Router's), where each owns its own fields.
   */
  async patchStatus<T extends ApiObject>(kind: KindInfo, object: T, fields: object): Promise<T> {
    const target = request(kind, object, { status: fields });
    return (await (kind.scope === 'Namespaced'
      ? this.custom.patchNamespacedCustomObjectStatus(target, mergePatch)
      : this.custom.patchClusterCustomObjectStatus(target, mergePatch))) as T;
  }

  /** Sets metadata.finalizers of `object` as read; returns the stored object. */
  async replaceFinalizers<T extends ApiObject>(kind: KindInfo, object: T, finalizers: string[]): Promise<T> {
    const resourceVersion = object.metadata?.resourceVersion;
    const target = request(kind, object, { metadata: { finalizers, resourceVersion } });
    return (await (kind.scope === 'Namespaced'
      ? this.custom.patchNamespacedCustomObject(target, mergePatch)
      : this.custom.patchClusterCustomObject(target, mergePatch))) as T;
  }
}

/** The parameters of a write of `body` to `object` (the namespace is ignored for cluster kinds). */
function request(kind: KindInfo, object: ApiObject, body: object) {
  const { namespace = '', name = '' } = object.metadata ?? {};
  return {
    group: kind.group,
    version: kind.version,
    plural: kind.plural,
    namespace,
    name,
    body,
    fieldManager: controllerFieldManager,
  };
}

export interface RecordedEvent {
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
}

/**
 * Records core/v1 Events about objects, as client-go's recorder does, without holding up the
 * reconcile: an Event is a notice to people, so one that cannot be written is logged and dropped.
 */
export class EventRecorder {
  private readonly core: CoreV1Api;
  /** Tells apart Events of one object recorded in the same millisecond. */
  private sequence = 0;

  constructor(
    kubeConfig: KubeConfig,
    private readonly component: string,
    private readonly logger: Logger,
  ) {
    this.core = kubeConfig.makeApiClient(CoreV1Api);
  }

  record(object: ApiObject, event: RecordedEvent): void {
    const { name = '', namespace = 'default', uid, resourceVersion } = object.metadata ?? {};
    const now = new Date();
    // As client-go names them: the object's name and a hex timestamp (a generateName ending in a
    // dot is not a valid prefix).
    const stamp = BigInt(now.getTime()) * 1_000_000n + BigInt(this.sequence++ % 1_000_000);
    this.core
      .createNamespacedEvent({
        namespace,
        body: {
          metadata: { name: `${name}.${stamp.toString(16)}`, namespace },
          involvedObject: {
            apiVersion: object.apiVersion,
            kind: object.kind,
            name,
            namespace,
            ...(uid ? { uid } : {}),
            ...(resourceVersion ? { resourceVersion } : {}),
          },
          type: event.type,
          reason: event.reason,
          message: event.message,
          source: { component: this.component },
          reportingComponent: this.component,
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
        },
      })
      .catch((err: unknown) => this.logger.warn({ err, reason: event.reason }, 'could not record an event'));
  }
}
