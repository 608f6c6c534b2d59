/**
 * Enrollment on first start, in kubeadm's discovery-token-ca-cert-hash model. The agent knows
 * only a hash of the control plane CA's public key (the pin), so it first opens a bare TLS
 * connection, takes the CA out of the chain the hub presents, and goes on only if that CA's key
 * matches the pin. The Enroll call then runs over a channel that trusts exactly that CA and
 * verifies the hub in full (signature, validity, name), so the token is sent to nobody else.
 * The key pair is made here and only its public half, inside a CSR, leaves the machine.
 */
import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { connect, type PeerCertificate } from 'node:tls';
import { credentials, Metadata, type ServiceError, status } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { AgentRole } from '../../controllers/pki/certificates.js';
import {
  caPin,
  createCertificateSigningRequest,
  generateKeyPair,
} from '../../controllers/pki/certificates.js';
import { isLoamError, LoamError } from '../../crds/errors.js';
import { EnrollmentServiceClient, Role } from '../../proto/gen/loam/agent/v1/agent.js';
import { backoffDelay, pause } from './backoff.js';
import { type AgentConfig, splitHostPort } from './config.js';
import { channelOptions, unary } from './grpc.js';
import { bundleMatchesPin, certifiesKey, type Identity, pemCertificates } from './identity.js';

const protoRoles: Record<AgentRole, Role> = { libvirt: Role.ROLE_LIBVIRT, network: Role.ROLE_NETWORK };

const callTimeoutMs = 15_000;

// The certificates the peer presented, leaf first. Node links each to its issuer within the sent
// chain; a self-signed root links to itself.
function presentedChain(leaf: PeerCertificate): X509Certificate[] {
  const chain: X509Certificate[] = [];
  const seen = new Set<string>();
  for (let cert: PeerCertificate | undefined = leaf; cert?.raw && !seen.has(cert.fingerprint256); ) {
    seen.add(cert.fingerprint256);
    chain.push(new X509Certificate(cert.raw));
    cert = (cert as { issuerCertificate?: PeerCertificate }).issuerCertificate;
  }
  return chain;
}

/**
 * The CA (PEM) that `pin` names, from the chain the hub at `server` presents. Refuses (a
 * Forbidden LoamError) when no CA in it matches; nothing but a TLS handshake is sent.
 */
export function fetchPinnedCa(server: string, pin: string, timeoutMs = callTimeoutMs): Promise<string> {
  const { host, port } = splitHostPort(server) ?? { host: server, port: 0 };
  return new Promise((resolve, reject) => {
    const socket = connect({
      host,
      port,
      ...(isIP(host) ? {} : { servername: host }),
      // Not trusted yet: the pin decides below, and this socket carries nothing but the handshake.
      rejectUnauthorized: false,
      ALPNProtocols: ['h2'],
    });
    socket.setTimeout(timeoutMs, () =>
      socket.destroy(new Error(`no TLS handshake with ${server} in ${timeoutMs} ms`)),
    );
    socket.once('error', reject);
    socket.once('secureConnect', () => {
      const chain = presentedChain(socket.getPeerCertificate(true));
      socket.destroy();
      const cas = chain.filter((cert) => cert.ca);
      const match = cas.find((cert) => caPin(cert.toString()) === pin);
      if (match) {
        resolve(match.toString());
        return;
      }
      const presented =
        cas.length === 0
          ? 'it presented no CA certificate in its chain'
          : `it presented ${cas.map((cert) => `${cert.subject.replace(/\n/g, ',')} (${caPin(cert.toString())})`).join(', ')}`;
      reject(
        new LoamError(
          'Forbidden',
          `refusing ${server}: its CA does not match --ca-pin ${pin}; ${presented}. Nothing was sent: check the pin that loam token create printed`,
        ),
      );
    });
  });
}

function isRetryable(err: unknown): boolean {
  if (isLoamError(err)) return false;
  const code = (err as Partial<ServiceError>).code;
  // A gRPC failure to reach the hub may pass; any other answer from it will not. Socket errors
  // (no gRPC code) are the hub not being there yet.
  return typeof code !== 'number' || code === status.UNAVAILABLE || code === status.DEADLINE_EXCEEDED;
}

/** Enrolls once: pin check, then Enroll over a channel that trusts only the pinned CA. */
export async function enrollOnce(config: {
  server: string;
  token: string;
  caPin: string;
  name: string;
  role: AgentRole;
  keys: { publicKeyPem: string; privateKeyPem: string };
}): Promise<Identity> {
  const pinnedCa = await fetchPinnedCa(config.server, config.caPin);
  const client = new EnrollmentServiceClient(
    config.server,
    credentials.createSsl(Buffer.from(pinnedCa)),
    channelOptions,
  );
  try {
    const request = {
      token: config.token,
      name: config.name,
      role: protoRoles[config.role],
      csrPem: createCertificateSigningRequest(config.keys, config.name),
    };
    const response = await unary<{ certificatePem: string; caBundlePem: string }>(
      (options, done) => client.enroll(request, new Metadata(), options, done),
      callTimeoutMs,
    );
    if (!certifiesKey(response.certificatePem, config.keys.publicKeyPem)) {
      throw new LoamError('Internal', `${config.server} answered Enroll with a certificate for another key`);
    }
    // Keep trusting the pinned CA even if the bundle leaves it out, so a restart with the same
    // --ca-pin recognises this data dir.
    const bundle = pemCertificates(response.caBundlePem).join('');
    const caPem = bundleMatchesPin(bundle, config.caPin) ? bundle : `${pinnedCa}${bundle}`;
    return {
      name: config.name,
      role: config.role,
      keyPem: config.keys.privateKeyPem,
      certPem: response.certificatePem,
      caPem,
    };
  } finally {
    client.close();
  }
}

/**
 * Enrolls, retrying while the hub cannot be reached (an agent may start before its control
 * plane); undefined if `signal` aborts first. A wrong pin or a refused token fails at once.
 */
export async function enroll(
  config: AgentConfig,
  signal: AbortSignal,
  logger: Logger,
): Promise<Identity | undefined> {
  const { token, caPin: pin } = config;
  if (token === undefined || pin === undefined) {
    throw new LoamError(
      'Invalid',
      `${token === undefined ? '--token' : '--ca-pin'} is required to enroll: there is no identity in ${config.dataDir} yet`,
    );
  }
  const keys = generateKeyPair();
  for (let attempt = 0; ; attempt++) {
    try {
      const identity = await enrollOnce({ ...config, token, caPin: pin, keys });
      logger.info({ server: config.server }, 'enrolled');
      return identity;
    } catch (err) {
      if (!isRetryable(err)) {
        if (isLoamError(err)) throw err;
        const { code, details } = err as ServiceError;
        throw new LoamError('Forbidden', `${config.server} refused enrollment: ${status[code]}: ${details}`);
      }
      const delay = backoffDelay(attempt, config.backoff);
      logger.warn(
        { server: config.server, err: (err as Error).message, retryInMs: delay },
        'cannot enroll yet',
      );
      if (!(await pause(delay, signal))) return undefined;
    }
  }
}
