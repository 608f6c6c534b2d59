/** A control plane for hub tests (`up()` in the test process) and client-node views of its API. */
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  CustomObjectsApi,
  KubeConfig,
  type KubernetesObject,
  KubernetesObjectApi,
  PatchStrategy,
} from '@kubernetes/client-node';
import type { HubTunables } from '../../controllers/hub/hub.js';
import type { AgentObject } from '../../controllers/hub/objects.js';
import { type BootstrapTokenOptions, createBootstrapToken } from '../../controllers/pki/bootstrap-tokens.js';
import type { ControlPlane } from '../../controllers/up.js';
import { startPlane, tempDir } from '../harness/plane.js';

export interface HubPlane {
  dir: string;
  plane: ControlPlane;
  readonly address: string;
  caPem: string;
  api: KubernetesObjectApi;
  token(options?: Partial<BootstrapTokenOptions>, now?: Date): Promise<string>;
  /** The agent's Host (libvirt) or Router (network); undefined when there is none. */
  object(name: string, role?: 'libvirt' | 'network'): Promise<AgentObject | undefined>;
  mergePatch(object: KubernetesObject): Promise<void>;
  /** Stops the control plane and starts it again: the same data dir and ports. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export async function startHubPlane(
  name: string,
  tunables: Partial<HubTunables> = {},
  logs?: string[],
): Promise<HubPlane> {
  const dir = tempDir(name);
  const start = (ports: { port?: number; agentPort?: number } = {}) =>
    startPlane(dir, {
      ...ports,
      hub: tunables,
      // With `logs`, every log line at info and above lands there.
      ...(logs
        ? {
            logLevel: 'info',
            logDestination: {
              write: (line: string) => {
                logs.push(line);
              },
            },
          }
        : {}),
    });
  const plane = await start();
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(plane.kubeconfigPath);
  const api = KubernetesObjectApi.makeApiClient(kubeConfig);
  const custom = kubeConfig.makeApiClient(CustomObjectsApi);
  const hubPlane: HubPlane = {
    dir,
    plane,
    get address() {
      return hubPlane.plane.agentAddress;
    },
    caPem: readFileSync(join(dir, 'pki', 'ca.crt'), 'utf8'),
    api,
    async token(options = {}, now = new Date()) {
      const created = await createBootstrapToken(api, { ttlSeconds: 3600, usages: 1, ...options }, now);
      return created.token;
    },
    async object(objectName, role = 'libvirt') {
      const plural = role === 'libvirt' ? 'hosts' : 'routers';
      try {
        return (await custom.getClusterCustomObject({
          group: 'loam.dev',
          version: 'v1alpha1',
          plural,
          name: objectName,
        })) as AgentObject;
      } catch {
        return undefined;
      }
    },
    async mergePatch(object) {
      await api.patch(object, undefined, undefined, undefined, undefined, PatchStrategy.MergePatch);
    },
    async restart() {
      const port = Number(new URL(hubPlane.plane.apiServer.url).port);
      const agentPort = Number(/:(\d+)$/.exec(hubPlane.address)?.[1]);
      await hubPlane.plane.stop();
      hubPlane.plane = await start({ port, agentPort });
    },
    async stop() {
      await hubPlane.plane.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return hubPlane;
}
