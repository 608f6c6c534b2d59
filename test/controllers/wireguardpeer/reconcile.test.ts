import assert from 'node:assert/strict';
import { publicKeyOf } from '../../../controllers/wireguardpeer/client-config.js';
import {
  configSecretKey,
  configSecretName,
  type PeerReconcileInput,
  type PeerReconcileResult,
  peerLabel,
  privateKeySecretKey,
  reconcileWireGuardPeer,
} from '../../../controllers/wireguardpeer/reconcile.js';
import { type Secret, secretKind } from '../../../crds/builtin.js';
import { formatTimestamp, getCondition } from '../../../crds/meta.js';
import {
  apiVersion,
  type Network,
  networkKind,
  type WireGuardPeer,
  wireguardPeerKind,
} from '../../../crds/v1alpha1/index.js';
import { validateObject } from '../../../crds/validate.js';

const now = new Date(Date.UTC(2025, 4, 1, 12, 0));
const later = new Date(Date.UTC(2025, 4, 1, 13, 0));

// Key pairs checked with `wg pubkey` (see client-config.test.ts).
const serverKey = '3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=';
const fresh = {
  privateKey: 'kOYkMXIUD84BsIaLqntab53wMVFh7d/AhLBbRHK6EEQ=',
  publicKey: '9d3txn5893nmXrDiFNSHE9V4xCF0e2RNb8qzWYta8AU=',
};
const kept = {
  privateKey: 'dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=',
  publicKey: 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=',
};
const ownKey = 'rNDjcuUwVjCTtyzRE2pMeWLuYl38eBvjERT384VGv18=';

/** Frozen as informer caches freeze objects, so a reconcile that mutated its input would throw. */
function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

const reported = { router: 'edge-1', wireguard: { publicKey: serverKey, endpoint: 'vpn.example.org:51820' } };

/** A Network with a WireGuard server, placed on edge-1 and reporting its server's key and endpoint. */
function network(
  spec: Record<string, unknown> = {},
  options: { name?: string; namespace?: string; status?: Record<string, unknown> } = {},
): Network {
  return deepFreeze(
    validateObject(networkKind, {
      apiVersion,
      kind: 'Network',
      metadata: { name: options.name ?? 'lab', namespace: options.namespace ?? 'default' },
      spec: { cidr: '10.20.0.0/24', wireguard: { cidr: '10.99.0.0/24' }, ...spec },
      status: options.status ?? reported,
    }),
  );
}

function peer(
  name: string,
  spec: Record<string, unknown> = {},
  options: { created?: number; generation?: number; status?: Record<string, unknown> } = {},
): WireGuardPeer {
  return deepFreeze(
    validateObject(wireguardPeerKind, {
      apiVersion,
      kind: 'WireGuardPeer',
      metadata: {
        name,
        namespace: 'default',
        uid: `uid-${name}`,
        generation: options.generation ?? 1,
        creationTimestamp: formatTimestamp(new Date(Date.UTC(2025, 0, 1, 0, options.created ?? 0))),
      },
      spec: { network: 'lab', ...spec },
      ...(options.status ? { status: options.status } : {}),
    }),
  );
}

function input(subject: WireGuardPeer, overrides: Partial<PeerReconcileInput> = {}): PeerReconcileInput {
  return { peer: subject, networks: [network()], peers: [subject], freshKeyPair: fresh, now, ...overrides };
}

/** The peer as stored after the shell wrote the result's status; validated like the API server would. */
function stored(subject: WireGuardPeer, result: PeerReconcileResult): WireGuardPeer {
  const next = { ...subject, status: result.status ?? subject.status };
  return deepFreeze(validateObject(wireguardPeerKind, JSON.parse(JSON.stringify(next))));
}

/** The Secret after the shell executed the result. */
function storedSecret(previous: Secret | undefined, result: PeerReconcileResult): Secret | undefined {
  if (result.deleteSecret) return undefined;
  if (!result.secret) return previous;
  return deepFreeze(validateObject(secretKind, JSON.parse(JSON.stringify(result.secret))));
}

