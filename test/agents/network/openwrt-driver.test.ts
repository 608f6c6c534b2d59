/**
 * The openwrt driver against a test double of rpcd's ubus JSON-RPC (rpcd-double.ts) on loopback,
 * pre-seeded with stock OpenWrt configs: only loam_ sections change, changes are applied with
 * rollback and confirmed, a change whose confirm never arrives is undone by the router, and the
 * metrics read the router's WireGuard peers and DHCP leases through LuCI's rpcd backends.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { pino } from 'pino';
import { OpenWrtRouterDriver } from '../../../agents/network/drivers/openwrt.js';
import { RpcdTransport } from '../../../agents/network/drivers/rpcd-transport.js';
import { networkId, type RouterSettings } from '../../../agents/network/model.js';
import { ownedByLoam } from '../../../agents/network/uci.js';
import { parseUci, type UciSection } from '../../../agents/network/uci-format.js';
import type { AgentJob, JobOutcome } from '../../../agents/runtime/driver.js';
import { agentMetrics } from '../../../agents/runtime/metrics.js';
import type { ObservedNetwork, RouterPeer } from '../../../controllers/network/reconcile.js';
import { generateKeyPair, publicKeyOf } from '../../../controllers/wireguardpeer/client-config.js';
import { sample } from './exposition.js';
import { stockConfig } from './fixtures.js';
import { latestGeneration, networkApplyJob, networkDeleteJob } from './jobs.js';
import { nullSession, RpcdDouble } from './rpcd-double.js';

const tenant = 'acme';
const configs = ['network', 'dhcp', 'firewall'] as const;
function applyJob(
  name: string,
  spec: Record<string, unknown>,
  segment: number,
  peers: RouterPeer[] = [],
): AgentJob {
  const address = String(spec.cidr).replace(/\.0\/\d+$/, '.10');
  const leases = [{ instance: 'vm1', mac: '52:54:00:00:00:01', address }];
  return networkApplyJob({ tenant, name, spec, segment, driver: 'openwrt', leases, peers });
}

function deleteJob(name: string): AgentJob {
  return networkDeleteJob(tenant, name);
}

function idOf(name: string): string {
  return networkId({ metadata: { namespace: tenant, name } } as never);
}

function users(sections: UciSection[]): UciSection[] {
  return sections.filter((s) => !ownedByLoam(s));
}

/** A JSON-RPC call straight to the double. */
async function rpc(
  url: string,
  session: string,
  object: string,
  method: string,
  args: object,
): Promise<unknown> {
  const res = await fetch(url, {
    method: 'POST',
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'call', params: [session, object, method, args] }),
  });
  const body = (await res.json()) as { result?: unknown; error?: unknown };
  return body.error ?? body.result;
}

