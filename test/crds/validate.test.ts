import assert from 'node:assert/strict';
import type { KindInfo } from '../../crds/kind.js';
import {
  apiVersion,
  hostKind,
  instanceKind,
  networkKind,
  routerKind,
  wireguardPeerKind,
} from '../../crds/v1alpha1/index.js';
import { validateObject } from '../../crds/validate.js';
import { invalid } from '../harness/invalid.js';

type Json = null | boolean | number | string | Json[] | JsonObject;
type JsonObject = { [key: string]: Json | undefined };

/** `base` with `patch` merged in: objects merge, anything else replaces, undefined deletes. */
function merged(base: JsonObject, patch: JsonObject): JsonObject {
  const out: JsonObject = { ...base };
  for (const [key, value] of Object.entries(patch)) {
    const current = out[key];
    if (value === undefined) delete out[key];
    else if (isObject(value) && isObject(current)) out[key] = merged(current, value);
    else out[key] = value;
  }
  return out;
}

function isObject(value: Json | undefined): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const sha256 = 'a'.repeat(64);
const publicKey = 'VERkZPUtIlMn81ky2RaB1tWypMiXNzaC7rhu0D+Hrx0=';

type Kind = 'Instance' | 'Network' | 'WireGuardPeer' | 'Host' | 'Router';

const minimal: Record<Kind, JsonObject> = {
  Instance: {
    apiVersion,
    kind: 'Instance',
    metadata: { name: 'web-1', namespace: 'default' },
    spec: { image: { url: 'https://images.example.org/debian.qcow2', sha256 } },
  },
  Network: {
    apiVersion,
    kind: 'Network',
    metadata: { name: 'lab', namespace: 'default' },
    spec: { cidr: '10.20.0.0/24' },
  },
  WireGuardPeer: {
    apiVersion,
    kind: 'WireGuardPeer',
    metadata: { name: 'alice', namespace: 'default' },
    spec: { network: 'lab' },
  },
  Host: { apiVersion, kind: 'Host', metadata: { name: 'hv1' } },
  Router: { apiVersion, kind: 'Router', metadata: { name: 'edge-1' }, spec: { driver: 'linux' } },
};

const kindInfo: Record<Kind, KindInfo> = {
  Instance: instanceKind,
  Network: networkKind,
  WireGuardPeer: wireguardPeerKind,
  Host: hostKind,
  Router: routerKind,
};
const kindNames = Object.keys(kindInfo) as Kind[];

/** What is wrong, the patch onto the minimal object that does it, and the cause expected (reason without "FieldValue"). */
type BadObject = [what: string, patch: JsonObject, field: string, reason: string];

const kernel = { url: 'https://artifacts.example.org/hello.elf', sha256 };
const wireguard = { cidr: '10.99.0.0/24' };
const condition = {
  type: 'Ready',
  reason: 'Booting',
  message: '',
  lastTransitionTime: '2025-05-01T12:00:00Z',
};