/** Reconciles and stores until nothing changes; returns the converged peer and Secret. */
function settle(
  subject: WireGuardPeer,
  world: Partial<PeerReconcileInput> = {},
): { peer: WireGuardPeer; secret?: Secret } {
  let current = subject;
  let secret = world.secret;
  for (let round = 0; round < 4; round++) {
    const result = reconcileWireGuardPeer(input(current, { ...world, secret }));
    if (!result.status && !result.secret && !result.deleteSecret && result.events.length === 0) {
      return { peer: current, ...(secret ? { secret } : {}) };
    }
    current = stored(current, result);
    secret = storedSecret(secret, result);
  }
  assert.fail('no fixed point after 4 reconciles');
}

function decoded(secret: Secret | undefined, key: string): string | undefined {
  const value = secret?.data?.[key];
  return value === undefined ? undefined : Buffer.from(value, 'base64').toString();
}

function ready(result: PeerReconcileResult) {
  return getCondition(result.status?.conditions, 'Ready');
}

/** The status and Events of a peer that cannot be served, in one line each, for table tests. */
function verdict(result: PeerReconcileResult) {
  const condition = ready(result);
  return {
    phase: result.status?.phase,
    address: result.status?.address,
    ready: `${condition?.status} ${condition?.reason}: ${condition?.message}`,
    events: result.events.filter((event) => event.type === 'Warning').map((event) => event.reason),
  };
}

