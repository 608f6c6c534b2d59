/**
 * What the router's tools say about the Networks it serves, parsed for the network agent's
 * metrics: WireGuard peers from `wg show all dump` (or `wg show DEVICE dump`) and active DHCP
 * leases from a dnsmasq lease file. Pure.
 */

/** One peer of a WireGuard interface, as the router sees it. */
export interface WireguardPeerStats {
  interface: string;
  publicKey: string;
  /** Where the peer last sent from (host:port); undefined before it ever did. */
  endpoint?: string;
  /** Unix seconds of the latest handshake; 0 when there has been none. */
  latestHandshake: number;
  /** Bytes received from the peer. */
  rx: number;
  /** Bytes sent to the peer. */
  tx: number;
}

/**
 * The peers of a dump. `wg show all dump` starts every line with the interface; the dump of one
 * interface (`device` given) does not. Interface lines (which carry the private key) and lines
 * that do not parse are skipped.
 */
export function parseWireguardDump(output: string, device?: string): WireguardPeerStats[] {
  const peers: WireguardPeerStats[] = [];
  for (const line of output.split('\n')) {
    const fields = device === undefined ? line.split('\t') : [device, ...line.split('\t')];
    // interface, public-key, preshared-key, endpoint, allowed-ips, latest-handshake, rx, tx, keepalive
    if (fields.length !== 9) continue;
    const [name = '', publicKey = '', , endpoint = '', , handshake, rx, tx] = fields;
    const latestHandshake = unsigned(handshake);
    const received = unsigned(rx);
    const sent = unsigned(tx);
    if (latestHandshake === undefined || received === undefined || sent === undefined) continue;
    peers.push({
      interface: name,
      publicKey,
      ...(endpoint === '(none)' ? {} : { endpoint }),
      latestHandshake,
      rx: received,
      tx: sent,
    });
  }
  return peers;
}

/** A non-negative integer field, else undefined. */
function unsigned(field = ''): number | undefined {
  return /^\d+$/.test(field) ? Number(field) : undefined;
}

/**
 * The addresses of the DHCPv4 leases of a dnsmasq lease file that are active at `now` (Unix
 * seconds). A lease line is "EXPIRY MAC ADDRESS HOSTNAME CLIENT-ID", EXPIRY 0 for a lease that
 * never expires; DHCPv6 lines carry an IAID instead of a MAC and are skipped.
 */
export function activeLeaseAddresses(content: string, now: number): string[] {
  return content.split('\n').flatMap((line) => {
    const [expiry = '', mac = '', address = ''] = line.trim().split(/\s+/);
    if (!/^\d+$/.test(expiry) || !/^[0-9a-f]{2}(:[0-9a-f]{2})+$/i.test(mac)) return [];
    return expiry === '0' || Number(expiry) > now ? [address] : [];
  });
}

/** How many DHCPv4 leases of a dnsmasq lease file are active at `now` (Unix seconds). */
export function countActiveLeases(content: string, now: number): number {
  return activeLeaseAddresses(content, now).length;
}
