/** Raw HTTPS requests to an API server with the credentials of a kubeconfig, for what clients hide. */
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import YAML from 'yaml';

export interface ApiResponse {
  code: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  /** The body parsed as JSON, when it is JSON. */
  json: Record<string, unknown> | undefined;
}

interface KubeconfigFile {
  clusters: { cluster: { server: string; 'certificate-authority-data': string } }[];
  users: { user: { 'client-certificate-data'?: string; 'client-key-data'?: string; token?: string } }[];
}

export function apiClient(kubeconfigPath: string) {
  const config = YAML.parse(readFileSync(kubeconfigPath, 'utf8')) as KubeconfigFile;
  const cluster = config.clusters[0]?.cluster;
  const user = config.users[0]?.user;
  if (!cluster || !user) throw new Error(`${kubeconfigPath}: no cluster or user`);
  const decode = (b64: string | undefined) => (b64 ? Buffer.from(b64, 'base64').toString() : undefined);
  const ca = decode(cluster['certificate-authority-data']);
  const cert = decode(user['client-certificate-data']);
  const key = decode(user['client-key-data']);
  return (
    method: string,
    path: string,
    body?: string | Buffer,
    headers: Record<string, string> = {},
  ): Promise<ApiResponse> =>
    new Promise((resolve, reject) => {
      const req = request(
        `${cluster.server}${path}`,
        {
          method,
          ca,
          ...(cert && key ? { cert, key } : {}),
          headers: {
            // Node sends a DELETE body unframed unless told its length.
            ...(body !== undefined
              ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) }
              : {}),
            ...(user.token ? { authorization: `Bearer ${user.token}` } : {}),
            ...headers,
          },
          timeout: 10_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString();
            let json: Record<string, unknown> | undefined;
            try {
              json = JSON.parse(text) as Record<string, unknown>;
            } catch {
              json = undefined;
            }
            resolve({ code: res.statusCode ?? 0, headers: res.headers, text, json });
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)));
      req.on('error', reject);
      req.end(body);
    });
}
