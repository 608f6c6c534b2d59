import assert from 'node:assert/strict';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { connect, createServer, type TLSSocket } from 'node:tls';
import {
  caPin,
  createCertificateAuthority,
  createCertificateSigningRequest,
  generateKeyPair,
  issueCertificate,
  verifiedRequestKey,
} from '../../controllers/pki/certificates.js';

describe('pki', () => {
  const ca = createCertificateAuthority();

  it('issues server and client certificates that complete a mutual TLS handshake', async () => {
    const serverKeys = generateKeyPair();
    const serverCert = issueCertificate(ca, {
      commonName: 'loam-apiserver',
      dnsNames: ['localhost'],
      ipAddresses: ['127.0.0.1', '::1'],
      usage: 'server',
      validityDays: 1,
      publicKeyPem: serverKeys.publicKeyPem,
    });
    const clientKeys = generateKeyPair();
    const clientCert = issueCertificate(ca, {
      commonName: 'alice',
      organizations: ['tenants', 'loam:admins'],
      usage: 'client',
      validityDays: 1,
      publicKeyPem: clientKeys.publicKeyPem,
    });
    const server = createServer(
      {
        cert: serverCert,
        key: serverKeys.privateKeyPem,
        ca: ca.certPem,
        requestCert: true,
        rejectUnauthorized: true,
      },
      (socket: TLSSocket) => {
        const peer = socket.getPeerCertificate();
        socket.end(`${peer.subject.CN}|${[peer.subject.O].flat().join(',')}`);
      },
    );
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as { port: number };
    try {
      const socket = connect({
        host: '127.0.0.1',
        port,
        ca: ca.certPem,
        cert: clientCert,
        key: clientKeys.privateKeyPem,
      });
      let reply = '';
      socket.on('data', (chunk: Buffer) => {
        reply += chunk.toString();
      });
      await once(socket, 'end');
      assert.equal(reply, 'alice|tenants,loam:admins');
    } finally {
      server.close();
    }
  });

  it('marks the CA as a CA and pins it by the sha256 of its public key', () => {
    const cert = new X509Certificate(ca.certPem);
    assert.equal(cert.ca, true);
    assert.match(caPin(ca.certPem), /^sha256:[0-9a-f]{64}$/);
    assert.notEqual(caPin(ca.certPem), caPin(createCertificateAuthority().certPem));
  });

  it('certifies the key of a signing request, with the subject and lifetime the issuer chooses', () => {
    const keys = generateKeyPair();
    const csr = createCertificateSigningRequest(keys, 'whatever-the-agent-says');
    const publicKeyPem = verifiedRequestKey(csr);
    assert.ok(publicKeyPem);
    const certPem = issueCertificate(ca, {
      commonName: 'hv1',
      organizations: ['libvirt'],
      organizationalUnits: ['3f0c1a2e-uid'],
      usage: 'client',
      validityDays: 7,
      validitySeconds: 10,
      publicKeyPem,
    });
    const cert = new X509Certificate(certPem);
    assert.equal(cert.subject, 'CN=hv1\nO=libvirt\nOU=3f0c1a2e-uid');
    assert.ok(cert.checkPrivateKey(createPrivateKey(keys.privateKeyPem)));
    const lifetime = Date.parse(cert.validTo) - Date.parse(cert.validFrom);
    assert.ok(lifetime >= 10_000 && lifetime <= 13_000, `lifetime ${lifetime} ms`);
    // A request whose signature does not match its key, and garbage, are refused.
    // Flip one byte of the signed request info: the signature no longer matches.
    const der = Buffer.from(csr.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    der[40] = (der[40] as number) ^ 0xff;
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    assert.equal(verifiedRequestKey(tampered), undefined);
    assert.equal(verifiedRequestKey('not a csr'), undefined);
  });
});