const badObjects: Record<Kind, BadObject[]> = {
  Instance: [
    ['name with capitals and _', { metadata: { name: 'Web_1' } }, 'metadata.name', 'Invalid'],
    ['bad namespace', { metadata: { namespace: 'Team_A' } }, 'metadata.namespace', 'Invalid'],
    ['wrong apiVersion', { apiVersion: 'loam.dev/v1' }, 'apiVersion', 'NotSupported'],
    ['unknown runStrategy', { spec: { runStrategy: 'Sometimes' } }, 'spec.runStrategy', 'NotSupported'],
    ['zero cpus', { spec: { cpus: 0 } }, 'spec.cpus', 'Invalid'],
    ['fractional cpus', { spec: { cpus: 1.5 } }, 'spec.cpus', 'Invalid'],
    ['memory 2GB', { spec: { memory: '2GB' } }, 'spec.memory', 'Invalid'],
    ['memory abc', { spec: { memory: 'abc' } }, 'spec.memory', 'Invalid'],
    ['memory -1Gi', { spec: { memory: '-1Gi' } }, 'spec.memory', 'Invalid'],
    ['memory below 16Mi', { spec: { memory: '8Mi' } }, 'spec.memory', 'Invalid'],
    ['memory of the wrong type', { spec: { memory: true } }, 'spec.memory', 'Invalid'],
    ['both image and kernel', { spec: { kernel } }, 'spec.kernel', 'Forbidden'],
    ['neither image nor kernel', { spec: { image: undefined } }, 'spec.image', 'Required'],
    [
      'cloudInit with a kernel',
      { spec: { image: undefined, kernel, cloudInit: { userData: '#cloud-config' } } },
      'spec.cloudInit',
      'Forbidden',
    ],
    [
      'rootDisk with a kernel',
      { spec: { image: undefined, kernel, rootDisk: { size: '10Gi' } } },
      'spec.rootDisk',
      'Forbidden',
    ],
    [
      'cloudInit with both user data sources',
      { spec: { cloudInit: { userData: '#cloud-config', userDataSecretRef: { name: 'web-init' } } } },
      'spec.cloudInit.userDataSecretRef',
      'Forbidden',
    ],
    ['cloudInit with no user data', { spec: { cloudInit: {} } }, 'spec.cloudInit.userData', 'Required'],
    [
      'ftp image URL',
      { spec: { image: { url: 'ftp://images.example.org/d.qcow2' } } },
      'spec.image.url',
      'Invalid',
    ],
    ['short sha256', { spec: { image: { sha256: 'abc123' } } }, 'spec.image.sha256', 'Invalid'],
    ['missing sha256', { spec: { image: { sha256: undefined } } }, 'spec.image.sha256', 'Required'],
    [
      'duplicate network names',
      { spec: { networks: [{ name: 'lab' }, { name: 'lab' }] } },
      'spec.networks[1].name',
      'Duplicate',
    ],
    [
      'duplicate disk names',
      {
        spec: {
          disks: [
            { name: 'data', size: '1Gi' },
            { name: 'data', size: '2Gi' },
          ],
        },
      },
      'spec.disks[1].name',
      'Duplicate',
    ],
    [
      'IPv6 static address',
      { spec: { networks: [{ name: 'lab', address: 'fd00::10' }] } },
      'spec.networks[0].address',
      'Invalid',
    ],
    [
      'multicast MAC',
      { spec: { networks: [{ name: 'lab', mac: '01:00:5e:00:00:01' }] } },
      'spec.networks[0].mac',
      'Invalid',
    ],
    [
      'upper-case MAC',
      { spec: { networks: [{ name: 'lab', mac: '52:54:00:AB:CD:EF' }] } },
      'spec.networks[0].mac',
      'Invalid',
    ],
    [
      'bad condition status',
      { status: { conditions: [{ ...condition, status: 'Maybe' }] } },
      'status.conditions[0].status',
      'NotSupported',
    ],
  ],
  Network: [
    ['name too long', { metadata: { name: 'n'.repeat(64) } }, 'metadata.name', 'TooLong'],
    ['neither name nor generateName', { metadata: { name: undefined } }, 'metadata.name', 'Required'],
    ['missing spec', { spec: undefined }, 'spec', 'Required'],
    ['cidr that is not a CIDR', { spec: { cidr: '10.20.0.0' } }, 'spec.cidr', 'Invalid'],
    ['IPv6 cidr', { spec: { cidr: 'fd00:20::/64' } }, 'spec.cidr', 'Invalid'],
    ['cidr with host bits set', { spec: { cidr: '10.20.0.1/24' } }, 'spec.cidr', 'Invalid'],
    ['cidr prefix /31', { spec: { cidr: '10.20.0.0/31' } }, 'spec.cidr', 'Invalid'],
    ['cidr prefix /7', { spec: { cidr: '10.0.0.0/7' } }, 'spec.cidr', 'Invalid'],
    ['gateway outside cidr', { spec: { gateway: '10.21.0.1' } }, 'spec.gateway', 'Invalid'],
    ['gateway is the broadcast address', { spec: { gateway: '10.20.0.255' } }, 'spec.gateway', 'Invalid'],
    [
      'gateway inside the DHCP range',
      { spec: { gateway: '10.20.0.150', dhcp: { rangeStart: '10.20.0.100', rangeEnd: '10.20.0.199' } } },
      'spec.gateway',
      'Invalid',
    ],
    [
      'DHCP range reversed',
      { spec: { dhcp: { rangeStart: '10.20.0.200', rangeEnd: '10.20.0.100' } } },
      'spec.dhcp.rangeEnd',
      'Invalid',
    ],
    [
      'DHCP range outside cidr',
      { spec: { dhcp: { rangeStart: '10.30.0.100', rangeEnd: '10.20.0.199' } } },
      'spec.dhcp.rangeStart',
      'Invalid',
    ],
    [
      'DHCP rangeStart alone',
      { spec: { dhcp: { rangeStart: '10.20.0.100' } } },
      'spec.dhcp.rangeEnd',
      'Required',
    ],
    [
      'lease time below two minutes',
      { spec: { dhcp: { leaseTime: '1m' } } },
      'spec.dhcp.leaseTime',
      'Invalid',
    ],
    ['lease time in words', { spec: { dhcp: { leaseTime: '12 hours' } } }, 'spec.dhcp.leaseTime', 'Invalid'],
    [
      'unknown segment type',
      { spec: { segment: { type: 'gre', id: 10 } } },
      'spec.segment.type',
      'NotSupported',
    ],
    ['vlan id 5000', { spec: { segment: { type: 'vlan', id: 5000 } } }, 'spec.segment.id', 'Invalid'],
    ['vxlan id 0', { spec: { segment: { type: 'vxlan', id: 0 } } }, 'spec.segment.id', 'Invalid'],
    [
      'vxlan id beyond 24 bits',
      { spec: { segment: { type: 'vxlan', id: 16777216 } } },
      'spec.segment.id',
      'Invalid',
    ],
    [
      'wireguard port 0',
      { spec: { wireguard: { ...wireguard, port: 0 } } },
      'spec.wireguard.port',
      'Invalid',
    ],
    [
      'wireguard port 70000',
      { spec: { wireguard: { ...wireguard, port: 70000 } } },
      'spec.wireguard.port',
      'Invalid',
    ],
    [
      'wireguard cidr inside cidr',
      { spec: { wireguard: { cidr: '10.20.0.128/25' } } },
      'spec.wireguard.cidr',
      'Invalid',
    ],
    [
      'wireguard cidr containing cidr',
      { spec: { wireguard: { cidr: '10.0.0.0/8' } } },
      'spec.wireguard.cidr',
      'Invalid',
    ],
    [
      'wireguard endpoint without port',
      { spec: { wireguard: { ...wireguard, endpoint: 'vpn.example.org' } } },
      'spec.wireguard.endpoint',
      'Invalid',
    ],
    [
      'dns server that is a name',
      { spec: { dns: ['10.20.0.1', 'dns.example.org'] } },
      'spec.dns[1]',
      'Invalid',
    ],
  ],
  WireGuardPeer: [
    ['public key that is not base64', { spec: { publicKey: 'not-a-key' } }, 'spec.publicKey', 'Invalid'],
    [
      'public key of 31 bytes',
      { spec: { publicKey: Buffer.alloc(31, 7).toString('base64') } },
      'spec.publicKey',
      'Invalid',
    ],
    [
      'public key with non-canonical padding bits',
      { spec: { publicKey: `${publicKey.slice(0, 42)}1=` } },
      'spec.publicKey',
      'Invalid',
    ],
    ['missing network', { spec: { network: undefined } }, 'spec.network', 'Required'],
    ['keepalive 70000', { spec: { persistentKeepalive: 70000 } }, 'spec.persistentKeepalive', 'Invalid'],
    [
      'allowedIPs with host bits',
      { spec: { allowedIPs: ['192.168.178.1/24'] } },
      'spec.allowedIPs[0]',
      'Invalid',
    ],
    ['allowedIPs default route', { spec: { allowedIPs: ['0.0.0.0/0'] } }, 'spec.allowedIPs[0]', 'Invalid'],
  ],
  Host: [
    [
      'namespace on a cluster-scoped kind',
      { metadata: { namespace: 'default' } },
      'metadata.namespace',
      'Forbidden',
    ],
    ['bad label key', { metadata: { labels: { 'bad key!': 'x' } } }, 'metadata.labels', 'Invalid'],
    [
      'label value too long',
      { metadata: { labels: { rack: 'r'.repeat(64) } } },
      'metadata.labels.rack',
      'TooLong',
    ],
    [
      'capacity memory garbage',
      { status: { capacity: { cpus: 4, memory: 'lots' } } },
      'status.capacity.memory',
      'Invalid',
    ],
    [
      'unknown domainType',
      { status: { facts: { domainType: 'xen' } } },
      'status.facts.domainType',
      'NotSupported',
    ],
    ['bad heartbeat time', { status: { heartbeatTime: 'yesterday' } }, 'status.heartbeatTime', 'Invalid'],
  ],
  Router: [
    [
      'namespace on a cluster-scoped kind',
      { metadata: { namespace: 'default' } },
      'metadata.namespace',
      'Forbidden',
    ],
    ['missing driver', { spec: { driver: undefined } }, 'spec.driver', 'Required'],
    ['unknown driver', { spec: { driver: 'vyos' } }, 'spec.driver', 'NotSupported'],
    [
      'vlan pool reversed',
      { spec: { segmentPool: { vlan: { start: 200, end: 100 } } } },
      'spec.segmentPool.vlan.end',
      'Invalid',
    ],
    [
      'vlan pool beyond 4094',
      { spec: { segmentPool: { vlan: { start: 4000, end: 4095 } } } },
      'spec.segmentPool.vlan.end',
      'Invalid',
    ],
    [
      'endpoint host with a port',
      { spec: { wireguardEndpointHost: 'vpn.example.org:51820' } },
      'spec.wireguardEndpointHost',
      'Invalid',
    ],
  ],
};

