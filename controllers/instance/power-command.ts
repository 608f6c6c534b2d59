/**
 * What `loam start|stop|reboot|reset NAMESPACE/NAME` does: a PUT to the Instance's action
 * subresource with the user's credentials (the kubeconfig's, as kubectl uses them). The API
 * server answers once the agent did it (or the run strategy changed); its Status message is
 * what the command prints. Every failure is a LoamError with a one-line message.
 */
import { request } from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { LoamError } from '../../crds/errors.js';
import type { ActionSubresource } from '../../crds/kind.js';
import { instanceSubresourceUrl, refusal } from './subresource-request.js';

/** The API server waits up to 2 min for the agent (a stop's shutdown timeout and then some). */
const requestTimeoutMs = 150_000;
/** A Status is small; anything longer (in characters) is cut. */
const maxBodyChars = 64 * 1024;

/** Asks the API server to `action` the Instance namespace/name; resolves with its message. */
export async function powerAction(
  kubeConfig: KubeConfig,
  namespace: string,
  name: string,
  action: ActionSubresource,
): Promise<string> {
  const instance = `${namespace}/${name}`;
  const server = kubeConfig.getCurrentCluster()?.server;
  if (server === undefined) throw new LoamError('BadRequest', 'the kubeconfig names no cluster');
  const options: Parameters<typeof request>[1] = {
    method: 'PUT',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    timeout: requestTimeoutMs,
  };
  await kubeConfig.applyToHTTPSOptions(options);
  const { code, body } = await new Promise<{ code: number; body: string }>((resolve, reject) => {
    const req = request(instanceSubresourceUrl(server, namespace, name, action), options, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        if (text.length < maxBodyChars) text += chunk;
      });
      res.on('end', () => resolve({ code: res.statusCode ?? 0, body: text }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${requestTimeoutMs / 1000} s`)));
    req.on('error', (err) =>
      reject(new LoamError('Unavailable', `cannot reach the API server at ${server}: ${err.message}`)),
    );
    req.end('{}');
  });
  if (code !== 200) throw refusal(code, body, instance, action);
  try {
    return (JSON.parse(body) as { message: string }).message;
  } catch {
    return `${instance}: ${action} done`;
  }
}
