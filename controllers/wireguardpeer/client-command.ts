/**
 * What `loam wg-config` does: read a generated WireGuardPeer's wg-quick client config from its
 * Secret through the API, with the user's credentials, and render it as a QR code a phone's
 * WireGuard app can scan. Every failure is a LoamError with a one-line message that says what
 * to do or wait for.
 */
import { ApiException, CoreV1Api, CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import QRCode from 'qrcode';
import { type ErrorCode, LoamError } from '../../crds/errors.js';
import { getCondition } from '../../crds/meta.js';
import { group, version, type WireGuardPeer, wireguardPeerKind } from '../../crds/v1alpha1/index.js';
import { configSecretKey, configSecretName } from './reconcile.js';

/** The `message` of the Status an API error carries, else the bare HTTP code. */
function apiMessage(err: ApiException<unknown>): string {
  let body = err.body;
  if (typeof body === 'string') {
    try {
      body = JSON.parse(body);
    } catch {
      // Not JSON: use it as it is.
    }
  }
  const message =
    typeof body === 'object' && body !== null && 'message' in body
      ? (body as { message: unknown }).message
      : body;
  return typeof message === 'string' && message !== '' ? `HTTP ${err.code}: ${message}` : `HTTP ${err.code}`;
}

/**
 * Reads one object; a 404 is undefined, a 403 says which namespace the credentials may not read,
 * and any other API error becomes one line (ApiException's own message spans several).
 */
async function read<T>(resource: string, namespace: string, get: () => Promise<T>): Promise<T | undefined> {
  try {
    return await get();
  } catch (err) {
    if (!(err instanceof ApiException)) throw err;
    if (err.code === 404) return undefined;
    const [code, message]: [ErrorCode, string] =
      err.code === 403
        ? ['Forbidden', `forbidden: these credentials may not read ${resource} in namespace ${namespace}`]
        : err.code === 401
          ? [
              'Unauthorized',
              `unauthorized: the API server did not accept these credentials (${apiMessage(err)})`,
            ]
          : ['Internal', `reading ${resource} in namespace ${namespace}: ${apiMessage(err)}`];
    throw new LoamError(code, message, { cause: err });
  }
}

/** The wg-quick client config of the generated peer namespace/name, as its Secret holds it. */
export async function peerClientConfig(
  kubeConfig: KubeConfig,
  namespace: string,
  name: string,
): Promise<string> {
  const key = `wireguardpeer ${namespace}/${name}`;
  const custom = kubeConfig.makeApiClient(CustomObjectsApi);
  const peer = await read(
    wireguardPeerKind.plural,
    namespace,
    () =>
      custom.getNamespacedCustomObject({
        group,
        version,
        namespace,
        plural: wireguardPeerKind.plural,
        name,
      }) as Promise<WireGuardPeer>,
  );
  if (peer === undefined) throw new LoamError('NotFound', `${key} not found`);
  if (peer.spec.publicKey !== undefined) {
    throw new LoamError(
      'BadRequest',
      `${key} has its own public key (spec.publicKey): its private key never reached Loam; write the config yourself`,
    );
  }
  const secretName = peer.status?.configSecretName ?? configSecretName(peer);
  const core = kubeConfig.makeApiClient(CoreV1Api);
  const secret = await read('secrets', namespace, () =>
    core.readNamespacedSecret({ namespace, name: secretName }),
  );
  const data = secret?.data?.[configSecretKey];
  if (data === undefined) {
    const ready = getCondition(peer.status?.conditions, 'Ready');
    const why = ready
      ? `${ready.reason}: ${ready.message}`
      : 'the WireGuardPeer controller has not reconciled it';
    throw new LoamError('Unavailable', `${key} has no client config yet (${why})`);
  }
  return Buffer.from(data, 'base64').toString('utf8');
}

/** `text` as a QR code drawn with half-block characters and ANSI colours, for a terminal. */
export function renderQr(text: string): Promise<string> {
  return QRCode.toString(text, { type: 'terminal', small: true, errorCorrectionLevel: 'M' });
}
