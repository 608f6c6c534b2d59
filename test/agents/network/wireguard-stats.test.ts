import assert from 'node:assert/strict';
import { countActiveLeases, parseWireguardDump } from '../../../agents/network/wireguard-stats.js';

const key = (c: string) => `${c.repeat(43)}=`;

describe('WireGuard and DHCP stats', () => {
  it('reads the peers of `wg show all dump`, one that never made a handshake too', () => {
    const dump = [
      // interface: private key, public key, listen port, fwmark
      ['loam_abcdef_wg', key('P'), key('Q'), '51820', 'off'],
      [
        'loam_abcdef_wg',
        key('A'),
        '(none)',
        '198.51.100.2:40000',
        '10.90.0.2/32',
        '1767225600',
        '2468',
        '1357',
        'off',
      ],
      ['loam_abcdef_wg', key('B'), '(none)', '(none)', '10.90.0.3/32', '0', '0', '0', '25'],
      ['wg0', key('R'), key('S'), '51821', '0x1'],
      ['wg0', key('C'), key('D'), '[2001:db8::1]:51820', '(none)', '1767225601', '1', '2', 'off'],
    ]
      .map((fields) => fields.join('\t'))
      .join('\n');
    assert.deepEqual(parseWireguardDump(`${dump}\n`), [
      {
        interface: 'loam_abcdef_wg',
        publicKey: key('A'),
        endpoint: '198.51.100.2:40000',
        latestHandshake: 1767225600,
        rx: 2468,
        tx: 1357,
      },
      { interface: 'loam_abcdef_wg', publicKey: key('B'), latestHandshake: 0, rx: 0, tx: 0 },
      {
        interface: 'wg0',
        publicKey: key('C'),
        endpoint: '[2001:db8::1]:51820',
        latestHandshake: 1767225601,
        rx: 1,
        tx: 2,
      },
    ]);
  });

  it('reads the dump of one interface, which names no interface', () => {
    const dump = [
      [key('P'), key('Q'), '51820', 'off'],
      [key('A'), '(none)', '198.51.100.2:40000', '10.90.0.2/32', '1767225600', '2468', '1357', 'off'],
    ]
      .map((fields) => fields.join('\t'))
      .join('\n');
    assert.deepEqual(parseWireguardDump(dump, 'loam_abcdef_wg'), [
      {
        interface: 'loam_abcdef_wg',
        publicKey: key('A'),
        endpoint: '198.51.100.2:40000',
        latestHandshake: 1767225600,
        rx: 2468,
        tx: 1357,
      },
    ]);
  });

  it('skips what does not parse', () => {
    const garbled = ['wg0', key('A'), '(none)', '(none)', '(none)', 'soon', '1', '2', 'off'].join('\t');
    assert.deepEqual(
      parseWireguardDump(`${garbled}\nUnable to access interface: Protocol not supported\n`),
      [],
    );
    assert.deepEqual(parseWireguardDump(''), []);
  });

  it('counts the active leases of a dnsmasq lease file', () => {
    const now = 1767225600;
    const leases = [
      `${now + 3600} 52:54:00:00:00:01 10.10.0.10 vm1 01:52:54:00:00:00:01`,
      `${now - 1} 52:54:00:00:00:02 10.10.0.11 vm2 *`,
      '0 52:54:00:00:00:03 10.10.0.12 * *',
      // DHCPv6 leases follow the server's DUID and carry an IAID instead of a MAC.
      'duid 00:01:00:01:2c:5f:8a:1b:52:54:00:00:00:ff',
      `${now + 3600} 1234 2001:db8::10 vm1 00:01:00:01`,
      '',
    ].join('\n');
    assert.equal(countActiveLeases(leases, now), 2);
    assert.equal(countActiveLeases('', now), 0);
  });
});