describe('crds/validate', () => {
  for (const kind of kindNames) {
    it(`accepts the minimal ${kind}`, () => {
      validateObject(kindInfo[kind], minimal[kind]);
    });
  }

  describe('rejects bad objects with Kubernetes field causes', () => {
    for (const kind of kindNames) {
      for (const [what, patch, field, reason] of badObjects[kind]) {
        it(`${kind}: ${what} -> ${field} FieldValue${reason}`, () => {
          const err = invalid(kindInfo[kind], merged(minimal[kind], patch));
          assert.ok(
            err.causes.some((cause) => cause.field === field && cause.reason === `FieldValue${reason}`),
            `causes were ${JSON.stringify(err.causes)}`,
          );
        });
      }
    }
  });

  it('words the error as kube-apiserver does', () => {
    const err = invalid(networkKind, merged(minimal.Network, { spec: { cidr: '10.0.0.1/24' } }));
    assert.equal(err.code, 'Invalid');
    assert.equal(err.httpStatus, 422);
    assert.equal(
      err.message,
      'Network.loam.dev "lab" is invalid: spec.cidr: Invalid value: "10.0.0.1/24": host bits must be zero',
    );
    assert.deepEqual(err.causes, [
      {
        field: 'spec.cidr',
        reason: 'FieldValueInvalid',
        message: 'Invalid value: "10.0.0.1/24": host bits must be zero',
      },
    ]);
  });

  it('lists every problem, bracketed, and names the supported values', () => {
    const err = invalid(
      instanceKind,
      merged(minimal.Instance, { spec: { runStrategy: 'Sometimes', cpus: 300 } }),
    );
    assert.equal(
      err.message,
      'Instance.loam.dev "web-1" is invalid: [spec.runStrategy: Unsupported value: "Sometimes": supported values: "Always", "RerunOnFailure", "Manual", "Halted", spec.cpus: Invalid value: 300: must be less than or equal to 256]',
    );
  });

  it('reports a missing field as Required value', () => {
    const err = invalid(routerKind, merged(minimal.Router, { spec: { driver: undefined } }));
    assert.deepEqual(err.causes, [
      { field: 'spec.driver', reason: 'FieldValueRequired', message: 'Required value' },
    ]);
  });

  describe('defaults', () => {
    it('fills Instance runStrategy, cpus and memory', () => {
      const instance = validateObject(instanceKind, minimal.Instance);
      assert.equal(instance.spec.runStrategy, 'Always');
      assert.equal(instance.spec.cpus, 1);
      assert.equal(instance.spec.memory, '512Mi');
    });

    it('keeps quantities as written', () => {
      const asString = validateObject(instanceKind, merged(minimal.Instance, { spec: { memory: '2Gi' } }));
      assert.equal(asString.spec.memory, '2Gi');
      const asNumber = validateObject(
        instanceKind,
        merged(minimal.Instance, { spec: { memory: 1073741824 } }),
      );
      assert.equal(asNumber.spec.memory, 1073741824);
    });

    it('fills the cloud-init Secret key', () => {
      const instance = validateObject(
        instanceKind,
        merged(minimal.Instance, {
          spec: { cloudInit: { userDataSecretRef: { name: 'web-init' } } },
        }),
      );
      assert.deepEqual(instance.spec.cloudInit, { userDataSecretRef: { name: 'web-init', key: 'userdata' } });
    });

    it('fills Network dhcp and egress, and the WireGuard server', () => {
      const network = validateObject(networkKind, merged(minimal.Network, { spec: { wireguard } }));
      assert.deepEqual(network.spec.dhcp, { enabled: true, leaseTime: '12h' });
      assert.equal(network.spec.egress, false);
      assert.deepEqual(network.spec.wireguard, { enabled: true, port: 51820, cidr: '10.99.0.0/24' });
      assert.equal(network.spec.gateway, undefined, 'the controller defaults the gateway, not the schema');
    });

    it('fills WireGuardPeer persistentKeepalive', () => {
      assert.equal(validateObject(wireguardPeerKind, minimal.WireGuardPeer).spec.persistentKeepalive, 25);
    });

    it('fills a Host spec that was left out', () => {
      assert.deepEqual(validateObject(hostKind, minimal.Host).spec, { unschedulable: false });
    });

    it('fills the Router segment pool with a VXLAN range', () => {
      const router = validateObject(routerKind, minimal.Router);
      assert.deepEqual(router.spec.segmentPool, { vxlan: { start: 4096, end: 8191 } });
      assert.equal(router.spec.unschedulable, false);
    });
  });

  it('accepts generateName instead of name, and a null creationTimestamp', () => {
    const object = merged(minimal.Network, {
      metadata: { name: undefined, generateName: 'lab-', creationTimestamp: null },
    });
    validateObject(networkKind, object);
  });
});
