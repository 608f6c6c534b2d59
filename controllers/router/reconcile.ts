/**
 * The Router controller's decision, pure: how many Networks the router serves, for its status.
 * Everything else in a Router's status (Ready, facts, heartbeat) is the hub's, written from what
 * its agent says; this writes only `status.networks`, by a merge patch, so neither overwrites
 * the other.
 */
import type { Network, Router } from '../../crds/v1alpha1/index.js';

/** The status fields to patch; undefined when status already says so. */
export function reconcileRouter(
  router: Router,
  networks: readonly Network[],
): { networks: number } | undefined {
  const served = networks.filter((network) => network.status?.router === router.metadata.name).length;
  return router.status?.networks === served ? undefined : { networks: served };
}
