/**
 * The control plane's own Kubernetes API client configuration. client-node makes a new
 * https.Agent for every request, so every call from the controllers and the hub paid a TLS
 * handshake and a new secure context (most of the control plane's CPU in the 1,000-Instance
 * benchmark); this keeps one keep-alive agent per configuration instead.
 */
import { Agent } from 'node:https';
import { KubeConfig, type RequestContext } from '@kubernetes/client-node';

export class PooledKubeConfig extends KubeConfig {
  private agent: Agent | undefined;

  override async applySecurityAuthentication(context: RequestContext): Promise<void> {
    await super.applySecurityAuthentication(context);
    const made = context.getAgent();
    if (!(made instanceof Agent)) return;
    // The credentials come from the loaded kubeconfig and do not change, so the first agent's
    // options hold for every request.
    this.agent ??= new Agent({ ...made.options, keepAlive: true });
    context.setAgent(this.agent);
  }
}

/** A pooled client configuration from a kubeconfig file. */
export function loadKubeConfig(path: string): KubeConfig {
  const config = new PooledKubeConfig();
  config.loadFromFile(path);
  return config;
}
