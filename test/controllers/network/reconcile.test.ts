import assert from 'node:assert/strict';
import {
  configHashAnnotation,
  type NetworkJob,
  type NetworkReconcileInput,
  type NetworkReconcileResult,
  networkFinalizer,
  type ObservedNetwork,
  type ObservedSegment,
  reconcileNetwork,
} from '../../../controllers/network/reconcile.js';
import { formatTimestamp, getCondition } from '../../../crds/meta.js';
import {
  apiVersion,
  type Instance,
  instanceKind,
  type Network,
  networkKind,
  type Router,
  routerKind,
  type WireGuardPeer,
  wireguardPeerKind,
} from '../../../crds/v1alpha1/index.js';
import { validateObject } from '../../../crds/validate.js';
import { earlier, readyConditions } from '../instance/fixtures.js';
import { publicKeys } from './objects.js';

// --- fixtures -------------------------------------------------------------------------------------

const now = new Date(Date.UTC(2025, 4, 1, 12, 0));
const later = new Date(Date.UTC(2025, 4, 1, 13, 0));

/** Frozen as the informer caches freeze objects, so a reconcile that mutated its input would throw. */
function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/** Minutes after a fixed origin, as creationTimestamp: orders objects by age. */
const createdAt = (minutes: number) => formatTimestamp(new Date(Date.UTC(2025, 0, 1, 0, minutes)));

interface RouterOptions {
  /** The Ready condition's status; undefined for a Router that reports none. */
  ready?: 'True' | 'Unknown' | undefined;
  spec?: Record<string, unknown>;
}

function router(name = 'edge-1', options: RouterOptions = {}): Router {
  const ready = 'ready' in options ? options.ready : 'True';
  const conditions = readyConditions(ready);
  return deepFreeze(
    validateObject(routerKind, {
      apiVersion,
      kind: 'Router',
      metadata: { name },
      spec: { driver: 'linux', ...options.spec },
      status: { conditions },
    }),
  );
}

interface ObjectOptions {
  namespace?: string;
  created?: number;
  generation?: number;
  status?: Record<string, unknown>;
  finalizers?: string[];
}

function meta(name: string, options: ObjectOptions) {
  const namespace = options.namespace ?? 'default';
  return {
    name,
    namespace,
    uid: `uid-${namespace}-${name}`,
    generation: options.generation ?? 1,
    creationTimestamp: createdAt(options.created ?? 0),
    ...(options.finalizers ? { finalizers: options.finalizers } : {}),
  };
}

function network(name = 'lab', spec: Record<string, unknown> = {}, options: ObjectOptions = {}): Network {
  return deepFreeze(
    validateObject(networkKind, {
      apiVersion,
      kind: 'Network',
      metadata: meta(name, options),
      spec: { cidr: '10.20.0.0/24', ...spec },
      ...(options.status ? { status: options.status } : {}),
    }),
  );
}

/** A Network of another tenant already placed on `routerName` as vxlan `id`. */
function placedNetwork(
  name: string,
  id: number,
  spec: Record<string, unknown> = {},
  options: ObjectOptions & { router?: string } = {},
): Network {
  return network(
    name,
    { cidr: `10.${100 + (id % 100)}.0.0/24`, ...spec },
    {
      namespace: 'other',
      ...options,
      status: {
        router: options.router ?? 'edge-1',
        segment: { type: 'vxlan', id },
        gateway: '10.0.0.1',
      },
    },
  );
}

interface InstanceOptions extends ObjectOptions {
  networks?: Record<string, unknown>[];
  host?: string;
  /** Reserved address and MAC on lab. */
  nic?: { ipAddress?: string; mac?: string };
}

function instance(name: string, options: InstanceOptions = {}): Instance {
  const status = {
    ...(options.host ? { host: options.host } : {}),
    ...(options.nic ? { interfaces: [{ network: 'lab', ...options.nic }] } : {}),
  };
  return deepFreeze(
    validateObject(instanceKind, {
      apiVersion,
      kind: 'Instance',
      metadata: meta(name, options),
      spec: {
        kernel: { url: 'https://example.org/kernel', sha256: 'a'.repeat(64) },
        networks: options.networks ?? [{ name: 'lab' }],
      },
      status,
    }),
  );
}

function peer(
  name: string,
  spec: Record<string, unknown>,
  options: ObjectOptions & { deleted?: boolean } = {},
): WireGuardPeer {
  const object = validateObject(wireguardPeerKind, {
    apiVersion,
    kind: 'WireGuardPeer',
    metadata: meta(name, options),
    spec: { network: 'lab', ...spec },
    ...(options.status ? { status: options.status } : {}),
  });
  return deepFreeze(
    options.deleted ? { ...object, metadata: { ...object.metadata, deletionTimestamp: earlier } } : object,
  );
}

/** A default world: Router edge-1 Ready, the agents of edge-1-edge-3 and hv1-hv3 connected, nothing else. */
function input(subject: Network, overrides: Partial<NetworkReconcileInput> = {}): NetworkReconcileInput {
  return {
    network: subject,
    routers: [router()],
    networks: [subject],
    instances: [],
    peers: [],
    observedHosts: new Map(),
    connectedAgents: {
      network: new Set(['edge-1', 'edge-2', 'edge-3']),
      libvirt: new Set(['hv1', 'hv2', 'hv3']),
    },
    inFlight: [],
    now,
    ...overrides,
  };
}

/**
 * The Network as stored after the shell executed `result`: the finalizer change and the status
 * written. Validated, so every status a reconcile produces is one the API server accepts.
 */
function stored(subject: Network, result: NetworkReconcileResult): Network {
  const finalizers = subject.metadata.finalizers ?? [];
  const next = {
    ...subject,
    metadata: {
      ...subject.metadata,
      finalizers:
        result.finalizer === 'add'
          ? [...finalizers, networkFinalizer]
          : result.finalizer === 'remove'
            ? finalizers.filter((f) => f !== networkFinalizer)
            : finalizers,
    },
    status: result.status ?? subject.status,
  };
  return deepFreeze(validateObject(networkKind, JSON.parse(JSON.stringify(next))));
}