describe('reconcileWireGuardPeer', () => {
  describe('a peer with its own public key', () => {
    it('gets the first free tunnel address after the server, its key in status, and no Secret', () => {
      const result = reconcileWireGuardPeer(input(peer('laptop', { publicKey: ownKey })));
      assert.deepEqual(result, {
        status: {
          phase: 'Pending',
          address: '10.99.0.2',
          publicKey: ownKey,
          conditions: [
            {
              type: 'Ready',
              status: 'False',
              reason: 'Configuring',
              message:
                'waiting for the router to configure the peer on the WireGuard server of Network default/lab',
              observedGeneration: 1,
              lastTransitionTime: '2025-05-01T12:00:00Z',
            },
          ],
          observedGeneration: 1,
        },
        events: [],
      });
    });

    it('turns Ready when the router reports it, once, and then does nothing', () => {
      const pending = stored(
        peer('laptop', { publicKey: ownKey }),
        reconcileWireGuardPeer(input(peer('laptop', { publicKey: ownKey }))),
      );
      const result = reconcileWireGuardPeer(input(pending, { routerPeers: new Set(['laptop']) }));
      assert.equal(result.status?.phase, 'Ready');
      assert.deepEqual(
        { ...ready(result), lastTransitionTime: undefined },
        {
          type: 'Ready',
          status: 'True',
          reason: 'Configured',
          message: 'configured on the WireGuard server of Network default/lab',
          observedGeneration: 1,
          lastTransitionTime: undefined,
        },
      );
      assert.deepEqual(result.events, [
        {
          type: 'Normal',
          reason: 'Configured',
          message: 'configured on the WireGuard server of Network default/lab',
        },
      ]);
      const configured = stored(pending, result);
      assert.deepEqual(
        reconcileWireGuardPeer(input(configured, { routerPeers: new Set(['laptop']), now: later })),
        { events: [] },
      );
    });

    it('keeps Ready while the router report is unknown, and says so when the router lost the peer', () => {
      const { peer: configured } = settle(peer('laptop', { publicKey: ownKey }), {
        routerPeers: new Set(['laptop']),
      });
      assert.equal(configured.status?.phase, 'Ready');
      assert.deepEqual(reconcileWireGuardPeer(input(configured)), { events: [] });

      const lost = reconcileWireGuardPeer(input(configured, { routerPeers: new Set(['phone']) }));
      assert.equal(lost.status?.phase, 'Pending');
      assert.equal(ready(lost)?.reason, 'Configuring');
      assert.deepEqual(lost.events, []);
    });

    it('deletes the Secret of a key pair generated before spec.publicKey was set', () => {
      const { peer: generated, secret } = settle(peer('laptop'));
      assert.ok(secret);
      const own = deepFreeze(
        validateObject(wireguardPeerKind, {
          ...JSON.parse(JSON.stringify(generated)),
          metadata: { ...generated.metadata, generation: 2 },
          spec: { ...generated.spec, publicKey: ownKey },
        }),
      );
      const result = reconcileWireGuardPeer(input(own, { secret }));
      assert.equal(result.deleteSecret, true);
      assert.equal(result.secret, undefined);
      assert.equal(result.status?.publicKey, ownKey);
      assert.equal(result.status?.configSecretName, undefined);
      assert.equal(result.status?.address, '10.99.0.2');
      assert.deepEqual(
        result.events.map((event) => event.reason),
        ['ClientConfigDeleted'],
      );
    });

    it('leaves alone a Secret of that name it does not control', () => {
      const foreign = secretOf({ note: 'bm90IG91cnM=' });
      const result = reconcileWireGuardPeer(
        input(peer('laptop', { publicKey: ownKey }), { secret: foreign }),
      );
      assert.equal(result.deleteSecret, undefined);
      assert.equal(result.secret, undefined);
      assert.equal(ready(result)?.reason, 'Configuring');
    });
  });

  describe('a peer with a generated key pair', () => {
    const wantConfig = (privateKey: string, address = '10.99.0.2', endpoint = 'vpn.example.org:51820') =>
      [
        '[Interface]',
        `PrivateKey = ${privateKey}`,
        `Address = ${address}/32`,
        'DNS = 10.20.0.1',
        '',
        '[Peer]',
        `PublicKey = ${serverKey}`,
        `Endpoint = ${endpoint}`,
        'AllowedIPs = 10.20.0.0/24, 10.99.0.0/24',
        'PersistentKeepalive = 25',
        '',
      ].join('\n');

    it('writes the private key and client config to a Secret the peer controls, and only the public key to status', () => {
      const result = reconcileWireGuardPeer(input(peer('laptop')));
      assert.deepEqual(result.secret, {
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: {
          name: 'laptop-wireguard',
          namespace: 'default',
          labels: { [peerLabel]: 'laptop' },
          ownerReferences: [
            {
              apiVersion: 'loam.dev/v1alpha1',
              kind: 'WireGuardPeer',
              name: 'laptop',
              uid: 'uid-laptop',
              controller: true,
              blockOwnerDeletion: true,
            },
          ],
        },
        type: 'Opaque',
        data: {
          privatekey: Buffer.from(fresh.privateKey).toString('base64'),
          'wg0.conf': Buffer.from(wantConfig(fresh.privateKey)).toString('base64'),
        },
      });
      assert.equal(decoded(result.secret, configSecretKey), wantConfig(fresh.privateKey));
      assert.equal(decoded(result.secret, privateKeySecretKey), fresh.privateKey);
      assert.equal(configSecretName(peer('laptop')), 'laptop-wireguard');
      storedSecret(undefined, result);

      assert.equal(result.status?.publicKey, fresh.publicKey);
      assert.equal(result.status?.address, '10.99.0.2');
      assert.equal(result.status?.configSecretName, 'laptop-wireguard');
      assert.equal(result.status?.phase, 'Pending');
      assert.equal(ready(result)?.reason, 'Configuring');
      assert.deepEqual(result.events, [
        {
          type: 'Normal',
          reason: 'KeyPairGenerated',
          message: 'generated a key pair; the private key is in Secret laptop-wireguard (key privatekey)',
        },
        {
          type: 'Normal',
          reason: 'ClientConfigWritten',
          message: 'wrote the wg-quick client config to Secret laptop-wireguard (key wg0.conf)',
        },
      ]);
      const { secret: _, ...rest } = result;
      assert.doesNotMatch(JSON.stringify(rest), new RegExp(fresh.privateKey.replace(/[+/]/g, '\\$&')));
    });

    it('keeps the key of its Secret across reconciles, whatever key pair the shell offers', () => {
      const { peer: settled, secret } = settle(peer('laptop'));
      const again = reconcileWireGuardPeer(
        input(settled, { secret, freshKeyPair: kept, routerPeers: new Set(['laptop']) }),
      );
      assert.equal(again.secret, undefined);
      assert.equal(again.status?.publicKey, fresh.publicKey);
      assert.equal(again.status?.phase, 'Ready');
      assert.deepEqual(
        again.events.map((event) => event.reason),
        ['Configured'],
      );
    });

    it('derives status.publicKey from the private key the Secret holds', () => {
      const secret = secretOf(
        { [privateKeySecretKey]: Buffer.from(`${kept.privateKey}\n`).toString('base64') },
        'laptop',
      );
      const result = reconcileWireGuardPeer(input(peer('laptop'), { secret }));
      assert.equal(result.status?.publicKey, kept.publicKey);
      assert.equal(publicKeyOf(kept.privateKey), kept.publicKey);
      assert.equal(decoded(result.secret, privateKeySecretKey), kept.privateKey);
      assert.equal(decoded(result.secret, configSecretKey), wantConfig(kept.privateKey));
      assert.deepEqual(result.secret?.metadata.ownerReferences, secret.metadata.ownerReferences);
      assert.equal(result.secret?.metadata.resourceVersion, '7');
      assert.deepEqual(result.secret?.metadata.labels, { team: 'ops', [peerLabel]: 'laptop' });
      assert.deepEqual(
        result.events.map((event) => event.reason),
        ['ClientConfigWritten'],
      );
    });

    it('replaces a private key its Secret holds in a broken form with the offered pair', () => {
      const secret = secretOf({ [privateKeySecretKey]: Buffer.from('garbage').toString('base64') }, 'laptop');
      const result = reconcileWireGuardPeer(input(peer('laptop'), { secret }));
      assert.equal(result.status?.publicKey, fresh.publicKey);
      assert.equal(decoded(result.secret, privateKeySecretKey), fresh.privateKey);
      assert.equal(result.events[0]?.reason, 'KeyPairGenerated');
    });

    it('writes no config until the Network reports its server, then writes it with the same key', () => {
      const unreported = network({}, { status: { router: 'edge-1' } });
      const first = reconcileWireGuardPeer(input(peer('laptop'), { networks: [unreported] }));
      assert.deepEqual(Object.keys(first.secret?.data ?? {}), [privateKeySecretKey]);
      assert.equal(first.status?.publicKey, fresh.publicKey);
      assert.equal(first.status?.address, '10.99.0.2');
      assert.equal(first.status?.configSecretName, undefined);
      assert.equal(first.status?.phase, 'Pending');
      assert.deepEqual(
        { reason: ready(first)?.reason, message: ready(first)?.message },
        {
          reason: 'WaitingForServer',
          message:
            "waiting for Network default/lab to report its WireGuard server's public key and endpoint (status.wireguard) to write the client config",
        },
      );
      assert.deepEqual(
        first.events.map((event) => event.reason),
        ['KeyPairGenerated'],
      );

      const waiting = settle(peer('laptop'), { networks: [unreported] });
      const keyOnly = network({}, { status: { router: 'edge-1', wireguard: { publicKey: serverKey } } });
      assert.deepEqual(
        reconcileWireGuardPeer(input(waiting.peer, { networks: [keyOnly], secret: waiting.secret })),
        {
          events: [],
        },
      );
      const result = reconcileWireGuardPeer(input(waiting.peer, { secret: waiting.secret }));
      assert.equal(decoded(result.secret, configSecretKey), wantConfig(fresh.privateKey));
      assert.equal(result.status?.configSecretName, 'laptop-wireguard');
      assert.equal(ready(result)?.reason, 'Configuring');
      assert.deepEqual(
        result.events.map((event) => event.reason),
        ['ClientConfigWritten'],
      );
    });

    it('rewrites the config when the endpoint moves, and only then', () => {
      const { peer: settled, secret } = settle(peer('laptop'));
      const moved = network(
        {},
        { status: { ...reported, wireguard: { publicKey: serverKey, endpoint: '198.51.100.7:51820' } } },
      );
      const result = reconcileWireGuardPeer(input(settled, { networks: [moved], secret }));
      assert.equal(
        decoded(result.secret, configSecretKey),
        wantConfig(fresh.privateKey, '10.99.0.2', '198.51.100.7:51820'),
      );
      assert.equal(result.status, undefined);
      assert.deepEqual(result.events, [
        {
          type: 'Normal',
          reason: 'ClientConfigWritten',
          message:
            'updated the wg-quick client config in Secret laptop-wireguard (key wg0.conf); fetch it again',
        },
      ]);
      const after = storedSecret(secret, result);
      assert.deepEqual(reconcileWireGuardPeer(input(settled, { networks: [moved], secret: after })), {
        events: [],
      });
    });

    it("takes the Network's spec endpoint and DNS, and leaves out keepalives when they are off", () => {
      const custom = network({
        dns: ['192.0.2.53'],
        wireguard: { cidr: '10.99.0.0/24', endpoint: 'wg.example.net:4500' },
      });
      const result = reconcileWireGuardPeer(
        input(peer('laptop', { persistentKeepalive: 0 }), { networks: [custom] }),
      );
      const config = decoded(result.secret, configSecretKey) ?? '';
      assert.match(config, /^Endpoint = wg\.example\.net:4500$/m);
      assert.match(config, /^DNS = 192\.0\.2\.53$/m);
      assert.doesNotMatch(config, /PersistentKeepalive/);
    });

    it('touches neither a Secret of that name it does not control nor its key', () => {
      const cases: [string, Secret][] = [
        ['no owner', secretOf({ [privateKeySecretKey]: Buffer.from(kept.privateKey).toString('base64') })],
        ['a previous peer of the same name', secretOf({}, 'laptop', 'uid-of-a-deleted-laptop')],
      ];
      for (const [name, secret] of cases) {
        const result = reconcileWireGuardPeer(input(peer('laptop'), { secret }));
        assert.equal(result.secret, undefined, name);
        assert.equal(result.status?.phase, 'Failed', name);
        assert.equal(result.status?.publicKey, undefined, name);
        assert.equal(result.status?.configSecretName, undefined, name);
        assert.equal(result.status?.address, '10.99.0.2', name);
        assert.deepEqual(
          verdict(result).ready,
          'False SecretConflict: Secret laptop-wireguard exists and is not controlled by this WireGuardPeer; delete it, or set spec.publicKey',
          name,
        );
        assert.deepEqual(verdict(result).events, ['SecretConflict'], name);
      }
    });
  });

  describe('tunnel addresses', () => {
    it('gives two peers distinct addresses, the older the lower, whichever is reconciled first', () => {
      const older = peer('laptop', { publicKey: ownKey }, { created: 1 });
      const newer = peer('phone', {}, { created: 2 });
      const peers = [newer, older];
      assert.equal(reconcileWireGuardPeer(input(newer, { peers })).status?.address, '10.99.0.3');
      assert.equal(reconcileWireGuardPeer(input(older, { peers })).status?.address, '10.99.0.2');
    });

    it('keeps a recorded address, and skips addresses other peers hold', () => {
      const holder = peer('laptop', {}, { created: 1, status: { address: '10.99.0.2' } });
      const recorded = peer('phone', { publicKey: ownKey }, { created: 2, status: { address: '10.99.0.9' } });
      const newcomer = peer('tablet', { publicKey: ownKey }, { created: 0 });
      const peers = [holder, recorded, newcomer];
      assert.equal(reconcileWireGuardPeer(input(recorded, { peers })).status?.address, '10.99.0.9');
      assert.equal(reconcileWireGuardPeer(input(newcomer, { peers })).status?.address, '10.99.0.3');
    });

    it('honours a static spec.address', () => {
      const result = reconcileWireGuardPeer(input(peer('laptop', { address: '10.99.0.200' })));
      assert.equal(result.status?.address, '10.99.0.200');
      assert.match(decoded(result.secret, configSecretKey) ?? '', /^Address = 10\.99\.0\.200\/32$/m);
    });

    it('ignores peers of other Networks and namespaces', () => {
      const elsewhere = peer('nas', { network: 'backup', address: '10.99.0.2' });
      const otherTenant = deepFreeze(
        validateObject(wireguardPeerKind, {
          ...JSON.parse(JSON.stringify(peer('nas2', { address: '10.99.0.2' }))),
          metadata: { name: 'nas2', namespace: 'other', uid: 'uid-other' },
        }),
      );
      const subject = peer('laptop');
      const result = reconcileWireGuardPeer(input(subject, { peers: [elsewhere, otherTenant, subject] }));
      assert.equal(result.status?.address, '10.99.0.2');
    });
  });

  describe('peers that cannot be served', () => {
    const otherTenant = network(
      { cidr: '10.50.0.0/24', wireguard: { cidr: '10.98.0.0/24', port: 51821 } },
      { name: 'secret-lab', namespace: 'other' },
    );
    const otherRouter = network(
      { cidr: '10.60.0.0/24' },
      { name: 'far', namespace: 'other', status: { router: 'edge-2' } },
    );
    const small = network({ wireguard: { cidr: '10.99.0.0/30' } });
    const first = peer('laptop', { publicKey: ownKey }, { created: 1, status: { address: '10.99.0.2' } });
    const cases: {
      name: string;
      subject: WireGuardPeer;
      world?: Partial<PeerReconcileInput>;
      want: ReturnType<typeof verdict>;
    }[] = [
      {
        name: 'Network missing',
        subject: peer('laptop'),
        world: { networks: [] },
        want: {
          phase: 'Pending',
          address: undefined,
          ready: 'False NetworkNotFound: spec.network: Network default/lab does not exist',
          events: ['NetworkNotFound'],
        },
      },
      {
        name: 'a Network of that name only in another namespace',
        subject: peer('laptop'),
        world: { networks: [network({}, { namespace: 'other' })] },
        want: {
          phase: 'Pending',
          address: undefined,
          ready: 'False NetworkNotFound: spec.network: Network default/lab does not exist',
          events: ['NetworkNotFound'],
        },
      },
      {
        name: 'Network without WireGuard',
        subject: peer('laptop', { publicKey: ownKey }),
        world: { networks: [network({ wireguard: undefined })] },
        want: {
          phase: 'Pending',
          address: undefined,
          ready:
            'False NoWireGuardServer: spec.network: Network default/lab has no WireGuard server; enable its spec.wireguard',
          events: ['NoWireGuardServer'],
        },
      },
      {
        name: 'Network with WireGuard disabled',
        subject: peer('laptop'),
        world: { networks: [network({ wireguard: { cidr: '10.99.0.0/24', enabled: false } })] },
        want: {
          phase: 'Pending',
          address: undefined,
          ready:
            'False NoWireGuardServer: spec.network: Network default/lab has no WireGuard server; enable its spec.wireguard',
          events: ['NoWireGuardServer'],
        },
      },
      {
        name: 'tunnel subnet full (/30: the server and one peer)',
        subject: peer('phone', {}, { created: 2 }),
        world: { networks: [small], peers: [first] },
        want: {
          phase: 'Pending',
          address: undefined,
          ready: 'False AddressExhausted: spec.address: no free address left in 10.99.0.0/30',
          events: ['AddressExhausted'],
        },
      },
      {
        name: 'static address held by an older peer',
        subject: peer('phone', { address: '10.99.0.5' }, { created: 2 }),
        world: { peers: [peer('laptop', { publicKey: ownKey, address: '10.99.0.5' }, { created: 1 })] },
        want: {
          phase: 'Failed',
          address: undefined,
          ready:
            'False AddressUnavailable: spec.address: 10.99.0.5 is already used by WireGuardPeer default/laptop',
          events: ['AddressUnavailable'],
        },
      },
      {
        name: 'static address of the server',
        subject: peer('phone', { address: '10.99.0.1' }),
        want: {
          phase: 'Failed',
          address: undefined,
          ready: 'False AddressUnavailable: spec.address: 10.99.0.1 is already used by the WireGuard server',
          events: ['AddressUnavailable'],
        },
      },
      {
        name: 'static address outside the tunnel subnet',
        subject: peer('phone', { address: '10.20.0.9' }),
        want: {
          phase: 'Failed',
          address: undefined,
          ready: 'False AddressUnavailable: spec.address: 10.20.0.9 is not a host address in 10.99.0.0/24',
          events: ['AddressUnavailable'],
        },
      },
      {
        name: "allowedIPs over the peer's own Network",
        subject: peer('phone', { allowedIPs: ['10.20.0.0/16'] }),
        want: {
          phase: 'Failed',
          address: undefined,
          ready:
            'False AllowedIPsConflict: spec.allowedIPs[0]: 10.20.0.0/16 overlaps 10.20.0.0/24, routed to Network default/lab',
          events: ['AllowedIPsConflict'],
        },
      },
      {
        name: "allowedIPs over another tenant's Network on the same router, which stays unnamed",
        subject: peer('phone', { allowedIPs: ['192.168.1.0/24', '10.50.0.0/25'] }),
        world: { networks: [network(), otherTenant, otherRouter] },
        want: {
          phase: 'Failed',
          address: undefined,
          ready:
            'False AllowedIPsConflict: spec.allowedIPs[1]: 10.50.0.0/25 overlaps 10.50.0.0/24, routed to a Network of another namespace',
          events: ['AllowedIPsConflict'],
        },
      },
    ];
    for (const { name, subject, world, want } of cases) {
      it(`${name}: says why, and settles`, () => {
        const result = reconcileWireGuardPeer(input(subject, world));
        assert.deepEqual(verdict(result), want);
        assert.equal(result.status?.configSecretName, undefined);
        assert.equal(decoded(result.secret, configSecretKey), undefined);
        const once = stored(subject, result);
        const secret = storedSecret(undefined, result);
        assert.deepEqual(
          reconcileWireGuardPeer(input(once, { ...world, ...(secret ? { secret } : {}), now: later })),
          { events: [] },
        );
      });
    }

    it('accepts allowedIPs that only a Network on another router covers', () => {
      const result = reconcileWireGuardPeer(
        input(peer('phone', { allowedIPs: ['10.60.0.0/24'] }), { networks: [network(), otherRouter] }),
      );
      assert.equal(result.status?.address, '10.99.0.2');
    });

    it('drops the config from the Secret once the Network is gone, and writes it again when it is back', () => {
      const { peer: settled, secret } = settle(peer('laptop'));
      const gone = reconcileWireGuardPeer(input(settled, { networks: [], secret }));
      assert.deepEqual(Object.keys(gone.secret?.data ?? {}), [privateKeySecretKey]);
      assert.equal(gone.status?.address, undefined);
      assert.equal(gone.status?.publicKey, fresh.publicKey);
      const back = reconcileWireGuardPeer(
        input(stored(settled, gone), { secret: storedSecret(secret, gone) }),
      );
      assert.equal(back.status?.address, '10.99.0.2');
      assert.ok(decoded(back.secret, configSecretKey)?.includes(`PrivateKey = ${fresh.privateKey}`));
    });
  });

  describe('lifecycle', () => {
    it('does nothing for a deleted peer: it has no finalizer, the Network controller drops it from the router', () => {
      const { peer: settled, secret } = settle(peer('laptop'));
      const deleted = deepFreeze({
        ...settled,
        metadata: { ...settled.metadata, deletionTimestamp: '2025-05-01T11:00:00Z' },
      });
      assert.deepEqual(reconcileWireGuardPeer(input(deleted, { secret })), { events: [] });
      assert.equal(settled.metadata.finalizers, undefined);
    });

    it('records the new generation after a spec change', () => {
      const { peer: settled } = settle(peer('laptop', { publicKey: ownKey }), {
        routerPeers: new Set(['laptop']),
      });
      const changed = deepFreeze(
        validateObject(wireguardPeerKind, {
          ...JSON.parse(JSON.stringify(settled)),
          metadata: { ...settled.metadata, generation: 2 },
          spec: { ...settled.spec, allowedIPs: ['192.168.1.0/24'] },
        }),
      );
      const result = reconcileWireGuardPeer(input(changed, { routerPeers: new Set(['laptop']) }));
      assert.equal(result.status?.observedGeneration, 2);
      assert.equal(ready(result)?.observedGeneration, 2);
      assert.equal(
        ready(result)?.lastTransitionTime,
        getCondition(settled.status?.conditions, 'Ready')?.lastTransitionTime,
      );
      assert.deepEqual(result.events, []);
    });

    it('is deterministic and leaves its input as it was', () => {
      const { peer: settled, secret } = settle(peer('laptop'));
      const inputs: [string, PeerReconcileInput][] = [
        ['create', input(peer('laptop'))],
        ['converged', input(settled, { secret, routerPeers: new Set(['laptop']) })],
        ['network gone', input(settled, { secret, networks: [] })],
      ];
      for (const [name, given] of inputs) {
        const before = JSON.stringify(given);
        assert.deepEqual(reconcileWireGuardPeer(given), reconcileWireGuardPeer(given), name);
        assert.equal(JSON.stringify(given), before, name);
      }
    });
  });
});

/** A Secret named laptop-wireguard with `data`, controlled by the peer `owner` (uid-<owner>) or by nothing. */
function secretOf(data: Record<string, string>, owner?: string, uid = `uid-${owner}`): Secret {
  return deepFreeze(
    validateObject(secretKind, {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: {
        name: 'laptop-wireguard',
        namespace: 'default',
        uid: 'secret-uid',
        resourceVersion: '7',
        labels: { team: 'ops' },
        ...(owner
          ? {
              ownerReferences: [
                {
                  apiVersion,
                  kind: 'WireGuardPeer',
                  name: owner,
                  uid,
                  controller: true,
                  blockOwnerDeletion: true,
                },
              ],
            }
          : {}),
      },
      type: 'Opaque',
      data,
    }),
  );
}
