/**
 * What the CLI's requests to an Instance's subresources (`loam console`, `loam reboot` …) share:
 * the URL, and the API server's refusals as one-line errors.
 */
import { type ErrorCode, errorCodes, LoamError } from '../../crds/errors.js';
import { instanceKind } from '../../crds/v1alpha1/instance.js';

/** The URL of an Instance's `subresource` on the API server at `server` (https://host:port[/prefix]). */
export function instanceSubresourceUrl(
  server: string,
  namespace: string,
  name: string,
  subresource: string,
): string {
  const { group, version, plural } = instanceKind;
  const path = `/apis/${group}/${version}/namespaces/${encodeURIComponent(namespace)}/${plural}/${encodeURIComponent(name)}/${subresource}`;
  return `${server.replace(/\/+$/, '')}${path}`;
}

/**
 * The one-line error for an API server's refusal (`body` is its Status, normally) to `what`
 * (e.g. "open the console of") the Instance `instance` (NAMESPACE/NAME).
 */
export function refusal(code: number, body: string, instance: string, what: string): LoamError {
  let status: { message?: unknown; reason?: unknown; details?: { name?: unknown } } = {};
  try {
    status = JSON.parse(body) as typeof status;
  } catch {
    // Not a Status (a proxy's page): the code says enough.
  }
  const message = typeof status.message === 'string' ? status.message : body.trim().split('\n')[0];
  // By the Status reason first: 409 is AlreadyExists or Conflict.
  const codes = (Object.keys(errorCodes) as ErrorCode[]).filter((c) => errorCodes[c].http === code);
  const errorCode = codes.find((c) => errorCodes[c].reason === status.reason) ?? codes[0];
  const [loamCode, text]: [ErrorCode, string] =
    code === 404 && status.details?.name !== undefined
      ? ['NotFound', `instance ${instance} not found`]
      : code === 403
        ? ['Forbidden', `forbidden: these credentials may not ${what} instance ${instance}`]
        : code === 401
          ? ['Unauthorized', `unauthorized: the API server did not accept these credentials (${message})`]
          : [errorCode ?? 'Internal', `cannot ${what} instance ${instance}: ${message} (HTTP ${code})`];
  return new LoamError(loamCode, text);
}