describe('openwrt network driver (against a test double of rpcd)', function () {
  this.timeout(30_000);
  const tempDir = mkdtempSync(join(tmpdir(), 'loam-openwrt-'));
  const stateDir = join(tempDir, 'state');
  const passwordFile = join(tempDir, 'password');
  const settings: RouterSettings = { wan: 'wan', vxlan: { port: 4789, remotes: ['192.0.2.11'] }, stateDir };
  const logs: string[] = [];
  const logger = pino({ level: 'trace' }, { write: (line: string) => logs.push(line) });
  const observed: unknown[] = [];
  const stock = Object.fromEntries(configs.map((c) => [c, stockConfig(c)]));
  const laptop = generateKeyPair();
  const peers = [
    { peer: 'laptop', publicKey: laptop.publicKey, address: '10.90.0.2', allowedIPs: ['10.90.0.2/32'] },
  ];
  const webSpec = { cidr: '10.10.0.0/24', wireguard: { cidr: '10.90.0.0/24', port: 51820 } };
  let double: RpcdDouble;
  let url: string;
  let driver: OpenWrtRouterDriver;
  /** The first driver's metrics, in a registry as the agent's, and the codes of the jobs it answered. */
  const { registry } = agentMetrics();
  const codes: status[] = [];

  function makeDriver(options: { rollbackTimeoutS?: number; password?: string } = {}): OpenWrtRouterDriver {
    let file = passwordFile;
    if (options.password !== undefined) {
      file = join(tempDir, 'other-password');
      writeFileSync(file, `${options.password}\n`);
    }
    return new OpenWrtRouterDriver({
      settings,
      transport: new RpcdTransport({ url, user: 'root', passwordFile: file, requestTimeoutMs: 5_000 }),
      wireguardEndpoint: 'vpn.example.com',
      rollbackTimeoutS: options.rollbackTimeoutS ?? 30,
      logger,
    });
  }

  async function handle(job: AgentJob, on = driver): Promise<JobOutcome> {
    const outcome = await on.handle(job, AbortSignal.timeout(20_000));
    observed.push(outcome.observed);
    if (on === driver) codes.push(outcome.code);
    return outcome;
  }

  before(async () => {
    writeFileSync(passwordFile, 'secret\n');
    double = new RpcdDouble({ users: { root: 'secret' }, files: stock });
    url = await double.start();
    driver = makeDriver();
    driver.registerMetrics(registry);
    await driver.start({ inventoryChanged: () => {}, lifecycle: () => {} });
  });

  after(async () => {
    await double.close();
    rmSync(tempDir, { recursive: true, force: true });
  });

  it('applies a VXLAN Network as loam_ sections, with rollback and confirm, leaving the user’s sections alone', async () => {
    const confirmed = once(double, 'confirm');
    const outcome = await handle(applyJob('web', webSpec, 4096, peers));
    assert.equal(outcome.code, status.OK, outcome.message);
    await confirmed;
    const id = idOf('web');
    const names = (config: string) =>
      double
        .sections(config)
        .filter(ownedByLoam)
        .map((s) => s.name);
    assert.deepEqual(names('network').sort(), [
      `loam_${id}`,
      `loam_${id}_br`,
      `loam_${id}_vx`,
      `loam_${id}_vx_192_0_2_11`,
      `loam_${id}_wg`,
      `loam_${id}_wg_laptop`,
    ]);
    assert.deepEqual(names('dhcp').sort(), [`loam_${id}`, `loam_${id}_vm1`]);
    assert.ok(names('firewall').includes(`loam_${id}`), 'the firewall zone');
    for (const config of configs) {
      assert.deepEqual(users(double.sections(config)), users(parseUci(stock[config] ?? '')), config);
    }
    const wg = double.sections('network').find((s) => s.name === `loam_${id}_wg`);
    const privateKey = wg?.options.private_key;
    assert.equal(typeof privateKey, 'string');
    assert.deepEqual(outcome.observed, {
      generation: latestGeneration(),
      configHash: `hash-${latestGeneration()}`,
      wireguard: { publicKey: publicKeyOf(privateKey as string), endpoint: 'vpn.example.com:51820' },
      peers: ['laptop'],
      leases: ['52:54:00:00:00:01=10.10.0.10'],
    } satisfies ObservedNetwork);
    // LuCI's flow: staged, applied with rollback, confirmed; never committed.
    const methods = double.writes().map((call) => call.method);
    assert.ok(!methods.includes('commit'));
    assert.deepEqual(methods.slice(-2), ['apply', 'confirm']);
    assert.deepEqual(double.writes().at(-2)?.args, { rollback: true, timeout: 30 });
  });

  it('stages nothing when the same configuration is applied again', async () => {
    const before = double.calls.length;
    const outcome = await handle(applyJob('web', webSpec, 4096, peers));
    assert.equal(outcome.code, status.OK, outcome.message);
    const calls = double.calls.slice(before).map((call) => `${call.object} ${call.method}`);
    assert.deepEqual(calls, ['uci get', 'uci get', 'uci get']);
  });

  it('removes a deleted Network’s loam_ sections and nothing else', async () => {
    assert.equal((await handle(applyJob('db', { cidr: '10.20.0.0/24' }, 4097))).code, status.OK);
    const db = idOf('db');
    const web = idOf('web');
    assert.ok(double.sections('network').some((s) => s.name === `loam_${db}`));
    const outcome = await handle(deleteJob('db'));
    assert.equal(outcome.code, status.OK, outcome.message);
    assert.deepEqual(outcome.observed, { deleted: true });
    for (const config of configs) {
      const sections = double.sections(config);
      assert.ok(!sections.some((s) => s.name?.startsWith(`loam_${db}`)), `${config} keeps nothing of db`);
      assert.ok(
        sections.some((s) => s.name?.startsWith(`loam_${web}`)),
        `${config} keeps web`,
      );
      assert.deepEqual(users(sections), users(parseUci(stock[config] ?? '')), config);
    }
    assert.deepEqual(
      (await driver.inventory()).map((item) => item.ref.name),
      ['web'],
    );
  });

  it('answers a wrong password with a clear error, changing nothing', async () => {
    const files = new Map(double.files);
    const outcome = await handle(
      applyJob('db', { cidr: '10.20.0.0/24' }, 4097),
      makeDriver({ password: 'hunter2' }),
    );
    assert.equal(outcome.code, status.UNAUTHENTICATED);
    assert.match(
      outcome.message ?? '',
      /refused the login of root: wrong user or password \(ubus status 6\)/,
    );
    assert.doesNotMatch(outcome.message ?? '', /hunter2/);
    assert.deepEqual(double.files, files);
    const [condition] = await makeDriver({ password: 'hunter2' }).conditions();
    assert.deepEqual(
      [condition?.type, condition?.status, condition?.reason, condition?.required],
      ['UciReachable', 'False', 'RpcdLoginRefused', true],
    );
    assert.match(condition?.message ?? '', /refused the login of root/);
  });

  it('is rolled back by the router when the agent loses it before the confirm, answering UNAVAILABLE', async () => {
    const files = new Map(double.files);
    const lossy = makeDriver({ rollbackTimeoutS: 1 });
    double.loseAfterApply = true;
    const rolledBack = once(double, 'rollback');
    let outcome: JobOutcome;
    try {
      outcome = await handle(applyJob('lost', { cidr: '10.30.0.0/24' }, 4098), lossy);
      // The change was live until the router gave up waiting for the confirm.
      assert.deepEqual(await rolledBack, ['timeout']);
    } finally {
      double.loseAfterApply = false;
      double.unreachable = false;
    }
    assert.equal(outcome.code, status.UNAVAILABLE);
    assert.match(
      outcome.message ?? '',
      /lost the router after uci apply .*restores the previous configuration/,
    );
    assert.deepEqual(double.files, files);
    // As rpcd does: the changes are the session's pending edits again.
    const apply = double.calls.filter((call) => call.method === 'apply').at(-1);
    assert.ok((double.staged(apply?.session ?? '').network ?? []).length > 0);
    assert.deepEqual(
      (await lossy.inventory()).map((item) => item.ref.name),
      ['web'],
    );
    // The next job starts afresh and succeeds.
    assert.equal((await handle(applyJob('web', webSpec, 4096, peers))).code, status.OK);
    assert.deepEqual(double.files, files);
  });

  it('serves the stored Networks after a restart without changing the router', async () => {
    const before = double.writes().length;
    const restarted = makeDriver();
    await restarted.start({ inventoryChanged: () => {}, lifecycle: () => {} });
    assert.equal(double.writes().length, before);
    const inventory = await restarted.inventory();
    assert.deepEqual(
      inventory.map((item) => [item.ref.kind, item.ref.namespace, item.ref.name]),
      [['Network', tenant, 'web']],
    );
    assert.deepEqual((inventory[0]?.observed as ObservedNetwork | undefined)?.peers, ['laptop']);
    assert.deepEqual(await restarted.conditions(), [
      {
        type: 'UciReachable',
        required: true,
        status: 'True',
        reason: 'UciAnswers',
        message: `rpcd at ${url} reads the router's network, dhcp and firewall configs`,
      },
    ]);
    assert.deepEqual(await restarted.facts(), {
      driver: 'openwrt',
      openwrtVersion: '23.05.5',
      model: 'Loam test double',
    });
  });

  it('exports the metrics of the linux driver, reading WireGuard peers and DHCP leases through rpcd', async () => {
    const id = idOf('web');
    const now = Math.floor(Date.now() / 1000);
    const stranger = generateKeyPair();
    double.wireguardDump = [
      [`loam_${id}_wg`, '(private key)', 'ServerPublicKey=', '51820', 'off'],
      [
        `loam_${id}_wg`,
        laptop.publicKey,
        '(none)',
        '198.51.100.2:40000',
        '10.90.0.2/32',
        '1767225600',
        '2468',
        '1357',
        'off',
      ],
      // A peer the router has that Loam did not configure, and the user's own interface.
      [`loam_${id}_wg`, stranger.publicKey, '(none)', '(none)', '10.90.0.9/32', '0', '0', '0', 'off'],
      ['vpn', '(private key)', 'UserPublicKey=', '51821', 'off'],
      ['vpn', laptop.publicKey, '(none)', '(none)', '10.200.0.2/32', '1767225000', '1', '2', 'off'],
    ]
      .map((fields) => fields.join('\t'))
      .join('\n');
    double.dhcpLeases = [
      `${now + 3600} 52:54:00:00:00:01 10.10.0.10 vm1 01:52:54:00:00:00:01`,
      `${now - 10} 52:54:00:00:00:02 10.10.0.11 * *`,
      '0 52:54:00:00:00:03 10.10.0.12 * *',
      `${now + 3600} 00:11:22:33:44:55 192.168.1.20 printer *`,
      `${now + 3600} 1234 2001:db8::10 vm1 00:01:00:01`,
    ].join('\n');

    const exposition = await registry.metrics();
    const web = { namespace: tenant, network: 'web' };
    const peer = { ...web, peer: 'laptop' };
    assert.equal(sample(exposition, 'loam_network_applied_generation', web), latestGeneration(), exposition);
    assert.equal(
      sample(exposition, 'loam_network_applied_generation', { namespace: tenant, network: 'db' }),
      undefined,
    );
    assert.equal(sample(exposition, 'loam_network_dhcp_static_leases', web), 1);
    // 10.10.0.10 and the lease that never expires; not the expired one, nor the LAN's printer.
    assert.equal(sample(exposition, 'loam_network_dhcp_leases', web), 2);
    assert.equal(sample(exposition, 'loam_wireguard_peer_latest_handshake_seconds', peer), 1767225600);
    assert.equal(sample(exposition, 'loam_wireguard_peer_receive_bytes_total', peer), 2468);
    assert.equal(sample(exposition, 'loam_wireguard_peer_transmit_bytes_total', peer), 1357);
    assert.doesNotMatch(exposition, /^loam_wireguard_peer_\w+\{[^}]*peer="(?!laptop)/m, 'only Loam’s peers');
    const results = { ok: 0, refused: 0, failed: 0 };
    for (const code of codes) {
      results[code === status.OK ? 'ok' : code === status.INVALID_ARGUMENT ? 'refused' : 'failed'] += 1;
    }
    assert.ok(results.ok > 0);
    for (const [result, total] of Object.entries(results)) {
      assert.equal(sample(exposition, 'loam_router_apply_total', { result }), total, result);
    }
    const calls = double.calls.filter((call) => call.object !== 'uci' && call.object !== 'session');
    assert.deepEqual(
      calls
        .slice(-2)
        .map((call) => `${call.object} ${call.method}`)
        .sort(),
      ['luci-rpc getDHCPLeases', 'luci.wireguard getWgInstances'],
      'one read of each per scrape',
    );

    // Without the router, a scrape still answers, without the router's numbers.
    double.unreachable = true;
    try {
      const without = await registry.metrics();
      assert.equal(sample(without, 'loam_network_applied_generation', web), latestGeneration());
      assert.equal(sample(without, 'loam_network_dhcp_leases', web), undefined);
      assert.equal(sample(without, 'loam_wireguard_peer_latest_handshake_seconds', peer), undefined);
    } finally {
      double.unreachable = false;
    }
  });

  it('never logs, reports or stores the router’s private key', () => {
    const wg = double.sections('network').find((s) => s.name === `loam_${idOf('web')}_wg`);
    const privateKey = String(wg?.options.private_key);
    assert.equal(privateKey.length, 44);
    assert.ok(logs.length > 0);
    assert.ok(!logs.join('').includes(privateKey), 'not in the logs');
    assert.ok(!JSON.stringify(observed).includes(privateKey), 'not in what jobs answer');
    const stored = readdirSync(join(stateDir, 'networks')).map((f) =>
      readFileSync(join(stateDir, 'networks', f), 'utf8'),
    );
    assert.ok(!stored.join('').includes(privateKey), 'not in stateDir');
  });
});

describe('rpcd test double', () => {
  let double: RpcdDouble;
  let url: string;
  let session: string;

  before(async () => {
    double = new RpcdDouble({ users: { root: 'secret' }, files: { network: stockConfig('network') } });
    url = await double.start();
  });

  after(() => double.close());

  it('logs in with the null session, refuses a wrong password and denies calls without a session', async () => {
    assert.deepEqual(
      await rpc(url, nullSession, 'session', 'login', { username: 'root', password: 'nope' }),
      [6],
    );
    const [code, data] = (await rpc(url, nullSession, 'session', 'login', {
      username: 'root',
      password: 'secret',
    })) as [number, { ubus_rpc_session: string; timeout: number }];
    assert.equal(code, 0);
    assert.match(data.ubus_rpc_session, /^[0-9a-f]{32}$/);
    assert.equal(data.timeout, 300);
    session = data.ubus_rpc_session;
    assert.deepEqual(await rpc(url, nullSession, 'uci', 'get', { config: 'network' }), {
      code: -32002,
      message: 'Access denied',
    });
  });

  it('stages changes in the session; commit during a pending apply is refused, apply after a commit has nothing to do', async () => {
    const file = double.files.get('network');
    const values = { proto: 'static' };
    assert.deepEqual(
      await rpc(url, session, 'uci', 'add', { config: 'network', type: 'interface', name: 'x' }),
      [0, { section: 'x' }],
    );
    assert.deepEqual(await rpc(url, session, 'uci', 'set', { config: 'network', section: 'x', values }), [0]);
    assert.deepEqual(await rpc(url, session, 'uci', 'changes', { config: 'network' }), [
      0,
      {
        changes: [
          ['set', 'x', 'interface'],
          ['set', 'x', 'proto', 'static'],
        ],
      },
    ]);
    assert.equal(double.files.get('network'), file);
    assert.deepEqual(await rpc(url, session, 'uci', 'confirm', {}), [5]);
    assert.deepEqual(await rpc(url, session, 'uci', 'apply', { rollback: true, timeout: 60 }), [0]);
    assert.ok(double.sections('network').some((s) => s.name === 'x'));
    assert.deepEqual(await rpc(url, session, 'uci', 'commit', { config: 'network' }), [6]);
    assert.deepEqual(await rpc(url, session, 'uci', 'rollback', {}), [0]);
    assert.equal(double.files.get('network'), file);
    assert.deepEqual(await rpc(url, session, 'uci', 'commit', { config: 'network' }), [0]);
    assert.ok(double.sections('network').some((s) => s.name === 'x'));
    assert.deepEqual(await rpc(url, session, 'uci', 'apply', { rollback: true, timeout: 60 }), [5]);
  });

  it('answers luci-rpc getDHCPLeases and luci.wireguard getWgInstances as LuCI’s backends do', async () => {
    const now = Math.floor(Date.now() / 1000);
    double.dhcpLeases = [
      `${now + 100} 52:54:00:aa:bb:cc 10.10.0.10 vm1 01:52:54:00:aa:bb:cc`,
      `${now - 100} 52:54:00:aa:bb:cd 10.10.0.11 * *`,
      '0 52:54:00:aa:bb:ce 10.10.0.12 * *',
    ].join('\n');
    const [code, data] = (await rpc(url, session, 'luci-rpc', 'getDHCPLeases', { family: 4 })) as [
      number,
      { dhcp_leases: { expires: number | boolean }[] },
    ];
    assert.equal(code, 0);
    const [first, ...rest] = data.dhcp_leases;
    assert.ok(typeof first?.expires === 'number' && first.expires > 90 && first.expires <= 100);
    assert.deepEqual(first, {
      expires: first?.expires,
      hostname: 'vm1',
      macaddr: '52:54:00:AA:BB:CC',
      duid: '01:52:54:00:aa:bb:cc',
      ipaddr: '10.10.0.10',
    });
    assert.deepEqual(rest, [
      { expires: 0, macaddr: '52:54:00:AA:BB:CD', ipaddr: '10.10.0.11' },
      { expires: false, macaddr: '52:54:00:AA:BB:CE', ipaddr: '10.10.0.12' },
    ]);
    assert.deepEqual(await rpc(url, session, 'luci-rpc', 'getDHCPLeases', { family: 5 }), [2]);

    double.wireguardDump = [
      'wg0\tPRIV=\tPUB=\t51820\toff',
      'wg0\tPEER=\t(none)\t(none)\t10.0.0.2/32\t0\t0\t0\toff',
    ].join('\n');
    assert.deepEqual(await rpc(url, session, 'luci.wireguard', 'getWgInstances', {}), [
      0,
      {
        wg0: {
          name: 'wg0',
          public_key: 'PUB=',
          listen_port: '51820',
          fwmark: 'off',
          peers: [
            {
              public_key: 'PEER=',
              endpoint: '(none)',
              allowed_ips: [],
              latest_handshake: '0',
              transfer_rx: '0',
              transfer_tx: '0',
              persistent_keepalive: 'off',
            },
          ],
        },
      },
    ]);
  });
});
