import assert from 'node:assert/strict';
import {
  generateKeyPair,
  publicKeyOf,
  renderClientConfig,
} from '../../../controllers/wireguardpeer/client-config.js';
import { wireguardKey } from '../../../crds/formats.js';

/**
 * Private and public keys that agree with wireguard-tools: RFC 7748 §6.1's X25519 vectors
 * (Alice, Bob) in WireGuard's base64, each checked with `echo KEY | wg pubkey`, and a pair `wg
 * genkey` made.
 */
const vectors: [string, string, string][] = [
  [
    'RFC 7748 Alice',
    'dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=',
    'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=',
  ],
  [
    'RFC 7748 Bob',
    'XasIfmJKikt54X+Lg4AO5m87sSkmGLb9HC+LJ/+I4Os=',
    '3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=',
  ],
  [
    'wg genkey',
    'kOYkMXIUD84BsIaLqntab53wMVFh7d/AhLBbRHK6EEQ=',
    '9d3txn5893nmXrDiFNSHE9V4xCF0e2RNb8qzWYta8AU=',
  ],
];

describe('WireGuard keys', () => {
  it('derives the public key wg pubkey derives', () => {
    for (const [name, privateKey, publicKey] of vectors)
      assert.equal(publicKeyOf(privateKey), publicKey, name);
  });

  it('generates key pairs in WireGuard format whose halves belong together', () => {
    const pairs = [generateKeyPair(), generateKeyPair()];
    for (const { privateKey, publicKey } of pairs) {
      assert.ok(wireguardKey().safeParse(privateKey).success, privateKey);
      assert.ok(wireguardKey().safeParse(publicKey).success, publicKey);
      assert.equal(publicKeyOf(privateKey), publicKey);
    }
    assert.notEqual(pairs[0]?.privateKey, pairs[1]?.privateKey);
  });

  it('refuses a private key that is not base64 of 32 bytes', () => {
    for (const bad of ['', 'dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25', `${'A'.repeat(43)}B`, 'not a key']) {
      assert.throws(() => publicKeyOf(bad), /base64 of exactly 32 bytes/, bad);
    }
  });
});

describe('renderClientConfig', () => {
  const config = {
    privateKey: 'dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=',
    address: '10.99.0.2',
    dns: ['10.20.0.1'],
    serverPublicKey: '3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=',
    endpoint: 'vpn.example.org:51820',
    allowedIPs: ['10.20.0.0/24', '10.99.0.0/24'],
    persistentKeepalive: 25,
  };

  it('renders wg-quick text', () => {
    assert.equal(
      renderClientConfig(config),
      `[Interface]
PrivateKey = dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=
Address = 10.99.0.2/32
DNS = 10.20.0.1

[Peer]
PublicKey = 3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=
Endpoint = vpn.example.org:51820
AllowedIPs = 10.20.0.0/24, 10.99.0.0/24
PersistentKeepalive = 25
`,
    );
  });

  it('lists several DNS servers, and leaves out DNS and keepalives when there are none', () => {
    assert.match(
      renderClientConfig({ ...config, dns: ['192.0.2.53', '192.0.2.54'] }),
      /^DNS = 192\.0\.2\.53, 192\.0\.2\.54$/m,
    );
    const bare = renderClientConfig({ ...config, dns: [], persistentKeepalive: 0 });
    assert.doesNotMatch(bare, /DNS|PersistentKeepalive/);
    assert.ok(bare.endsWith('AllowedIPs = 10.20.0.0/24, 10.99.0.0/24\n'));
  });
});
