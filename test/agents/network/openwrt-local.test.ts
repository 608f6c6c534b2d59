/**
 * The openwrt driver with its local transport, as on the router itself, against a test double of
 * the `uci` command (uci-cli-double.ts) over config files in a temporary directory, and shell
 * script doubles of the init scripts, `wg` and `ubus`: only loam_ sections change, the user's
 * config stays byte for byte, a service that does not take the new config gets the old one back,
 * and the metrics read `wg show all dump` and dnsmasq's lease file.
 *
 * uci commit rewrites a whole config file in uci's own format, as every OpenWrt tool does, so the
 * configs start as uci writes them (the fixtures hold hand edits uci would not keep).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { pino } from 'pino';
import { LocalUciTransport } from '../../../agents/network/drivers/local-transport.js';
import { OpenWrtRouterDriver } from '../../../agents/network/drivers/openwrt.js';
import { networkId, type RouterSettings } from '../../../agents/network/model.js';
import { ownedByLoam } from '../../../agents/network/uci.js';
import { mergeUci, parseUci, serializeUci } from '../../../agents/network/uci-format.js';
import type { AgentJob, JobOutcome } from '../../../agents/runtime/driver.js';
import { agentMetrics } from '../../../agents/runtime/metrics.js';
import type { ObservedNetwork } from '../../../controllers/network/reconcile.js';
import { generateKeyPair, publicKeyOf } from '../../../controllers/wireguardpeer/client-config.js';
import { sample } from './exposition.js';
import { stockConfig } from './fixtures.js';
import { latestGeneration, networkApplyJob, networkDeleteJob } from './jobs.js';
import { UciCliDouble } from './uci-cli-double.js';

const tenant = 'local';
const configs = ['network', 'dhcp', 'firewall'] as const;

function idOf(name: string): string {
  return networkId({ metadata: { namespace: tenant, name } } as never);
}

/** The file without Loam's sections: what must stay as it was, byte for byte. */
function userPart(text: string): string {
  return mergeUci(text, [], ownedByLoam);
}

function script(path: string, lines: string[]): string {
  writeFileSync(path, ['#!/bin/sh', ...lines, ''].join('\n'));
  chmodSync(path, 0o755);
  return path;
}

