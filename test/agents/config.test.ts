/** Agent configuration from flags, environment and file: precedence, defaults, and errors that name the setting. */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  type AgentConfig,
  type ConfigSources,
  envName,
  flagName,
  loadAgentConfig,
  resolveAgentConfig,
} from '../../agents/runtime/config.js';
import { removeDir, tempDataDir } from './hub-double.js';

const pin = `sha256:${'ab'.repeat(32)}`;
const required = { server: 'hub.example.com:7443', dataDir: '/var/lib/loam-agent' };

function sources(partial: Partial<ConfigSources>): ConfigSources {
  return { flags: {}, env: {}, hostname: 'hv1', ...partial };
}

describe('agent configuration', () => {
  it('derives flag and variable names from the setting', () => {
    assert.equal(flagName('caPin'), '--ca-pin');
    assert.equal(envName('caPin'), 'LOAM_AGENT_CA_PIN');
    assert.equal(envName('metricsAddress'), 'LOAM_AGENT_METRICS_ADDRESS');
  });

  it('fills in the defaults', () => {
    const config = resolveAgentConfig('network', sources({ flags: required }));
    assert.deepEqual(config, {
      role: 'network',
      ...required,
      name: 'hv1',
      metricsAddress: '127.0.0.1:9471',
      logLevel: 'info',
      renewAt: 0.8,
      backoff: { initialMs: 500, maxMs: 30_000 },
      driver: 'linux',
      rpcdUser: 'root',
      stateDir: '/var/lib/loam/network',
      vxlanPort: 4789,
      resyncInterval: 60,
    } satisfies AgentConfig);
    assert.equal(
      resolveAgentConfig('libvirt', sources({ flags: required })).metricsAddress,
      '127.0.0.1:9470',
    );
  });

  it('gives the libvirt role, and only it, the libvirt settings', () => {
    const config = resolveAgentConfig('libvirt', sources({ flags: required }));
    assert.equal(config.libvirtUri, 'qemu:///system');
    assert.equal(config.storageDir, '/var/lib/loam-libvirt');
    assert.equal(config.reservedCpus, 0);
    assert.equal(config.reservedMemory, '512Mi');
    const fromEnv = resolveAgentConfig(
      'libvirt',
      sources({
        flags: required,
        env: {
          LOAM_AGENT_LIBVIRT_URI: 'test:///default',
          LOAM_AGENT_STORAGE_DIR: '/srv/loam',
          LOAM_AGENT_RESERVED_CPUS: '2',
        },
        file: { path: 'a.yaml', text: 'reservedMemory: 1073741824' },
      }),
    );
    assert.equal(fromEnv.libvirtUri, 'test:///default');
    assert.equal(fromEnv.storageDir, '/srv/loam');
    assert.equal(fromEnv.reservedCpus, 2);
    assert.equal(fromEnv.reservedMemory, '1073741824', 'a number in the file, kept as a quantity');
    assert.throws(
      () =>
        resolveAgentConfig(
          'network',
          sources({ flags: required, file: { path: 'a.yaml', text: 'storageDir: /srv' } }),
        ),
      /storageDir in a.yaml: unknown setting/,
    );
  });

  it('gives the network role, and only it, the router settings', () => {
    const config = resolveAgentConfig(
      'network',
      sources({
        flags: { ...required, vxlanRemotes: '192.0.2.11, 192.0.2.12', wan: 'enp1s0' },
        env: { LOAM_AGENT_WIREGUARD_ENDPOINT: 'vpn.example.com', LOAM_AGENT_VXLAN_PORT: '8472' },
        file: { path: 'a.yaml', text: 'vxlanLocal: 192.0.2.1\nvxlanUplink: eth1\nstateDir: /srv/router' },
      }),
    );
    assert.deepEqual(
      [
        config.vxlanRemotes,
        config.wan,
        config.wireguardEndpoint,
        config.vxlanPort,
        config.vxlanLocal,
        config.vxlanUplink,
        config.stateDir,
      ],
      [['192.0.2.11', '192.0.2.12'], 'enp1s0', 'vpn.example.com', 8472, '192.0.2.1', 'eth1', '/srv/router'],
    );
    const listed = resolveAgentConfig(
      'network',
      sources({
        flags: required,
        file: { path: 'a.yaml', text: 'vxlanRemotes: [192.0.2.13]\nvxlanGroup: 239.1.1.1' },
      }),
    );
    assert.deepEqual(listed.vxlanRemotes, ['192.0.2.13']);
    assert.equal(listed.vxlanGroup, '239.1.1.1');
    assert.equal(resolveAgentConfig('libvirt', sources({ flags: required })).stateDir, undefined);
    const refusals: [Record<string, string>, RegExp][] = [
      [{ stateDir: 'router' }, /--state-dir: must be an absolute path/],
      [{ vxlanRemotes: '192.0.2.11,hv2' }, /--vxlan-remotes: must be IPv4 addresses, comma-separated/],
      [{ vxlanGroup: '192.0.2.1' }, /--vxlan-group: must be an IPv4 multicast address/],
      [{ vxlanPort: '70000' }, /--vxlan-port: must be a port from 1 to 65535/],
      [{ wan: 'a very long device name' }, /--wan: must be a network device name/],
      [{ wireguardEndpoint: 'not a host' }, /--wireguard-endpoint: must be a DNS name or an IP address/],
    ];
    for (const [flags, error] of refusals) {
      assert.throws(
        () => resolveAgentConfig('network', sources({ flags: { ...required, ...flags } })),
        error,
      );
    }
  });

  it('takes the openwrt driver with its rpcd settings, and requires the URL and password file for it', () => {
    const config = resolveAgentConfig(
      'network',
      sources({
        flags: { ...required, driver: 'openwrt', rpcdUrl: 'https://192.168.1.1/ubus' },
        env: {
          LOAM_AGENT_RPCD_PASSWORD_FILE: '/etc/loam/rpcd-password',
          LOAM_AGENT_RPCD_CA_FILE: '/etc/loam/ca.pem',
        },
      }),
    );
    assert.deepEqual(
      [
        config.driver,
        config.rpcdUrl,
        config.rpcdUser,
        config.rpcdPasswordFile,
        config.rpcdCaFile,
        config.wan,
      ],
      [
        'openwrt',
        'https://192.168.1.1/ubus',
        'root',
        '/etc/loam/rpcd-password',
        '/etc/loam/ca.pem',
        undefined,
      ],
    );
    assert.throws(
      () => resolveAgentConfig('network', sources({ flags: { ...required, driver: 'openwrt' } })),
      (err: Error) =>
        /--rpcd-url is required with --driver openwrt \(or LOAM_AGENT_RPCD_URL/.test(err.message) &&
        /--rpcd-password-file is required with --driver openwrt/.test(err.message),
    );
    const refusals: [Record<string, string>, RegExp][] = [
      [{ driver: 'vyos' }, /--driver: must be linux or openwrt/],
      [{ rpcdUrl: 'ftp://router/ubus' }, /--rpcd-url: must be an http:\/\/ or https:\/\/ URL/],
      [{ rpcdUrl: 'not a url' }, /--rpcd-url: must be an http:\/\/ or https:\/\/ URL/],
    ];
    for (const [flags, error] of refusals) {
      assert.throws(
        () => resolveAgentConfig('network', sources({ flags: { ...required, ...flags } })),
        error,
      );
    }
    assert.throws(
      () =>
        resolveAgentConfig(
          'libvirt',
          sources({ flags: required, file: { path: 'a.yaml', text: 'driver: openwrt' } }),
        ),
      /driver in a.yaml: unknown setting/,
    );
  });

  it('takes the openwrt driver on the router itself, through its uci command, without rpcd settings', () => {
    const config = resolveAgentConfig(
      'network',
      sources({ flags: { ...required, driver: 'openwrt' }, env: { LOAM_AGENT_UCI_TRANSPORT: 'local' } }),
    );
    assert.deepEqual([config.driver, config.uciTransport, config.rpcdUrl], ['openwrt', 'local', undefined]);
    assert.throws(
      () => resolveAgentConfig('network', sources({ flags: { ...required, uciTransport: 'ssh' } })),
      /--uci-transport: must be rpcd or local/,
    );
  });

  const precedence: { name: string; input: Partial<ConfigSources>; want: Partial<AgentConfig> }[] = [
    {
      name: 'a flag wins over the environment and the file',
      input: {
        flags: { ...required, name: 'from-flag' },
        env: { LOAM_AGENT_NAME: 'from-env' },
        file: { path: 'agent.yaml', text: 'name: from-file' },
      },
      want: { name: 'from-flag' },
    },
    {
      name: 'the environment wins over the file',
      input: {
        flags: required,
        env: { LOAM_AGENT_NAME: 'from-env', LOAM_AGENT_RENEW_AT: '0.5' },
        file: { path: 'agent.yaml', text: 'name: from-file\nrenewAt: 0.6' },
      },
      want: { name: 'from-env', renewAt: 0.5 },
    },
    {
      name: 'the file wins over the defaults, in YAML',
      input: {
        file: {
          path: 'agent.yaml',
          text: `server: ${required.server}\ndataDir: /d\ncaPin: ${pin}\nbackoffMax: 5`,
        },
      },
      want: { dataDir: '/d', caPin: pin, backoff: { initialMs: 500, maxMs: 5000 } },
    },
    {
      name: 'the file may be JSON',
      input: {
        file: { path: 'agent.json', text: JSON.stringify({ ...required, token: 'abcdef.0123456789abcdef' }) },
      },
      want: { token: 'abcdef.0123456789abcdef' },
    },
    {
      name: 'an empty variable counts as unset',
      input: { flags: required, env: { LOAM_AGENT_NAME: '' } },
      want: { name: 'hv1' },
    },
    {
      name: 'the name defaults to the first label of the hostname, lower-cased',
      input: { flags: required, hostname: 'Rack4-HV07.dc.example.com' },
      want: { name: 'rack4-hv07' },
    },
    {
      name: 'the metrics port may be 0 and the host IPv6',
      input: { flags: { ...required, metricsAddress: '[::1]:0' } },
      want: { metricsAddress: '[::1]:0' },
    },
    {
      name: 'backoff bounds are seconds',
      input: { flags: { ...required, backoffInitial: '0.1', backoffMax: '2' } },
      want: { backoff: { initialMs: 100, maxMs: 2000 } },
    },
  ];
  for (const c of precedence) {
    it(c.name, () => {
      const config = resolveAgentConfig('libvirt', sources(c.input));
      for (const [key, value] of Object.entries(c.want)) {
        assert.deepEqual(config[key as keyof AgentConfig], value, key);
      }
    });
  }

  const errors: { name: string; input: Partial<ConfigSources>; error: RegExp }[] = [
    {
      name: 'a missing server',
      input: { flags: { dataDir: '/d' } },
      error: /--server is required \(or LOAM_AGENT_SERVER, or server in the --config file\)/,
    },
    {
      name: 'a server without a port',
      input: { flags: { ...required, server: 'hub.example.com' } },
      error: /--server: must be host:port/,
    },
    {
      name: 'a server port out of range',
      input: { flags: { ...required, server: 'hub:70000' } },
      error: /--server: must be host:port/,
    },
    {
      name: 'a bad pin from a flag',
      input: { flags: { ...required, caPin: 'abc' } },
      error: /--ca-pin: must be 'sha256:' and 64 lower-case hex digits/,
    },
    {
      name: 'a bad pin from the environment',
      input: { flags: required, env: { LOAM_AGENT_CA_PIN: 'sha1:00' } },
      error: /LOAM_AGENT_CA_PIN: must be 'sha256:'/,
    },
    {
      name: 'a bad pin from the file',
      input: { flags: required, file: { path: '/etc/agent.yaml', text: 'caPin: md5' } },
      error: /caPin in \/etc\/agent.yaml: must be 'sha256:'/,
    },
    {
      name: 'a bad token',
      input: { flags: { ...required, token: 'hunter2' } },
      error: /--token: must be a bootstrap token/,
    },
    {
      name: 'a name that is not a DNS label',
      input: { flags: { ...required, name: 'Web_01' } },
      error: /--name: must be a lower-case RFC 1123 label/,
    },
    {
      name: 'a hostname that makes no DNS label',
      input: { flags: required, hostname: 'web_01' },
      error: /--name \(defaulted to "web_01"\): must be a lower-case RFC 1123 label/,
    },
    {
      name: 'a renew fraction out of range',
      input: { flags: { ...required, renewAt: '1.5' } },
      error: /--renew-at: must be between 0 and 1, exclusive/,
    },
    {
      name: 'a renew fraction that is no number',
      input: { flags: { ...required, renewAt: 'soon' } },
      error: /--renew-at: must be a number/,
    },
    {
      name: 'backoff bounds the wrong way round',
      input: { flags: { ...required, backoffInitial: '10', backoffMax: '1' } },
      error: /--backoff-max: must not be less than backoffInitial/,
    },
    {
      name: 'an unknown log level',
      input: { flags: { ...required, logLevel: 'loud' } },
      error: /--log-level: must be one of fatal, error/,
    },
    {
      name: 'a bad metrics address',
      input: { flags: { ...required, metricsAddress: 'localhost' } },
      error: /--metrics-address: must be host:port/,
    },
    {
      name: 'a libvirt URI that is no URI',
      input: { flags: { ...required, libvirtUri: 'system' } },
      error: /--libvirt-uri: must be a libvirt connection URI/,
    },
    {
      name: 'a relative storage dir',
      input: { flags: required, env: { LOAM_AGENT_STORAGE_DIR: 'loam' } },
      error: /LOAM_AGENT_STORAGE_DIR: must be an absolute path/,
    },
    {
      name: 'a negative cpu reservation',
      input: { flags: { ...required, reservedCpus: '-1' } },
      error: /--reserved-cpus: must not be negative/,
    },
    {
      name: 'a fractional cpu reservation',
      input: { flags: required, env: { LOAM_AGENT_RESERVED_CPUS: '0.5' } },
      error: /LOAM_AGENT_RESERVED_CPUS: must be a whole number of cpus/,
    },
    {
      name: 'a memory reservation that is no quantity',
      input: { flags: { ...required, reservedMemory: '1 GB' } },
      error: /--reserved-memory: must be a quantity of 0 or more, such as 512Mi/,
    },
    {
      name: 'a negative memory reservation',
      input: { flags: required, file: { path: 'a.yaml', text: 'reservedMemory: -1Gi' } },
      error: /reservedMemory in a.yaml: must be a quantity of 0 or more/,
    },
    {
      name: 'an unknown key in the file',
      input: { flags: required, file: { path: 'a.yaml', text: 'sever: x:1' } },
      error: /sever in a.yaml: unknown setting/,
    },
    {
      name: 'a file that is no mapping',
      input: { flags: required, file: { path: 'a.yaml', text: '- 1' } },
      error: /a.yaml: must be a mapping of settings/,
    },
    {
      name: 'a file that is no YAML',
      input: { flags: required, file: { path: 'a.yaml', text: 'a: [' } },
      error: /a.yaml: not YAML or JSON/,
    },
  ];
  for (const c of errors) {
    it(`refuses ${c.name} in one line naming the setting`, () => {
      assert.throws(
        () => resolveAgentConfig('libvirt', sources(c.input)),
        (err: Error) => {
          assert.match(err.message, /^invalid agent configuration: /);
          assert.match(err.message, c.error);
          assert.equal(err.message.includes('\n'), false, err.message);
          return true;
        },
      );
    });
  }

  it('names every bad setting at once', () => {
    assert.throws(
      () => resolveAgentConfig('libvirt', sources({ flags: { ...required, caPin: 'x', name: 'A' } })),
      /--ca-pin: .*; --name: /,
    );
  });

  it('reads the file that --config or LOAM_AGENT_CONFIG names', async () => {
    const dir = await tempDataDir();
    try {
      const path = join(dir, 'agent.yaml');
      writeFileSync(path, `server: ${required.server}\ndataDir: /d\n`);
      assert.equal(loadAgentConfig('libvirt', { config: path }, {}).dataDir, '/d');
      assert.equal(loadAgentConfig('libvirt', {}, { LOAM_AGENT_CONFIG: path }).server, required.server);
      assert.throws(
        () => loadAgentConfig('libvirt', { config: join(dir, 'none.yaml') }, {}),
        /--config: cannot read .*none.yaml: ENOENT/,
      );
    } finally {
      removeDir(dir);
    }
  });
});
