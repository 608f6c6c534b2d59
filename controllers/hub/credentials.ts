/**
 * TLS for the hub's one port, where a client certificate is optional at the handshake: Enroll is
 * called by agents that have none yet, everything else requires one.
 *
 * grpc-js's ServerCredentials.createSsl(root, pairs, checkClientCertificate) either never asks
 * for a client certificate or rejects handshakes without one. Its certificate-provider
 * credentials (grpc-js 1.14, `experimental.createCertificateProviderServerCredentials` with
 * requireClientCertificate false) ask for one without requiring it: Node's TLS then verifies
 * what is offered against the CA and grpc-js hands a verified certificate to the handler through
 * `call.getAuthContext().sslPeerCertificate` (absent when none was offered or it failed
 * verification). The hub checks that certificate again itself on every AgentService call
 * (controllers/hub/identity.ts) and refuses with UNAUTHENTICATED when there is none.
 */
import { experimental, type ServerCredentials } from '@grpc/grpc-js';

export function optionalClientCertificateCredentials(tls: {
  caPem: string;
  certPem: string;
  keyPem: string;
}): ServerCredentials {
  // Certificates that never change. grpc-js reads a provider's certificates through listeners it
  // registers just before its own watcher, so they are delivered on the next microtask, as a
  // provider that loads them asynchronously would.
  const provider: experimental.CertificateProvider = {
    addCaCertificateListener: (listener) =>
      queueMicrotask(() => listener({ caCertificate: Buffer.from(tls.caPem) })),
    removeCaCertificateListener: () => {},
    addIdentityCertificateListener: (listener) =>
      queueMicrotask(() =>
        // The chain includes the CA: an enrolling agent pins it (sha256 of its public key) before
        // it trusts anything, so it must be presented rather than left for OpenSSL to add.
        listener({
          certificate: Buffer.from(`${tls.certPem.trim()}\n${tls.caPem}`),
          privateKey: Buffer.from(tls.keyPem),
        }),
      ),
    removeIdentityCertificateListener: () => {},
  };
  // One provider for both roles, the CA and the hub's own identity.
  return experimental.createCertificateProviderServerCredentials(provider, provider, false);
}