/** The same Network with a new spec, as the API server stores an update: the next generation. */
function updated(subject: Network, spec: Record<string, unknown>): Network {
  return deepFreeze(
    validateObject(networkKind, {
      ...JSON.parse(JSON.stringify(subject)),
      metadata: { ...subject.metadata, generation: (subject.metadata.generation ?? 0) + 1 },
      spec: { ...subject.spec, ...spec },
    }),
  );
}

function deleted(subject: Network): Network {
  return deepFreeze(
    validateObject(networkKind, {
      ...JSON.parse(JSON.stringify(subject)),
      metadata: { ...subject.metadata, deletionTimestamp: earlier },
    }),
  );
}

function jobsOf(result: NetworkReconcileResult, type: NetworkJob['job']['type']): NetworkJob[] {
  return result.jobs.filter((job) => job.job.type === type);
}

function applyOf(result: NetworkReconcileResult): NetworkJob {
  const [apply, ...more] = jobsOf(result, 'network.apply');
  assert.ok(apply, 'a network.apply job');
  assert.equal(more.length, 0);
  return apply;
}

/** What the router reports once it has applied `job`, as a recording agent would answer. */
function observedOf(job: NetworkJob, extra: ObservedNetwork = {}): ObservedNetwork {
  return {
    generation: job.job.object.metadata.generation,
    configHash: job.job.object.metadata.annotations?.[configHashAnnotation] ?? '',
    ...extra,
  };
}

/** What the hosts report once they have run the attach jobs of `result`. */
function attachedHosts(result: NetworkReconcileResult): Map<string, ObservedSegment> {
  return new Map(
    jobsOf(result, 'network.attach').map((job) => [
      job.agent.name,
      { segment: job.job.object.status.segment },
    ]),
  );
}

/** `subject` placed, applied and attached, with the world in which it has converged. */
function converged(
  subject: Network,
  world: Partial<NetworkReconcileInput> = {},
  extra: ObservedNetwork = {},
): { network: Network; world: Partial<NetworkReconcileInput> } {
  const first = reconcileNetwork(input(subject, world));
  const placed = stored(subject, first);
  const reported = {
    ...world,
    observedRouter: observedOf(applyOf(first), extra),
    observedHosts: attachedHosts(first),
  };
  return { network: stored(placed, reconcileNetwork(input(placed, reported))), world: reported };
}

function conditionOf(result: NetworkReconcileResult, type: string) {
  return getCondition(result.status?.conditions, type);
}

function conditionSummary(result: NetworkReconcileResult, type: string) {
  const condition = conditionOf(result, type);
  return [condition?.status, condition?.reason, condition?.message];
}

const nothing = { jobs: [], events: [] };

// --- tests ----------------------------------------------------------------------------------------

