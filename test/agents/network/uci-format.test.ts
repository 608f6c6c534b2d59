import assert from 'node:assert/strict';
import {
  applyBatch,
  diffUci,
  formatBatch,
  mergeUci,
  parseBatch,
  parseUci,
  serializeUci,
  type UciCommand,
  type UciSection,
  UciSyntaxError,
} from '../../../agents/network/uci-format.js';

import { stockConfig } from './fixtures.js';

const owned = (section: UciSection) => section.name?.startsWith('loam_') ?? false;

describe('UCI format', () => {
  describe('parseUci', () => {
    const cases: { name: string; text: string; want: UciSection[] }[] = [
      {
        name: 'named and anonymous sections, options and lists',
        text: "\nconfig interface 'lan'\n\toption proto 'static'\n\tlist dns '1.1.1.1'\n\tlist dns '9.9.9.9'\n\nconfig rule\n\toption name 'x'\n",
        want: [
          { type: 'interface', name: 'lan', options: { proto: 'static', dns: ['1.1.1.1', '9.9.9.9'] } },
          { type: 'rule', options: { name: 'x' } },
        ],
      },
      {
        name: 'unquoted, double-quoted with escapes, concatenated and escaped single quotes',
        text: `config x 'a'\n  option plain value\n  option double "say \\"hi\\" \\\\ now"\n  option joined 'it'\\''s'"  "ok\n`,
        want: [
          {
            type: 'x',
            name: 'a',
            options: { plain: 'value', double: 'say "hi" \\ now', joined: "it's  ok" },
          },
        ],
      },
      {
        name: 'comments, semicolons and a continued line',
        text: "# a comment\nconfig x 'a' # trailing\n\toption v 'with # inside'; option w 2\n\toption long part\\\none\n",
        want: [{ type: 'x', name: 'a', options: { v: 'with # inside', w: '2', long: 'partone' } }],
      },
      {
        name: 'a quoted value over two lines',
        text: "config x 'a'\n\toption text 'line one\nline two'\n",
        want: [{ type: 'x', name: 'a', options: { text: 'line one\nline two' } }],
      },
      {
        name: 'list after option extends it; option after list replaces it; a repeated name continues the section',
        text: "config x 'a'\n\toption l 'one'\n\tlist l 'two'\n\tlist m 'x'\n\toption m 'y'\nconfig y 'a'\n\toption more '1'\n",
        want: [{ type: 'y', name: 'a', options: { l: ['one', 'two'], m: 'y', more: '1' } }],
      },
      {
        name: 'short keywords and an empty value',
        text: "c x 'a'\n\to v\n\tl w 'q'\n",
        want: [{ type: 'x', name: 'a', options: { v: '', w: ['q'] } }],
      },
    ];
    for (const c of cases) {
      it(c.name, () => assert.deepEqual(parseUci(c.text), c.want));
    }

    const errors: { name: string; text: string; line: number; reason: RegExp }[] = [
      {
        name: 'an option before any section',
        text: "\noption x 'y'\n",
        line: 2,
        reason: /before the first section/,
      },
      {
        name: 'an unterminated quote',
        text: "config x 'a'\n\toption v 'open\n\n",
        line: 2,
        reason: /unterminated '/,
      },
      {
        name: 'a section name with a dash',
        text: "config x 'a-b'\n",
        line: 1,
        reason: /invalid section name/,
      },
      {
        name: 'an unknown command',
        text: "config x 'a'\n\tvalue x\n",
        line: 2,
        reason: /invalid command "value"/,
      },
    ];
    for (const c of errors) {
      it(`rejects ${c.name}, naming the line`, () => {
        assert.throws(
          () => parseUci(c.text),
          (err: unknown) =>
            err instanceof UciSyntaxError && err.line === c.line && c.reason.test(err.message),
        );
      });
    }

    it('reads the stock OpenWrt configs', () => {
      const network = parseUci(stockConfig('network'));
      assert.deepEqual(
        network.map((s) => s.name ?? `@${s.type}`),
        [
          'loopback',
          'globals',
          '@device',
          'lan',
          'wan',
          'wan6',
          'guest',
          'loam_oldnet',
          'loam_2xhx47_wg',
          'vpn',
        ],
      );
      assert.deepEqual(network.find((s) => s.name === 'guest')?.options, {
        proto: 'static',
        ipaddr: '192.168.3.1',
        netmask: '255.255.255.0',
      });
      assert.equal(parseUci(stockConfig('firewall')).filter((s) => s.type === 'rule').length, 7);
      assert.equal(parseUci(stockConfig('dhcp')).length, 5);
    });
  });

  describe('serializeUci', () => {
    it('writes what uci commit writes, and reads back to the same sections', () => {
      const sections: UciSection[] = [
        {
          type: 'interface',
          name: 'a',
          options: { proto: 'static', quote: "it's", list: ['x y', '#z', 'back\\slash'] },
        },
        { type: 'rule', options: { name: 'multi\nline' } },
      ];
      const text = serializeUci(sections);
      assert.equal(
        text,
        "\nconfig interface 'a'\n\toption proto 'static'\n\toption quote 'it'\\''s'\n\tlist list 'x y'\n\tlist list '#z'\n\tlist list 'back\\slash'\n\nconfig rule\n\toption name 'multi\nline'\n\n",
      );
      assert.deepEqual(parseUci(text), sections);
    });

    it('round-trips the stock configs', () => {
      for (const name of ['network', 'dhcp', 'firewall'] as const) {
        const sections = parseUci(stockConfig(name));
        assert.deepEqual(parseUci(serializeUci(sections)), sections, name);
      }
    });
  });

  describe('mergeUci', () => {
    const desired: Record<string, UciSection[]> = {
      network: [
        { type: 'interface', name: 'loam_2xhx47_wg', options: { proto: 'wireguard', listen_port: '51820' } },
        { type: 'interface', name: 'loam_new', options: { proto: 'static', ipaddr: '10.1.0.1' } },
      ],
      dhcp: [{ type: 'dhcp', name: 'loam_new', options: { interface: 'loam_new', start: '128' } }],
      firewall: [{ type: 'zone', name: 'loam_new', options: { name: 'loam_new', network: ['loam_new'] } }],
    };

    /** The stock file without its loam_ blocks, cut by hand along the blank lines that separate them. */
    const withoutLoam = (text: string) => {
      const kept = text
        .split('\n\n')
        .filter((block) => !/^config \S+ 'loam_/.test(block))
        .join('\n\n');
      return kept.endsWith('\n') ? kept : `${kept}\n`;
    };

    for (const name of ['network', 'dhcp', 'firewall'] as const) {
      it(`keeps every byte of the user's ${name} config and replaces only loam_ sections`, () => {
        const stock = stockConfig(name);
        const sections = desired[name] ?? [];
        const merged = mergeUci(stock, sections, owned, ['private_key']);
        const user = withoutLoam(stock);
        assert.ok(merged.startsWith(user), merged);
        const after = parseUci(merged);
        assert.deepEqual(
          after.filter((s) => !owned(s)),
          parseUci(stock).filter((s) => !owned(s)),
        );
        assert.deepEqual(
          after.filter(owned).map((s) => s.name),
          sections.map((s) => s.name),
        );
        assert.equal(
          mergeUci(merged, sections, owned, ['private_key']),
          merged,
          'merging twice changes nothing',
        );
        assert.equal(mergeUci(stock, [], owned), user, 'merging nothing removes Loam sections only');
      });
    }

    it("keeps the router's own private_key on a replaced Loam section, and nobody else's", () => {
      const merged = parseUci(
        mergeUci(stockConfig('network'), desired.network ?? [], owned, ['private_key']),
      );
      assert.deepEqual(merged.find((s) => s.name === 'loam_2xhx47_wg')?.options, {
        proto: 'wireguard',
        listen_port: '51820',
        private_key: 'aPrivateKeyMadeOnTheRouterxxxxxxxxxxxxxxxxx=',
      });
      assert.equal(
        merged.find((s) => s.name === 'vpn')?.options.private_key,
        'theUsersOwnKeyIsNotLoamsxxxxxxxxxxxxxxxxxxx=',
      );
    });

    it('adds a final newline to a file without one before appending', () => {
      assert.equal(
        mergeUci("config x 'a'", [{ type: 'y', name: 'loam_b', options: {} }], owned),
        "config x 'a'\n\nconfig y 'loam_b'\n",
      );
    });
  });

  describe('uci batch', () => {
    it('formats and parses set, add_list and delete', () => {
      const commands: UciCommand[] = [
        { verb: 'set', config: 'network', section: 'loam_a', value: 'interface' },
        { verb: 'set', config: 'network', section: 'loam_a', option: 'name', value: "it's a; #test" },
        { verb: 'add_list', config: 'network', section: 'loam_a', option: 'ports', value: 'eth0' },
        { verb: 'delete', config: 'network', section: 'loam_a', option: 'old' },
        { verb: 'delete', config: 'firewall', section: 'loam_b' },
      ];
      const text = formatBatch(commands);
      assert.equal(
        text,
        "set network.loam_a=interface\nset network.loam_a.name='it'\\''s a; #test'\nadd_list network.loam_a.ports='eth0'\ndelete network.loam_a.old\ndelete firewall.loam_b\n",
      );
      assert.deepEqual(parseBatch(`# a comment\n${text}\n`), commands);
    });

    it('rejects commands it does not know, naming the line', () => {
      assert.throws(() => parseBatch("set a.b.c='x'\ncommit"), /line 2: unsupported command "commit"/);
      assert.throws(() => parseBatch('add_list a.b=x'), /line 1: add_list a\.b: takes no value/);
      assert.throws(() => parseBatch('set a.b'), /line 1: set a\.b: a value is missing/);
      assert.throws(() => parseBatch('set a.b-c.d=x'), /invalid path/);
    });

    it('diffs to nothing when the router already has the desired sections', () => {
      const stock = parseUci(stockConfig('network'));
      const desired = stock.filter(owned);
      assert.deepEqual(diffUci('network', stock, desired, owned), []);
    });

    it('turns the existing config into what a merge writes, touching only loam_ sections', () => {
      const existing = parseUci(stockConfig('network'));
      const desired: UciSection[] = [
        {
          type: 'interface',
          name: 'loam_2xhx47_wg',
          options: { proto: 'wireguard', listen_port: '51820', addresses: ['10.99.0.1/24', '10.99.1.1/24'] },
        },
        { type: 'device', name: 'loam_oldnet', options: { name: 'loam_oldnet_br', type: 'bridge' } },
        { type: 'interface', name: 'loam_new', options: { proto: 'static', ports: ['a', 'b'] } },
      ];
      const commands = diffUci('network', existing, desired, owned, ['private_key']);
      assert.deepEqual(commands, [
        { verb: 'set', config: 'network', section: 'loam_2xhx47_wg', option: 'listen_port', value: '51820' },
        { verb: 'delete', config: 'network', section: 'loam_2xhx47_wg', option: 'addresses' },
        {
          verb: 'add_list',
          config: 'network',
          section: 'loam_2xhx47_wg',
          option: 'addresses',
          value: '10.99.0.1/24',
        },
        {
          verb: 'add_list',
          config: 'network',
          section: 'loam_2xhx47_wg',
          option: 'addresses',
          value: '10.99.1.1/24',
        },
        // A section whose type changes is made anew.
        { verb: 'delete', config: 'network', section: 'loam_oldnet' },
        { verb: 'set', config: 'network', section: 'loam_oldnet', value: 'device' },
        { verb: 'set', config: 'network', section: 'loam_oldnet', option: 'name', value: 'loam_oldnet_br' },
        { verb: 'set', config: 'network', section: 'loam_oldnet', option: 'type', value: 'bridge' },
        { verb: 'set', config: 'network', section: 'loam_new', value: 'interface' },
        { verb: 'set', config: 'network', section: 'loam_new', option: 'proto', value: 'static' },
        { verb: 'add_list', config: 'network', section: 'loam_new', option: 'ports', value: 'a' },
        { verb: 'add_list', config: 'network', section: 'loam_new', option: 'ports', value: 'b' },
      ]);
      const applied = applyBatch({ network: existing }, parseBatch(formatBatch(commands))).network ?? [];
      const merged = parseUci(mergeUci(stockConfig('network'), desired, owned, ['private_key']));
      const byName = (sections: UciSection[]) =>
        Object.fromEntries(sections.filter(owned).map((s) => [s.name, s]));
      assert.deepEqual(
        applied.filter((s) => !owned(s)),
        existing.filter((s) => !owned(s)),
      );
      assert.deepEqual(byName(applied), byName(merged));
    });

    it('deletes stale loam_ sections and nothing else', () => {
      const existing = parseUci(stockConfig('firewall'));
      assert.deepEqual(diffUci('firewall', existing, [], owned), [
        { verb: 'delete', config: 'firewall', section: 'loam_oldnet_dhcp' },
      ]);
    });

    it('applies like uci: an unknown section or option is an error', () => {
      assert.throws(
        () =>
          applyBatch({ network: [] }, [
            { verb: 'set', config: 'network', section: 'x', option: 'y', value: 'z' },
          ]),
        /network\.x\.y: entry not found/,
      );
      assert.throws(
        () => applyBatch({}, [{ verb: 'delete', config: 'dhcp', section: 'x' }]),
        /no config dhcp/,
      );
    });
  });
});