describe('openwrt network driver (local uci transport, against a test double of the uci command)', function () {
  this.timeout(60_000);
  const tempDir = mkdtempSync(join(tmpdir(), 'loam-openwrt-local-'));
  const stateDir = join(tempDir, 'state');
  const routerDir = join(tempDir, 'router');
  const leaseFile = join(routerDir, 'dhcp.leases');
  const settings: RouterSettings = { wan: 'wan', vxlan: { port: 4789, remotes: ['192.0.2.11'] }, stateDir };
  const laptop = generateKeyPair();
  const peers = [
    { peer: 'laptop', publicKey: laptop.publicKey, address: '10.91.0.2', allowedIPs: ['10.91.0.2/32'] },
  ];
  const webSpec = { cidr: '10.11.0.0/24', wireguard: { cidr: '10.91.0.0/24', port: 51820 } };
  const lease = { instance: 'vm1', mac: '52:54:00:00:01:01', address: '10.11.0.10' };
  const applyWeb = () => {
    const job = networkApplyJob({
      tenant,
      name: 'web',
      spec: webSpec,
      segment: 4200,
      driver: 'openwrt',
      leases: [lease],
      peers,
    });
    webGeneration = latestGeneration();
    return job;
  };
  const applyDb = () =>
    networkApplyJob({ tenant, name: 'db', spec: { cidr: '10.21.0.0/24' }, segment: 4201, driver: 'openwrt' });
  const logs: string[] = [];
  const logger = pino({ level: 'trace' }, { write: (line: string) => logs.push(line) });
  const { registry } = agentMetrics();
  /** The configs as uci writes them, the dnsmasq lease file in the test's directory. */
  const seed = Object.fromEntries(
    configs.map((config) => [
      config,
      serializeUci(parseUci(stockConfig(config).replace("'/tmp/dhcp.leases'", `'${leaseFile}'`))),
    ]),
  );
  /** The generation of the last web applied. */
  let webGeneration = 0;
  let double: UciCliDouble;
  let transport: LocalUciTransport;
  let driver: OpenWrtRouterDriver;

  function files(): Record<string, string> {
    return Object.fromEntries(configs.map((config) => [config, double.file(config)]));
  }

  /** The services reloaded so far, in order. */
  function reloads(): string[] {
    try {
      return readFileSync(join(routerDir, 'reloads.log'), 'utf8').split('\n').filter(Boolean);
    } catch {
      return [];
    }
  }

  /** The uci commands run so far, without their options. */
  function uciCommands(): string[] {
    return double.calls().map((argv) => {
      const words: string[] = [];
      for (let i = 0; i < argv.length; i++) {
        if (argv[i] === '-c') i++;
        else if (!argv[i]?.startsWith('-')) words.push(argv[i] ?? '');
      }
      return words.join(' ');
    });
  }

  function uci(...args: string[]): string {
    return execFileSync(double.command, ['-c', double.configDir, ...args], {
      encoding: 'utf8',
      timeout: 10_000,
    });
  }

  async function handle(job: AgentJob): Promise<JobOutcome> {
    return driver.handle(job, AbortSignal.timeout(30_000));
  }

  before(async () => {
    double = UciCliDouble.create(routerDir, seed);
    // The init scripts: each logs its reload, and fails while its config holds what reject-<config> says.
    const service = script(join(routerDir, 'service'), [
      `echo "$1" >> ${JSON.stringify(join(routerDir, 'reloads.log'))}`,
      `reject=${JSON.stringify(routerDir)}/reject-$1`,
      `if [ -e "$reject" ] && grep -qF -- "$(cat "$reject")" ${JSON.stringify(double.configDir)}/$1; then`,
      '  echo "$1: the new configuration does not load" >&2',
      '  exit 1',
      'fi',
    ]);
    const wg = script(join(routerDir, 'wg'), [
      '[ "$*" = "show all dump" ] || exit 1',
      `cat ${JSON.stringify(join(routerDir, 'wg-dump'))}`,
    ]);
    const ubus = script(join(routerDir, 'ubus'), [
      '[ "$*" = "call system board" ] || exit 1',
      `echo '{"hostname":"OpenWrt","model":"Loam test double","release":{"version":"23.05.5"}}'`,
    ]);
    transport = new LocalUciTransport({
      uciCommand: double.command,
      configDir: double.configDir,
      wgCommand: wg,
      ubusCommand: ubus,
      reloadCommands: {
        network: [service, 'network'],
        dhcp: [service, 'dhcp'],
        firewall: [service, 'firewall'],
      },
      commandTimeoutMs: 20_000,
    });
    driver = new OpenWrtRouterDriver({ settings, transport, wireguardEndpoint: 'vpn.example.com', logger });
    driver.registerMetrics(registry);
    await driver.start({ inventoryChanged: () => {}, lifecycle: () => {} });
  });

  after(() => rmSync(tempDir, { recursive: true, force: true }));

  it('applies a Network as loam_ sections in one uci batch and commit, reloads its services, and keeps the user’s config byte for byte', async () => {
    const outcome = await handle(applyWeb());
    assert.equal(outcome.code, status.OK, outcome.message);
    const id = idOf('web');
    const names = (config: string) =>
      double
        .sections(config)
        .filter(ownedByLoam)
        .map((s) => s.name)
        .sort();
    assert.deepEqual(names('network'), [
      `loam_${id}`,
      `loam_${id}_br`,
      `loam_${id}_vx`,
      `loam_${id}_vx_192_0_2_11`,
      `loam_${id}_wg`,
      `loam_${id}_wg_laptop`,
    ]);
    assert.deepEqual(names('dhcp'), [`loam_${id}`, `loam_${id}_vm1`]);
    assert.ok(names('firewall').includes(`loam_${id}`), 'the firewall zone');
    for (const config of configs)
      assert.equal(userPart(double.file(config)), userPart(seed[config] ?? ''), config);
    assert.ok(!double.file('network').includes('loam_oldnet'), 'stale loam_ sections are gone');

    const privateKey = double.sections('network').find((s) => s.name === `loam_${id}_wg`)
      ?.options.private_key;
    assert.equal(typeof privateKey, 'string');
    assert.deepEqual(outcome.observed, {
      generation: latestGeneration(),
      configHash: `hash-${latestGeneration()}`,
      wireguard: { publicKey: publicKeyOf(privateKey as string), endpoint: 'vpn.example.com:51820' },
      peers: ['laptop'],
      leases: [`${lease.mac}=${lease.address}`],
    } satisfies ObservedNetwork);
    assert.ok(!logs.join('').includes(privateKey as string), 'the key is never logged');

    const commands = uciCommands();
    assert.deepEqual(
      commands.filter((c) => !/^(export|changes)\b/.test(c)),
      ['batch'],
      'one batch, committing in it',
    );
    assert.deepEqual(reloads(), ['network', 'dhcp', 'firewall']);
    for (const config of configs)
      assert.equal(uci('-q', 'changes', config), '', `nothing of ${config} is left pending`);
  });

  it('changes nothing when the same configuration is applied again', async () => {
    const before = files();
    const calls = double.calls().length;
    const reloaded = reloads().length;
    const outcome = await handle(applyWeb());
    assert.equal(outcome.code, status.OK, outcome.message);
    assert.deepEqual(files(), before);
    assert.deepEqual(uciCommands().slice(calls), ['export network', 'export dhcp', 'export firewall']);
    assert.equal(reloads().length, reloaded);
  });

  it('gives the services their previous configuration back when one does not take the new one', async () => {
    const before = files();
    writeFileSync(join(routerDir, 'reject-firewall'), `loam_${idOf('db')}`);
    const reloaded = reloads().length;
    let outcome: JobOutcome;
    try {
      outcome = await handle(applyDb());
    } finally {
      rmSync(join(routerDir, 'reject-firewall'));
    }
    assert.equal(outcome.code, status.UNAVAILABLE);
    assert.match(
      outcome.message ?? '',
      /firewall: the new configuration does not load; restored the previous network, dhcp, firewall configuration/,
    );
    assert.deepEqual(files(), before);
    assert.deepEqual(reloads().slice(reloaded), [
      'network',
      'dhcp',
      'firewall',
      'network',
      'dhcp',
      'firewall',
    ]);
    assert.deepEqual(
      (await driver.inventory()).map((item) => item.ref.name),
      ['web'],
    );
  });

  it('does not commit someone’s uncommitted changes with its own', async () => {
    uci('set', 'network.lan.ipaddr=192.168.9.1');
    const before = files();
    try {
      const outcome = await handle(applyDb());
      assert.equal(outcome.code, status.UNAVAILABLE);
      assert.match(
        outcome.message ?? '',
        /uncommitted changes to network are pending \(uci changes\); commit or revert them first/,
      );
      assert.deepEqual(files(), before);
      assert.equal(uci('changes', 'network'), "network.lan.ipaddr='192.168.9.1'\n", 'still theirs to commit');
    } finally {
      uci('revert', 'network');
    }
    const outcome = await handle(applyDb());
    assert.equal(outcome.code, status.OK, outcome.message);
    assert.ok(double.sections('network').some((s) => s.name === `loam_${idOf('db')}`));
  });

  it('removes a deleted Network’s loam_ sections and nothing else', async () => {
    const outcome = await handle(networkDeleteJob(tenant, 'db'));
    assert.equal(outcome.code, status.OK, outcome.message);
    for (const config of configs) {
      const text = double.file(config);
      assert.ok(!text.includes(`loam_${idOf('db')}`), `${config} keeps nothing of db`);
      assert.ok(text.includes(`loam_${idOf('web')}`), `${config} keeps web`);
      assert.equal(userPart(text), userPart(seed[config] ?? ''), config);
    }
  });

  it('undoes an apply not confirmed yet at once when asked', async () => {
    const before = files();
    const reloaded = reloads().length;
    await transport.apply(
      [{ verb: 'set', config: 'network', section: 'loam_probe', value: 'interface' }],
      { rollbackTimeoutS: 30 },
      AbortSignal.timeout(20_000),
    );
    assert.ok(double.sections('network').some((s) => s.name === 'loam_probe'));
    await transport.rollback();
    assert.deepEqual(files(), before);
    assert.deepEqual(reloads().slice(reloaded), ['network', 'network']);
  });

  it('exports the metrics of the linux driver from `wg show all dump` and dnsmasq’s lease file', async () => {
    const id = idOf('web');
    const now = Math.floor(Date.now() / 1000);
    writeFileSync(
      join(routerDir, 'wg-dump'),
      [
        [`loam_${id}_wg`, '(private key)', 'ServerPublicKey=', '51820', 'off'],
        [
          `loam_${id}_wg`,
          laptop.publicKey,
          '(none)',
          '198.51.100.2:40000',
          '10.91.0.2/32',
          '1767225600',
          '2468',
          '1357',
          'off',
        ],
        ['vpn', '(private key)', 'UserPublicKey=', '51821', 'off'],
      ]
        .map((fields) => `${fields.join('\t')}\n`)
        .join(''),
    );
    writeFileSync(
      leaseFile,
      [
        `${now + 3600} 52:54:00:00:01:01 10.11.0.10 vm1 01:52:54:00:00:01:01`,
        `${now - 10} 52:54:00:00:01:02 10.11.0.11 * *`,
        `${now + 3600} 00:11:22:33:44:55 192.168.1.20 printer *`,
        '',
      ].join('\n'),
    );
    const exposition = await registry.metrics();
    const web = { namespace: tenant, network: 'web' };
    const peer = { ...web, peer: 'laptop' };
    assert.equal(sample(exposition, 'loam_network_applied_generation', web), webGeneration, exposition);
    assert.equal(sample(exposition, 'loam_network_applied_generation', { ...web, network: 'db' }), undefined);
    assert.equal(sample(exposition, 'loam_network_dhcp_static_leases', web), 1);
    assert.equal(sample(exposition, 'loam_network_dhcp_leases', web), 1);
    assert.equal(sample(exposition, 'loam_wireguard_peer_latest_handshake_seconds', peer), 1767225600);
    assert.equal(sample(exposition, 'loam_wireguard_peer_receive_bytes_total', peer), 2468);
    assert.equal(sample(exposition, 'loam_wireguard_peer_transmit_bytes_total', peer), 1357);
    // web twice and db once; db refused by the firewall and by the pending changes.
    assert.equal(sample(exposition, 'loam_router_apply_total', { result: 'ok' }), 4);
    assert.equal(sample(exposition, 'loam_router_apply_total', { result: 'failed' }), 2);
    assert.equal(sample(exposition, 'loam_router_apply_total', { result: 'refused' }), 0);
  });

  it('says what the board is; UciReachable, required, says what is missing where no uci runs', async () => {
    assert.deepEqual(await driver.facts(), {
      driver: 'openwrt',
      openwrtVersion: '23.05.5',
      model: 'Loam test double',
    });
    assert.deepEqual(await driver.conditions(), [
      {
        type: 'UciReachable',
        required: true,
        status: 'True',
        reason: 'UciAnswers',
        message: "uci reads the router's network, dhcp and firewall configs",
      },
    ]);

    const elsewhere = (options: ConstructorParameters<typeof LocalUciTransport>[0]) =>
      new OpenWrtRouterDriver({
        settings: { ...settings, stateDir: join(tempDir, 'elsewhere') },
        transport: new LocalUciTransport(options),
      });
    const noUci = elsewhere({ uciCommand: join(tempDir, 'no-such-uci') });
    const missing =
      /no-such-uci is not on PATH: the local uci transport runs on the OpenWrt router itself; elsewhere, reach the router through rpcd/;
    const [condition] = await noUci.conditions();
    assert.deepEqual(
      [condition?.status, condition?.reason, condition?.required],
      ['False', 'UciCommandMissing', true],
    );
    assert.match(condition?.message ?? '', missing);
    const outcome = await noUci.handle(applyDb(), AbortSignal.timeout(20_000));
    assert.equal(outcome.code, status.UNAVAILABLE);
    assert.match(outcome.message ?? '', missing);

    const empty = join(tempDir, 'empty-config');
    mkdirSync(empty);
    const [noConfig] = await elsewhere({ uciCommand: double.command, configDir: empty }).conditions();
    assert.deepEqual([noConfig?.status, noConfig?.reason], ['False', 'UciConfigMissing']);
    assert.match(
      noConfig?.message ?? '',
      /uci has no network config \(uci export network failed\): is this an OpenWrt router\?/,
    );
  });
});