describe('reconcileNetwork', () => {
  describe('creation', () => {
    it('places, allocates and sends the whole Network to the router in one pass', () => {
      const subject = network();
      const result = reconcileNetwork(input(subject));

      assert.equal(result.finalizer, 'add');
      assert.equal(result.status?.phase, 'Pending');
      assert.equal(result.status?.router, 'edge-1');
      assert.deepEqual(result.status?.segment, { type: 'vxlan', id: 4096 });
      assert.equal(result.status?.gateway, '10.20.0.1');
      assert.equal(result.status?.observedGeneration, 1);
      assert.deepEqual(
        result.status?.conditions?.map((c) => [c.type, c.status, c.reason, c.message, c.lastTransitionTime]),
        [
          ['Placed', 'True', 'Placed', 'placed on Router edge-1', '2025-05-01T12:00:00Z'],
          [
            'Configured',
            'False',
            'Configuring',
            'sending generation 1 to Router edge-1',
            '2025-05-01T12:00:00Z',
          ],
          [
            'Ready',
            'False',
            'Configuring',
            'configuring the Network on Router edge-1',
            '2025-05-01T12:00:00Z',
          ],
        ],
      );
      assert.deepEqual(result.events, [
        { type: 'Normal', reason: 'Placed', message: 'placed on Router edge-1' },
      ]);

      const apply = applyOf(result);
      assert.equal(result.jobs.length, 1);
      assert.deepEqual(apply.agent, { role: 'network', name: 'edge-1' });
      const { annotations, ...identity } = apply.job.object.metadata;
      assert.deepEqual(identity, {
        name: 'lab',
        namespace: 'default',
        uid: 'uid-default-lab',
        generation: 1,
      });
      assert.match(annotations?.[configHashAnnotation] ?? '', /^[0-9a-f]{64}$/);
      assert.deepEqual(apply.job.object.spec, subject.spec);
      assert.deepEqual(apply.job.object.status, {
        router: 'edge-1',
        segment: { type: 'vxlan', id: 4096 },
        gateway: '10.20.0.1',
      });
      assert.deepEqual(apply.job.object.router, {
        apiVersion: 'loam.dev/v1alpha1',
        kind: 'Router',
        metadata: { name: 'edge-1' },
        spec: { driver: 'linux', segmentPool: { vxlan: { start: 4096, end: 8191 } } },
      });
      assert.deepEqual(apply.job.object.leases, []);
      assert.deepEqual(apply.job.object.peers, []);

      // The parts are objects the agent can validate like any other.
      const { router: routerObject, leases: _, peers: __, ...networkObject } = apply.job.object;
      validateObject(networkKind, networkObject);
      validateObject(routerKind, routerObject);
    });

    it('carries exactly the leases Instance status reserves and the peers that have a public key', () => {
      const subject = network('lab', { wireguard: { cidr: '10.99.0.0/24' } });
      const instances = [
        instance('web', {
          created: 2,
          host: 'hv1',
          nic: { ipAddress: '10.20.0.10', mac: '52:54:00:00:00:10' },
        }),
        instance('db', {
          created: 1,
          host: 'hv1',
          nic: { ipAddress: '10.20.0.3', mac: '52:54:00:00:00:03' },
        }),
        // No reservation yet: left out, the Instance controller has not allocated it.
        instance('new', { created: 3 }),
        instance('half', { created: 4, nic: { mac: '52:54:00:00:00:04' } }),
        // Not attached to lab, although its status still names it.
        instance('gone', {
          networks: [],
          nic: { ipAddress: '10.20.0.20', mac: '52:54:00:00:00:20' },
        }),
        // Another tenant's Instance on a Network of the same name.
        instance('other', {
          namespace: 'other',
          nic: { ipAddress: '10.20.0.30', mac: '52:54:00:00:00:30' },
        }),
      ];
      const peers = [
        peer('laptop', { publicKey: publicKeys[0] }, { created: 1 }),
        peer('phone', {}, { created: 2, status: { publicKey: publicKeys[1], address: '10.99.0.7' } }),
        peer('keyless', {}, { created: 3 }),
        peer('leaving', { publicKey: publicKeys[2] }, { created: 4, deleted: true }),
        peer('elsewhere', { network: 'other-net', publicKey: publicKeys[2] }, { created: 5 }),
      ];
      const { job } = applyOf(reconcileNetwork(input(subject, { instances, peers })));
      assert.deepEqual(job.object.leases, [
        { instance: 'db', mac: '52:54:00:00:00:03', address: '10.20.0.3' },
        { instance: 'web', mac: '52:54:00:00:00:10', address: '10.20.0.10' },
      ]);
      assert.deepEqual(job.object.peers, [
        { peer: 'laptop', publicKey: publicKeys[0], address: '10.99.0.2', allowedIPs: ['10.99.0.2/32'] },
        { peer: 'phone', publicKey: publicKeys[1], address: '10.99.0.7', allowedIPs: ['10.99.0.7/32'] },
      ]);
    });

    it('reports Ready once the router echoes the configuration, then does nothing', () => {
      const first = reconcileNetwork(input(network()));
      const placed = stored(network(), first);
      const reported = reconcileNetwork(input(placed, { observedRouter: observedOf(applyOf(first)) }));
      assert.equal(reported.status?.phase, 'Ready');
      assert.deepEqual(conditionSummary(reported, 'Configured'), [
        'True',
        'Configured',
        'Router edge-1 has generation 1 with 0 static leases and 0 WireGuard peers',
      ]);
      assert.deepEqual(conditionOf(reported, 'Ready'), {
        type: 'Ready',
        status: 'True',
        reason: 'Ready',
        message: 'served by Router edge-1',
        observedGeneration: 1,
        lastTransitionTime: '2025-05-01T12:00:00Z',
      });
      assert.deepEqual(reported.events, [
        { type: 'Normal', reason: 'Ready', message: 'served by Router edge-1' },
      ]);
      assert.deepEqual(reported.jobs, []);
      assert.equal(reported.finalizer, undefined);

      const ready = stored(placed, reported);
      assert.deepEqual(
        reconcileNetwork(input(ready, { observedRouter: observedOf(applyOf(first)), now: later })),
        nothing,
      );
    });

    it('takes the WireGuard public key from the router and the endpoint from spec or Router', () => {
      const wireguard = { cidr: '10.99.0.0/24', port: 51999 };
      const cases: {
        name: string;
        spec?: Record<string, unknown>;
        router?: Record<string, unknown>;
        reported?: ObservedNetwork['wireguard'];
        want: unknown;
      }[] = [
        {
          name: "the Router's endpoint host and the port",
          router: { wireguardEndpointHost: 'vpn.example.org' },
          reported: { publicKey: publicKeys[2], endpoint: '192.0.2.1:51999' },
          want: { publicKey: publicKeys[2], endpoint: 'vpn.example.org:51999' },
        },
        {
          name: 'an IPv6 endpoint host in brackets',
          router: { wireguardEndpointHost: '2001:db8::1' },
          want: { endpoint: '[2001:db8::1]:51999' },
        },
        {
          name: "spec's endpoint first",
          spec: { endpoint: 'lab.example.org:443' },
          router: { wireguardEndpointHost: 'vpn.example.org' },
          want: { endpoint: 'lab.example.org:443' },
        },
        {
          name: 'what the router reports when nothing names one',
          reported: { publicKey: publicKeys[2], endpoint: '192.0.2.1:51999' },
          want: { publicKey: publicKeys[2], endpoint: '192.0.2.1:51999' },
        },
        { name: 'nothing before the router reports', want: undefined },
      ];
      for (const c of cases) {
        const subject = network('lab', { wireguard: { ...wireguard, ...c.spec } });
        const world = { routers: [router('edge-1', { spec: c.router ?? {} })] };
        const { network: ready } = converged(subject, world, c.reported ? { wireguard: c.reported } : {});
        assert.deepEqual(ready.status?.wireguard, c.want, c.name);
      }
    });
  });

  describe('convergence', () => {
    it('does nothing for a converged Network, with leases, peers and hosts', () => {
      const subject = network('lab', { wireguard: { cidr: '10.99.0.0/24' } });
      const world = {
        instances: [
          instance('web', { host: 'hv1', nic: { ipAddress: '10.20.0.2', mac: '52:54:00:00:00:02' } }),
          instance('db', { host: 'hv2', nic: { ipAddress: '10.20.0.3', mac: '52:54:00:00:00:03' } }),
        ],
        peers: [peer('laptop', { publicKey: publicKeys[0] })],
      };
      const done = converged(subject, world, { wireguard: { publicKey: publicKeys[2] } });
      assert.equal(done.network.status?.phase, 'Ready');
      assert.equal(
        getCondition(done.network.status?.conditions, 'Configured')?.message,
        'Router edge-1 has generation 1 with 2 static leases and 1 WireGuard peer',
      );
      assert.deepEqual(reconcileNetwork(input(done.network, { ...done.world, now: later })), nothing);
    });

    it('is idempotent: the same input gives the same output, and the input is left as it was', () => {
      const ready = converged(network());
      const inputs: [string, NetworkReconcileInput][] = [
        ['create', input(network())],
        ['spec change', input(updated(ready.network, { egress: true }), ready.world)],
        ['no router', input(network(), { routers: [] })],
        ['router gone', input(ready.network, { ...ready.world, routers: [] })],
        ['deletion', input(deleted(ready.network), ready.world)],
      ];
      for (const [name, given] of inputs) {
        const before = JSON.stringify(given.network);
        assert.deepEqual(reconcileNetwork(given), reconcileNetwork(given), name);
        assert.equal(JSON.stringify(given.network), before, name);
      }
    });

    it('hashes the configuration, not the order its fields were read in', () => {
      const subject = network('lab', { egress: true, dns: ['192.0.2.53'] });
      const reordered = deepFreeze({
        ...subject,
        spec: Object.fromEntries(Object.entries(subject.spec).reverse()) as Network['spec'],
      });
      const hash = (n: Network) =>
        applyOf(reconcileNetwork(input(n))).job.object.metadata.annotations?.[configHashAnnotation];
      assert.equal(hash(reordered), hash(subject));
      assert.notEqual(hash(updated(subject, { egress: false })), hash(subject));
    });

    it('reaches a fixed point: reconciling what it wrote changes nothing more', () => {
      const worlds: [string, Partial<NetworkReconcileInput>][] = [
        ['no routers', { routers: [] }],
        ['router not Ready', { routers: [router('edge-1', { ready: 'Unknown' })] }],
        ['agent disconnected', { connectedAgents: { network: new Set(), libvirt: new Set() } }],
        ['no room', { networks: [placedNetwork('big', 4096, { cidr: '10.0.0.0/8' })] }],
      ];
      for (const [name, world] of worlds) {
        const once = stored(network(), reconcileNetwork(input(network(), world)));
        const twice = reconcileNetwork(input(once, world));
        assert.equal(twice.status, undefined, name);
        assert.deepEqual(twice.events, [], name);
      }
    });
  });

  describe('placement', () => {
    const cases: {
      name: string;
      spec?: Record<string, unknown>;
      routers: Router[];
      others?: Network[];
      want: { router: string; segment: number };
    }[] = [
      {
        name: 'the Router with the fewest Networks',
        routers: [router('edge-1'), router('edge-2')],
        others: [placedNetwork('a', 4096)],
        want: { router: 'edge-2', segment: 4096 },
      },
      {
        name: 'the first by name when loads tie',
        routers: [router('edge-2'), router('edge-1'), router('edge-3')],
        want: { router: 'edge-1', segment: 4096 },
      },
      {
        name: 'the Router spec.router names, even when another is emptier',
        spec: { router: 'edge-1' },
        routers: [router('edge-1'), router('edge-2')],
        others: [placedNetwork('a', 4096)],
        want: { router: 'edge-1', segment: 4097 },
      },
      {
        name: 'the next Router when the Network does not fit on the emptiest',
        spec: { segment: { type: 'vxlan', id: 5000 } },
        routers: [router('edge-1'), router('edge-2')],
        others: [
          placedNetwork('a', 5000),
          placedNetwork('b', 4096, {}, { router: 'edge-2' }),
          placedNetwork('c', 4097, {}, { router: 'edge-2' }),
        ],
        want: { router: 'edge-2', segment: 5000 },
      },
      {
        name: 'not a Router that is not Ready or cordoned',
        routers: [
          router('edge-1', { ready: 'Unknown' }),
          router('edge-2', { spec: { unschedulable: true } }),
          router('edge-3'),
        ],
        others: [placedNetwork('a', 4096, {}, { router: 'edge-3' })],
        want: { router: 'edge-3', segment: 4097 },
      },
      {
        name: 'a segment no Network recorded on the Router holds, Networks being deleted included',
        routers: [router('edge-1')],
        others: [
          placedNetwork('a', 4096),
          deleted(placedNetwork('b', 4097)),
          placedNetwork('c', 4098, {}, { router: 'edge-2' }),
        ],
        want: { router: 'edge-1', segment: 4098 },
      },
    ];
    for (const c of cases) {
      it(c.name, () => {
        const subject = network('lab', c.spec);
        const result = reconcileNetwork(
          input(subject, { routers: c.routers, networks: [subject, ...(c.others ?? [])] }),
        );
        assert.equal(result.status?.router, c.want.router);
        assert.deepEqual(result.status?.segment, { type: 'vxlan', id: c.want.segment });
        assert.equal(applyOf(result).agent.name, c.want.router);
      });
    }

    it('never moves a placed Network, even off a cordoned Router to an emptier one', () => {
      const ready = converged(network());
      const routers = [router('edge-1', { spec: { unschedulable: true } }), router('edge-2')];
      // Cordoning does not re-apply either: the router's configuration does not depend on it.
      assert.deepEqual(reconcileNetwork(input(ready.network, { ...ready.world, routers })), nothing);
    });
  });

  describe('no Router fits', () => {
    const cases: {
      name: string;
      spec?: Record<string, unknown>;
      routers: Router[];
      others?: Network[];
      reason: string;
      message: string;
    }[] = [
      {
        name: 'no Routers at all',
        routers: [],
        reason: 'NoRouter',
        message: 'there are no Routers: enroll a router with the network agent',
      },
      {
        name: 'spec.router names no Router',
        spec: { router: 'edge-9' },
        routers: [router('edge-1')],
        reason: 'NoRouter',
        message: 'Router edge-9 (spec.router) does not exist',
      },
      {
        name: 'every Router ruled out, counted per reason',
        routers: [
          router('edge-1', { ready: 'Unknown' }),
          router('edge-2', { ready: undefined }),
          router('edge-3', { spec: { unschedulable: true } }),
        ],
        reason: 'Unschedulable',
        message: '0/3 Routers fit the Network: 2 not Ready; 1 cordoned (spec.unschedulable)',
      },
      {
        name: 'a cidr overlapping an older Network on the Router',
        routers: [router('edge-1')],
        others: [placedNetwork('big', 4096, { cidr: '10.0.0.0/8' })],
        reason: 'AllocationFailed',
        message:
          '0/1 Routers fit the Network: spec.cidr: 10.20.0.0/24 overlaps 10.0.0.0/8 of Network other/big on router edge-1',
      },
      {
        name: 'a segment an older Network on the Router holds',
        spec: { router: 'edge-1', segment: { type: 'vxlan', id: 4096 } },
        routers: [router('edge-1'), router('edge-2', { ready: 'Unknown' })],
        others: [placedNetwork('a', 4096)],
        reason: 'AllocationFailed',
        message:
          '0/1 Routers fit the Network (spec.router edge-1): spec.segment.id: vxlan 4096 is already used by Network other/a on router edge-1',
      },
      {
        name: 'an exhausted pool, next to a Router that is not Ready',
        routers: [
          router('edge-1', { spec: { segmentPool: { vxlan: { start: 10, end: 10 } } } }),
          router('edge-2', { ready: 'Unknown' }),
        ],
        others: [placedNetwork('a', 10)],
        reason: 'AllocationFailed',
        message:
          "0/2 Routers fit the Network: 1 not Ready; spec.segment: router edge-1's vxlan pool 10-10 is exhausted",
      },
    ];
    for (const c of cases) {
      it(c.name, () => {
        const subject = network('lab', c.spec);
        const world = { routers: c.routers, networks: [subject, ...(c.others ?? [])] };
        const result = reconcileNetwork(input(subject, world));
        assert.equal(result.status?.phase, 'Pending');
        assert.equal(result.status?.router, undefined);
        assert.equal(result.status?.segment, undefined);
        assert.deepEqual(result.jobs, []);
        assert.deepEqual(conditionSummary(result, 'Placed'), ['False', c.reason, c.message]);
        assert.deepEqual(conditionSummary(result, 'Ready'), ['False', 'NotPlaced', 'see condition Placed']);
        assert.deepEqual(result.events, [{ type: 'Warning', reason: 'FailedPlacement', message: c.message }]);

        // No retry storm: nothing new to say until the Routers or Networks change.
        assert.deepEqual(reconcileNetwork(input(stored(subject, result), world)), nothing);
      });
    }

    it('places the Network once a Router fits', () => {
      const world = { routers: [router('edge-1', { ready: 'Unknown' })] };
      const waiting = stored(network(), reconcileNetwork(input(network(), world)));
      const result = reconcileNetwork(input(waiting, { routers: [router('edge-1')] }));
      assert.equal(result.status?.router, 'edge-1');
      assert.equal(applyOf(result).agent.name, 'edge-1');
      assert.equal(conditionOf(result, 'Placed')?.lastTransitionTime, '2025-05-01T12:00:00Z');
      assert.deepEqual(result.events, [
        { type: 'Normal', reason: 'Placed', message: 'placed on Router edge-1' },
      ]);
    });
  });

  describe('updates', () => {
    it('sends the new generation when the spec changes, while the router serves the old one', () => {
      const ready = converged(network());
      const result = reconcileNetwork(input(updated(ready.network, { egress: true }), ready.world));
      const apply = applyOf(result);
      assert.equal(apply.job.object.metadata.generation, 2);
      assert.equal(apply.job.object.spec.egress, true);
      assert.equal(result.status?.phase, 'Ready');
      assert.equal(result.status?.observedGeneration, 2);
      assert.deepEqual(conditionSummary(result, 'Configured'), [
        'False',
        'Configuring',
        'sending generation 2 to Router edge-1',
      ]);
      assert.equal(conditionOf(result, 'Ready')?.status, 'True');
      assert.deepEqual(result.events, []);
    });

    it('sends the leases again when an Instance gets its address', () => {
      const ready = converged(network(), { instances: [instance('web', { host: 'hv1' })] });
      const addressed = [
        instance('web', { host: 'hv1', nic: { ipAddress: '10.20.0.2', mac: '52:54:00:00:00:02' } }),
      ];
      const result = reconcileNetwork(input(ready.network, { ...ready.world, instances: addressed }));
      const apply = applyOf(result);
      assert.equal(apply.job.object.metadata.generation, 1);
      assert.deepEqual(apply.job.object.leases, [
        { instance: 'web', mac: '52:54:00:00:00:02', address: '10.20.0.2' },
      ]);
      assert.equal(conditionOf(result, 'Configured')?.reason, 'Configuring');
      assert.equal(conditionOf(result, 'Ready')?.status, 'True');
      assert.deepEqual(result.events, []);
    });

    it('sends the peers again when a peer gets its key, and when one is deleted', () => {
      const subject = network('lab', { wireguard: { cidr: '10.99.0.0/24' } });
      const ready = converged(subject, { peers: [peer('laptop', {})] });
      const keyed = reconcileNetwork(
        input(ready.network, {
          ...ready.world,
          peers: [peer('laptop', {}, { status: { publicKey: publicKeys[1], address: '10.99.0.2' } })],
        }),
      );
      assert.deepEqual(applyOf(keyed).job.object.peers, [
        { peer: 'laptop', publicKey: publicKeys[1], address: '10.99.0.2', allowedIPs: ['10.99.0.2/32'] },
      ]);

      const withPeer = converged(subject, { peers: [peer('laptop', { publicKey: publicKeys[0] })] });
      const removed = reconcileNetwork(
        input(withPeer.network, {
          ...withPeer.world,
          peers: [peer('laptop', { publicKey: publicKeys[0] }, { deleted: true })],
        }),
      );
      assert.deepEqual(applyOf(removed).job.object.peers, []);
    });

    it('does not send a job that is already in flight, but does send a newer one', () => {
      const first = reconcileNetwork(input(network()));
      const placed = stored(network(), first);
      const again = reconcileNetwork(input(placed, { observedRouter: {}, inFlight: first.jobs }));
      assert.deepEqual(again, nothing);

      const newer = updated(placed, { egress: true });
      const next = reconcileNetwork(input(newer, { observedRouter: {}, inFlight: first.jobs }));
      assert.equal(applyOf(next).job.object.metadata.generation, 2);
    });

    it('waits for a disconnected router agent whose Router is still Ready', () => {
      const first = reconcileNetwork(input(network()));
      const placed = stored(network(), first);
      const result = reconcileNetwork(
        input(placed, { observedRouter: {}, connectedAgents: { network: new Set(), libvirt: new Set() } }),
      );
      assert.deepEqual(result.jobs, []);
      assert.equal(result.status?.phase, 'Pending');
      assert.deepEqual(conditionSummary(result, 'Configured'), [
        'False',
        'WaitingForRouter',
        'the network agent of Router edge-1 is not connected',
      ]);
      assert.equal(conditionOf(result, 'Ready')?.reason, 'WaitingForRouter');
    });

    it('keeps the stored status until the router reports after a control-plane restart', () => {
      const ready = converged(network());
      assert.deepEqual(reconcileNetwork(input(ready.network, { observedRouter: undefined })), nothing);
    });

    it('applies again when the router has lost the Network', () => {
      const ready = converged(network());
      const result = reconcileNetwork(input(ready.network, { ...ready.world, observedRouter: {} }));
      assert.equal(applyOf(result).job.object.metadata.generation, 1);
      assert.equal(result.status?.phase, 'Pending');
      assert.equal(conditionOf(result, 'Ready')?.reason, 'Configuring');
    });

    it('stops retrying a generation the router refused, until the spec changes', () => {
      const first = reconcileNetwork(input(network()));
      const placed = stored(network(), first);
      const refused = reconcileNetwork(
        input(placed, { observedRouter: {}, rejection: { generation: 1, message: 'no such uplink eth9' } }),
      );
      assert.deepEqual(refused.jobs, []);
      assert.equal(refused.status?.phase, 'Failed');
      assert.deepEqual(conditionSummary(refused, 'Configured'), [
        'False',
        'ApplyRejected',
        'no such uplink eth9',
      ]);
      assert.deepEqual(refused.events, [
        { type: 'Warning', reason: 'ApplyRejected', message: 'no such uplink eth9' },
      ]);

      // Remembered in status: the shell need not pass the rejection again.
      const failed = stored(placed, refused);
      assert.deepEqual(reconcileNetwork(input(failed, { observedRouter: {} })), nothing);
      const fixed = updated(failed, { egress: true });
      const retried = reconcileNetwork(input(fixed, { observedRouter: {} }));
      assert.equal(applyOf(retried).job.object.metadata.generation, 2);
      assert.equal(retried.status?.phase, 'Pending');
    });

    it('holds back a spec that no longer fits on the Router, and keeps what the router serves', () => {
      const other = placedNetwork('a', 4200, {}, { created: 5 });
      const ready = converged(network(), { networks: [other] });
      const subject = updated(ready.network, { segment: { type: 'vxlan', id: 4200 } });
      const result = reconcileNetwork(input(subject, ready.world));
      const message = 'spec.segment.id: vxlan 4200 is already used by Network other/a on router edge-1';
      assert.deepEqual(result.jobs, []);
      assert.deepEqual(result.status?.segment, { type: 'vxlan', id: 4096 });
      assert.equal(result.status?.phase, 'Ready');
      assert.deepEqual(conditionSummary(result, 'Configured'), ['False', 'AllocationFailed', message]);
      assert.equal(conditionOf(result, 'Ready')?.status, 'True');
      assert.deepEqual(result.events, [{ type: 'Warning', reason: 'AllocationFailed', message }]);
      assert.deepEqual(reconcileNetwork(input(stored(subject, result), ready.world)), nothing);
    });

    it('moves to a segment spec asks for, on the same Router and Hosts', () => {
      const world = { instances: [instance('web', { host: 'hv1' })] };
      const ready = converged(network(), world);
      const subject = updated(ready.network, { segment: { type: 'vxlan', id: 4500 } });
      const result = reconcileNetwork(input(subject, ready.world));
      assert.deepEqual(result.status?.segment, { type: 'vxlan', id: 4500 });
      assert.deepEqual(
        result.jobs.map((j) => [j.job.type, j.agent.name, j.job.object.status.segment.id]),
        [
          ['network.apply', 'edge-1', 4500],
          ['network.attach', 'hv1', 4500],
        ],
      );
    });

    it('of two Networks that recorded one segment, the older keeps it and the newer moves', () => {
      const held = (name: string, created: number) =>
        network(
          name,
          { cidr: `10.${20 + created}.0.0/24` },
          {
            created,
            finalizers: [networkFinalizer],
            status: {
              router: 'edge-1',
              segment: { type: 'vxlan', id: 4096 },
              gateway: `10.${20 + created}.0.1`,
            },
          },
        );
      const older = held('older', 1);
      const newer = held('newer', 2);
      const world = { networks: [older, newer] };

      const kept = reconcileNetwork(input(older, { ...world, observedRouter: {} }));
      assert.deepEqual(kept.status?.segment, { type: 'vxlan', id: 4096 });
      assert.equal(applyOf(kept).job.object.status.segment.id, 4096);

      const moved = reconcileNetwork(input(newer, { ...world, observedRouter: {} }));
      assert.deepEqual(moved.status?.segment, { type: 'vxlan', id: 4097 });
      assert.equal(applyOf(moved).job.object.status.segment.id, 4097);
    });
  });

  describe('hosts', () => {
    const web = (host: string, name = `web-${host}`) => instance(name, { host });

    it('attaches the segment on each connected Host that runs an attached Instance', () => {
      const instances = [
        web('hv2'),
        web('hv1', 'a'),
        web('hv1', 'b'),
        web('hv9'),
        instance('unscheduled'),
        instance('elsewhere', { host: 'hv3', networks: [] }),
        instance('tenant', { host: 'hv3', namespace: 'other' }),
      ];
      const result = reconcileNetwork(input(network(), { instances }));
      const placement = { router: 'edge-1', segment: { type: 'vxlan', id: 4096 }, gateway: '10.20.0.1' };
      assert.deepEqual(
        jobsOf(result, 'network.attach').map((j) => [j.agent, j.job.object.status]),
        [
          [{ role: 'libvirt', name: 'hv1' }, placement],
          [{ role: 'libvirt', name: 'hv2' }, placement],
        ],
      );
      const [attach] = jobsOf(result, 'network.attach');
      assert.deepEqual(attach?.job.object.metadata, {
        name: 'lab',
        namespace: 'default',
        uid: 'uid-default-lab',
        generation: 1,
      });
    });

    it('attaches again on a Host that reports another segment, and not on one that has it', () => {
      const ready = converged(network(), { instances: [web('hv1'), web('hv2')] });
      const observedHosts = new Map([
        ['hv1', { segment: { type: 'vxlan' as const, id: 4096 } }],
        ['hv2', { segment: { type: 'vxlan' as const, id: 17 } }],
      ]);
      const result = reconcileNetwork(input(ready.network, { ...ready.world, observedHosts }));
      assert.deepEqual(
        result.jobs.map((j) => [j.job.type, j.agent.name]),
        [['network.attach', 'hv2']],
      );
    });

    it('detaches the segment from Hosts that no longer run an attached Instance', () => {
      const ready = converged(network(), { instances: [web('hv1'), web('hv2')] });
      const result = reconcileNetwork(
        input(ready.network, {
          ...ready.world,
          instances: [web('hv1'), instance('web-hv2', { host: 'hv2', networks: [] })],
          observedHosts: new Map([
            ['hv1', { segment: { type: 'vxlan', id: 4096 } }],
            ['hv2', { segment: { type: 'vxlan', id: 4096 } }],
            ['hv3', { segment: { type: 'vxlan', id: 99 } }],
          ]),
        }),
      );
      assert.deepEqual(
        result.jobs.map((j) => [j.job.type, j.agent.name, j.job.object.status.segment.id]),
        [
          ['network.detach', 'hv2', 4096],
          // The segment the Host has, so its agent tears down the right device.
          ['network.detach', 'hv3', 99],
        ],
      );
      assert.deepEqual(result.events, []);
      assert.equal(result.status, undefined);
    });

    it('sends Host jobs only to connected agents, and never twice while in flight', () => {
      const world = { instances: [web('hv1'), web('hv2')] };
      const first = reconcileNetwork(input(network(), world));
      const placed = stored(network(), first);
      const [attachHv1] = jobsOf(first, 'network.attach');
      const result = reconcileNetwork(
        input(placed, {
          ...world,
          observedRouter: {},
          inFlight: first.jobs.filter((j) => j !== attachHv1),
          connectedAgents: { network: new Set(['edge-1']), libvirt: new Set(['hv1']) },
        }),
      );
      assert.deepEqual(
        result.jobs.map((j) => [j.job.type, j.agent.name]),
        [['network.attach', 'hv1']],
      );
    });

    it('keeps attaching Hosts while the router is unreachable', () => {
      const ready = converged(network(), { instances: [web('hv1')] });
      const result = reconcileNetwork(
        input(ready.network, {
          ...ready.world,
          instances: [web('hv1'), web('hv2')],
          routers: [router('edge-1', { ready: 'Unknown' })],
        }),
      );
      assert.deepEqual(
        result.jobs.map((j) => [j.job.type, j.agent.name]),
        [['network.attach', 'hv2']],
      );
    });
  });

  describe('unreachable or vanished Router', () => {
    it('marks Ready Unknown while the Router is not Ready, and keeps the phase', () => {
      const ready = converged(network());
      const world = { ...ready.world, routers: [router('edge-1', { ready: 'Unknown' })] };
      const result = reconcileNetwork(input(updated(ready.network, { egress: true }), world));
      const message =
        'Router edge-1 is not Ready (AgentDisconnected: agent disconnected and did not reconnect within 40s)';
      assert.deepEqual(result.jobs, []);
      assert.equal(result.status?.phase, 'Ready');
      assert.equal(result.status?.router, 'edge-1');
      assert.deepEqual(conditionSummary(result, 'Ready'), ['Unknown', 'RouterUnreachable', message]);
      assert.deepEqual(result.events, [{ type: 'Warning', reason: 'RouterUnreachable', message }]);

      // Back: the pending generation goes out, and Ready returns without a new Event.
      const unknown = stored(updated(ready.network, { egress: true }), result);
      const back = reconcileNetwork(input(unknown, ready.world));
      assert.equal(applyOf(back).job.object.metadata.generation, 2);
      assert.equal(conditionOf(back, 'Ready')?.status, 'True');
      assert.deepEqual(back.events, [
        { type: 'Normal', reason: 'Ready', message: 'served by Router edge-1' },
      ]);
    });

    it('says so when the Router is gone, and keeps the Network placed on it', () => {
      const ready = converged(network(), { instances: [instance('web', { host: 'hv1' })] });
      const result = reconcileNetwork(input(ready.network, { ...ready.world, routers: [router('edge-2')] }));
      const message =
        'Router edge-1 no longer exists; the Network stays placed on it. ' +
        'Enroll a router named edge-1 again, or delete the Network and create it anew to place it on another Router.';
      assert.deepEqual(result.jobs, []);
      assert.equal(result.status?.phase, 'Failed');
      assert.equal(result.status?.router, 'edge-1');
      assert.deepEqual(result.status?.segment, { type: 'vxlan', id: 4096 });
      assert.deepEqual(conditionSummary(result, 'Ready'), ['False', 'RouterDeleted', message]);
      assert.deepEqual(result.events, [{ type: 'Warning', reason: 'RouterDeleted', message }]);
    });
  });

  describe('deletion', () => {
    it('without our finalizer: nothing left to do', () => {
      const subject = deleted(network('lab', {}, { finalizers: ['example.com/other'] }));
      assert.deepEqual(reconcileNetwork(input(subject)), nothing);
    });

    it('never placed: the finalizer goes at once', () => {
      const unplaced = stored(network(), reconcileNetwork(input(network(), { routers: [] })));
      assert.deepEqual(reconcileNetwork(input(deleted(unplaced), { routers: [] })), {
        finalizer: 'remove',
        ...nothing,
      });
    });

    it('holds while Instances attach to it, and keeps serving them', () => {
      const names = ['e', 'b', 'd', 'a', 'c'];
      const world = { instances: names.map((name) => instance(name, { host: 'hv1' })) };
      const ready = converged(network(), world);
      const result = reconcileNetwork(input(deleted(ready.network), ready.world));
      const message =
        '5 Instances still attach to the Network (a, b, c and 2 more); it is deleted once none does: delete them or remove it from their spec.networks';
      assert.equal(result.finalizer, undefined);
      assert.deepEqual(result.jobs, []);
      assert.equal(result.status?.phase, 'Terminating');
      assert.deepEqual(conditionSummary(result, 'Terminating'), ['True', 'InstancesAttached', message]);
      assert.equal(conditionOf(result, 'Ready')?.status, 'True');
      assert.deepEqual(result.events, [{ type: 'Warning', reason: 'InstancesAttached', message }]);

      const held = stored(deleted(ready.network), result);
      assert.deepEqual(reconcileNetwork(input(held, ready.world)), nothing);
      // An Instance that gets its address while the Network is held still gets its lease.
      const addressed = reconcileNetwork(
        input(held, {
          ...ready.world,
          instances: [
            instance('a', { host: 'hv1', nic: { ipAddress: '10.20.0.2', mac: '52:54:00:00:00:02' } }),
          ],
        }),
      );
      assert.equal(applyOf(addressed).job.object.leases?.length, 1);
      assert.equal(
        conditionOf(addressed, 'Terminating')?.message,
        '1 Instance still attaches to the Network (a); it is deleted once none does: delete them or remove it from their spec.networks',
      );
    });

    it('holds a Network that was never placed too, without placing it', () => {
      const unplaced = stored(network(), reconcileNetwork(input(network(), { routers: [] })));
      const result = reconcileNetwork(input(deleted(unplaced), { instances: [instance('web')] }));
      assert.equal(result.finalizer, undefined);
      assert.deepEqual(result.jobs, []);
      assert.equal(result.status?.router, undefined);
      assert.equal(result.status?.phase, 'Terminating');
      assert.equal(conditionOf(result, 'Terminating')?.reason, 'InstancesAttached');
    });

    it('deletes it from the router and detaches the Hosts once no Instance attaches, once', () => {
      const ready = converged(network(), { instances: [instance('web', { host: 'hv1' })] });
      const subject = deleted(ready.network);
      const result = reconcileNetwork(input(subject, { ...ready.world, instances: [] }));
      assert.equal(result.finalizer, undefined);
      assert.equal(result.status?.phase, 'Terminating');
      assert.deepEqual(
        result.jobs.map((j) => [j.agent.role, j.agent.name, j.job.type]),
        [
          ['network', 'edge-1', 'network.delete'],
          ['libvirt', 'hv1', 'network.detach'],
        ],
      );
      assert.deepEqual(result.jobs[0]?.job.object, {
        apiVersion: 'loam.dev/v1alpha1',
        kind: 'Network',
        metadata: { name: 'lab', namespace: 'default', uid: 'uid-default-lab', generation: 1 },
        spec: subject.spec,
        status: { router: 'edge-1', segment: { type: 'vxlan', id: 4096 }, gateway: '10.20.0.1' },
      });
      assert.deepEqual(conditionSummary(result, 'Terminating'), [
        'True',
        'Deleting',
        'deleting the Network from Router edge-1',
      ]);
      assert.equal(conditionOf(result, 'Ready')?.reason, 'Terminating');
      assert.deepEqual(result.events, [
        { type: 'Normal', reason: 'Deleting', message: 'deleting the Network from Router edge-1' },
      ]);

      const terminating = stored(subject, result);
      const again = reconcileNetwork(
        input(terminating, { ...ready.world, instances: [], inFlight: result.jobs }),
      );
      assert.deepEqual(again, nothing);
    });

    it('removes the finalizer once the router answers that the Network is gone', () => {
      const ready = converged(network());
      const terminating = deleted(ready.network);
      const gone = { ...ready.world, observedRouter: { deleted: true } };
      assert.deepEqual(reconcileNetwork(input(terminating, gone)), { finalizer: 'remove', ...nothing });
      // Not while a router job is still in flight: it may apply the Network again.
      const apply = reconcileNetwork(input(network())).jobs;
      const waiting = reconcileNetwork(input(terminating, { ...gone, inFlight: apply }));
      assert.equal(waiting.finalizer, undefined);
      assert.equal(jobsOf(waiting, 'network.delete').length, 1);
    });

    it('removes the finalizer at once when the Router is gone', () => {
      const ready = converged(network());
      assert.deepEqual(reconcileNetwork(input(deleted(ready.network), { ...ready.world, routers: [] })), {
        finalizer: 'remove',
        ...nothing,
      });
    });

    it('on an unreachable Router: a condition and a Warning that name the way to force it', () => {
      const ready = converged(network(), { instances: [instance('web', { host: 'hv1' })] });
      const world = {
        ...ready.world,
        instances: [],
        routers: [router('edge-1', { ready: 'Unknown' })],
        connectedAgents: { network: new Set<string>(), libvirt: new Set(['hv1']) },
      };
      const result = reconcileNetwork(input(deleted(ready.network), world));
      const what =
        'Router edge-1 is not Ready (AgentDisconnected: agent disconnected and did not reconnect within 40s)';
      const message =
        `${what}. The Network is deleted once the network agent of edge-1 has removed it; to delete it now and leave its configuration on the router, remove its finalizer: ` +
        `kubectl patch network lab -n default --type json -p '[{"op":"remove","path":"/metadata/finalizers"}]'`;
      assert.equal(result.finalizer, undefined);
      assert.deepEqual(
        result.jobs.map((j) => [j.job.type, j.agent.name]),
        [['network.detach', 'hv1']],
      );
      assert.equal(result.status?.phase, 'Terminating');
      assert.deepEqual(conditionSummary(result, 'Terminating'), ['True', 'RouterUnreachable', message]);
      assert.deepEqual(conditionSummary(result, 'Ready'), ['Unknown', 'RouterUnreachable', what]);
      assert.deepEqual(result.events, [{ type: 'Warning', reason: 'RouterUnreachable', message }]);
    });

    it('waits for a router agent that is away but whose Router is still Ready', () => {
      const ready = converged(network());
      const result = reconcileNetwork(
        input(deleted(ready.network), {
          ...ready.world,
          connectedAgents: { network: new Set(), libvirt: new Set() },
        }),
      );
      assert.deepEqual(result.jobs, []);
      assert.deepEqual(conditionSummary(result, 'Terminating'), [
        'True',
        'WaitingForRouter',
        'waiting for the network agent of Router edge-1 to reconnect to delete the Network',
      ]);
    });
  });
});
