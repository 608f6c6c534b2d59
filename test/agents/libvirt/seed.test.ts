/** The NoCloud seed: its files (pure) and the ISO xorriso builds of them. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { buildSeedIso, type SeedFiles, type SeedPlacement, seedFiles } from '../../../agents/libvirt/seed.js';
import { isLoamError } from '../../../crds/errors.js';
import { imageSpec, instance, uidFor } from './fixtures.js';

const userData = '#cloud-config\npassword: secret\n';
const vm = (networks: string[] = []) =>
  instance('vm', {
    ...imageSpec,
    cloudInit: { userData },
    ...(networks.length === 0 ? {} : { networks: networks.map((name) => ({ name })) }),
  });
const lan = { name: 'lan', cidr: '10.0.0.0/24', gateway: '10.0.0.1', dns: ['10.0.0.1'] };
const dmz = { name: 'dmz', cidr: '192.168.8.0/22', gateway: '192.168.8.1', dns: ['9.9.9.9', '1.1.1.1'] };
const nic = (network: string, mac: string, ipAddress: string) => ({ network, mac, ipAddress });

describe('agents/libvirt/seed', () => {
  describe('seedFiles', () => {
    it('names the instance by uid and hostname, and passes user-data on verbatim', () => {
      const files = seedFiles(vm(), { interfaces: [] });
      assert.deepEqual(YAML.parse(files['meta-data']), {
        'instance-id': uidFor('vm'),
        'local-hostname': 'vm',
      });
      assert.equal(files['user-data'], userData);
      const odd = instance('odd', { ...imageSpec, cloudInit: { userData: 'no header' } });
      assert.equal(seedFiles(odd, { interfaces: [] })['user-data'], 'no header');
    });

    const cases: { name: string; networks: string[]; placement: SeedPlacement; want: object }[] = [
      {
        name: 'no networks',
        networks: [],
        placement: { interfaces: [], networks: [] },
        want: { version: 2, ethernets: {} },
      },
      {
        name: 'one NIC: static address, default route and DNS',
        networks: ['lan'],
        placement: { interfaces: [nic('lan', '52:54:00:12:34:56', '10.0.0.5')], networks: [lan] },
        want: {
          version: 2,
          ethernets: {
            eth0: {
              match: { macaddress: '52:54:00:12:34:56' },
              'set-name': 'eth0',
              addresses: ['10.0.0.5/24'],
              routes: [{ to: '0.0.0.0/0', via: '10.0.0.1' }],
              nameservers: { addresses: ['10.0.0.1'] },
            },
          },
        },
      },
      {
        name: 'two NICs: the default route through the first only, DNS of each',
        networks: ['lan', 'dmz'],
        placement: {
          interfaces: [
            nic('lan', '52:54:00:00:00:01', '10.0.0.5'),
            nic('dmz', '52:54:00:00:00:02', '192.168.9.7'),
          ],
          networks: [dmz, lan],
        },
        want: {
          version: 2,
          ethernets: {
            eth0: {
              match: { macaddress: '52:54:00:00:00:01' },
              'set-name': 'eth0',
              addresses: ['10.0.0.5/24'],
              routes: [{ to: '0.0.0.0/0', via: '10.0.0.1' }],
              nameservers: { addresses: ['10.0.0.1'] },
            },
            eth1: {
              match: { macaddress: '52:54:00:00:00:02' },
              'set-name': 'eth1',
              addresses: ['192.168.9.7/22'],
              nameservers: { addresses: ['9.9.9.9', '1.1.1.1'] },
            },
          },
        },
      },
      {
        name: 'no DNS: no nameservers',
        networks: ['lan'],
        placement: {
          interfaces: [nic('lan', '52:54:00:12:34:56', '10.0.0.5')],
          networks: [{ ...lan, dns: [] }],
        },
        want: {
          version: 2,
          ethernets: {
            eth0: {
              match: { macaddress: '52:54:00:12:34:56' },
              'set-name': 'eth0',
              addresses: ['10.0.0.5/24'],
              routes: [{ to: '0.0.0.0/0', via: '10.0.0.1' }],
            },
          },
        },
      },
      {
        name: 'a job without the Network (older controller): DHCP, which leases the same address',
        networks: ['lan'],
        placement: { interfaces: [nic('lan', '52:54:00:12:34:56', '10.0.0.5')] },
        want: {
          version: 2,
          ethernets: {
            eth0: { match: { macaddress: '52:54:00:12:34:56' }, 'set-name': 'eth0', dhcp4: true },
          },
        },
      },
    ];
    for (const c of cases) {
      it(`network-config: ${c.name}`, () => {
        const text = seedFiles(vm(c.networks), c.placement)['network-config'];
        // cloud-init reads YAML 1.1, where an unquoted MAC would be a base-60 number.
        assert.deepEqual(YAML.parse(text, { version: '1.1' }), c.want);
      });
    }

    it('quotes what YAML 1.1 would read as something else', () => {
      const files = seedFiles(instance('no', { ...imageSpec, cloudInit: { userData } }), {
        interfaces: [nic('lan', '52:54:00:12:34:56', '10.0.0.5')],
        networks: [lan],
      });
      assert.equal(YAML.parse(files['meta-data'], { version: '1.1' })['local-hostname'], 'no');
      assert.match(files['network-config'], /macaddress: "52:54:00:12:34:56"/);
    });

    it('refuses user data from a Secret', () => {
      const ref = instance('vm', { ...imageSpec, cloudInit: { userDataSecretRef: { name: 'boot' } } });
      assert.throws(
        () => seedFiles(ref, { interfaces: [] }),
        (err) =>
          isLoamError(err, 'Invalid') &&
          err.message ===
            "spec.cloudInit.userDataSecretRef: the controller sends the Secret's value inline, and this job has only the reference",
      );
    });
  });

  describe('buildSeedIso', () => {
    let dir: string;
    const files: SeedFiles = {
      'meta-data': 'instance-id: abc\nlocal-hostname: vm\n',
      'user-data': userData,
      'network-config': 'version: 2\nethernets: {}\n',
    };
    const signal = () => new AbortController().signal;
    const xorriso = (...args: string[]) =>
      execFileSync('xorriso', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });

    beforeEach(async () => {
      dir = await mkdtemp(join(tmpdir(), 'loam-seed-'));
    });

    afterEach(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('holds the three files under volume id cidata, and leaves nothing else behind', async () => {
      const iso = await buildSeedIso(dir, files, signal());
      assert.equal(iso, join(dir, 'seed.iso'));
      assert.match(xorriso('-indev', iso, '-pvd_info'), /^Volume Id\s*:\s*cidata$/m);
      assert.equal((await stat(iso)).mode & 0o777, 0o600, 'the user data it holds is owner-only');
      const out = join(dir, 'out');
      xorriso('-osirrox', 'on', '-indev', iso, '-extract', '/', out);
      assert.deepEqual((await readdir(out)).sort(), ['meta-data', 'network-config', 'user-data']);
      for (const [name, content] of Object.entries(files)) {
        assert.equal(await readFile(join(out, name), 'utf8'), content, name);
      }
      await rm(out, { recursive: true });
      assert.deepEqual((await readdir(dir)).sort(), ['seed.iso', 'seed.iso.sha256']);
    });

    it('is rebuilt only when the content changes', async () => {
      const iso = await buildSeedIso(dir, files, signal());
      const first = (await stat(iso)).ino;
      await buildSeedIso(dir, { ...files }, signal());
      assert.equal((await stat(iso)).ino, first, 'same content: the same file');

      await buildSeedIso(dir, { ...files, 'user-data': '#cloud-config\nhostname: other\n' }, signal());
      assert.notEqual((await stat(iso)).ino, first, 'new content: a new file, renamed into place');
      const out = join(dir, 'out');
      xorriso('-osirrox', 'on', '-indev', iso, '-extract', '/user-data', join(out, 'user-data'));
      assert.equal(await readFile(join(out, 'user-data'), 'utf8'), '#cloud-config\nhostname: other\n');
    });

    it('is rebuilt when the ISO is gone though its hash stayed', async () => {
      const iso = await buildSeedIso(dir, files, signal());
      await rm(iso);
      await buildSeedIso(dir, files, signal());
      assert.ok((await stat(iso)).size > 0);
    });

    it('stops at the abort signal, leaving no ISO and no temporary files', async () => {
      const abort = new AbortController();
      abort.abort();
      await assert.rejects(buildSeedIso(dir, files, abort.signal), (err) =>
        isLoamError(err, 'DeadlineExceeded'),
      );
      assert.deepEqual(await readdir(dir), []);
    });
  });
});
