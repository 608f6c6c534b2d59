/**
 * Bootstrap tokens: the rule that decides whether a token may enroll (a table), their Secrets
 * through the real API (hashed, counted by compare-and-swap under concurrent use), and
 * `loam token create` as an admin runs it.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { V1Secret } from '@kubernetes/client-node';
import {
  type BootstrapTokenRecord,
  bootstrapTokenProblem,
  consumeBootstrapToken,
  decodeRecord,
} from '../../controllers/pki/bootstrap-tokens.js';
import { caPin } from '../../controllers/pki/certificates.js';
import { isLoamError } from '../../crds/errors.js';
import { enroll, sharedKeys } from './agent-client.js';
import { type HubPlane, startHubPlane } from './fixture.js';

const exec = promisify(execFile);
const cli = new URL('../../bin/loam.js', import.meta.url).pathname;

describe('bootstrap tokens', () => {
  describe('bootstrapTokenProblem', () => {
    const secret = '0123456789abcdef';
    const now = new Date('2025-01-01T12:00:00Z');
    const record: BootstrapTokenRecord = {
      id: 'abcdef',
      secretSha256: createHash('sha256').update(secret).digest('hex'),
      expiration: new Date('2025-01-01T13:00:00Z'),
      usages: 2,
      used: 1,
    };
    const rows: {
      name: string;
      record?: Partial<BootstrapTokenRecord>;
      secret?: string;
      problem?: RegExp;
    }[] = [
      { name: 'a valid token for any role' },
      { name: 'a valid token for its role', record: { role: 'libvirt' } },
      { name: 'a wrong secret', secret: 'fedcba9876543210', problem: /wrong secret/ },
      { name: 'an expired token', record: { expiration: now }, problem: /expired at 2025-01-01T12:00:00Z/ },
      { name: 'a used-up token', record: { used: 2 }, problem: /used 2 of 2 times/ },
      { name: 'another role', record: { role: 'network' }, problem: /for network agents, not libvirt/ },
      { name: 'a malformed stored hash', record: { secretSha256: 'zz' }, problem: /wrong secret/ },
    ];
    for (const row of rows) {
      it(row.problem ? `refuses ${row.name}` : `accepts ${row.name}`, () => {
        const problem = bootstrapTokenProblem(
          { ...record, ...row.record },
          row.secret ?? secret,
          'libvirt',
          now,
        );
        if (row.problem) assert.match(problem ?? '', row.problem);
        else assert.equal(problem, undefined);
        assert.ok(!problem?.includes(secret), 'the reason never carries the secret');
      });
    }

    it('reads no record from incomplete or malformed Secret data', () => {
      const b64 = (text: string) => Buffer.from(text).toString('base64');
      const data = {
        'token-id': b64('abcdef'),
        'token-secret-sha256': b64('00'),
        expiration: b64('2025-01-01T13:00:00Z'),
        usages: b64('2'),
        used: b64('0'),
      };
      assert.equal(decodeRecord(data)?.usages, 2);
      assert.equal(decodeRecord({ ...data, role: b64('router') }), undefined);
      assert.equal(decodeRecord({ ...data, used: b64('many') }), undefined);
      assert.equal(decodeRecord({ ...data, expiration: b64('tomorrow') }), undefined);
      assert.equal(decodeRecord({ ...data, 'token-id': undefined as unknown as string }), undefined);
    });
  });

  describe('through the API and the CLI', function () {
    this.timeout(60_000);
    let hub: HubPlane;
    before(async () => {
      hub = await startHubPlane('tokens');
    });
    after(async () => {
      await hub?.stop();
    });

    it('stores a token as a Secret with only the hash of its secret', async () => {
      const token = await hub.token({ role: 'network', usages: 3 });
      assert.match(token, /^[a-z0-9]{6}\.[a-z0-9]{16}$/);
      const [id, secret] = token.split('.') as [string, string];
      const stored = await hub.api.read<V1Secret>({
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: `bootstrap-token-${id}`, namespace: 'kube-system' },
      });
      assert.equal(stored.type, 'loam.dev/bootstrap-token');
      const data = Object.fromEntries(
        Object.entries(stored.data ?? {}).map(([key, value]) => [
          key,
          Buffer.from(value, 'base64').toString(),
        ]),
      );
      assert.deepEqual(
        { ...data, expiration: undefined },
        {
          'token-id': id,
          'token-secret-sha256': createHash('sha256').update(secret).digest('hex'),
          role: 'network',
          expiration: undefined,
          usages: '3',
          used: '0',
        },
      );
      assert.ok(!JSON.stringify(stored).includes(secret));
    });

    it('lets concurrent enrollments use a token only as often as allowed', async () => {
      const token = await hub.token({ usages: 3 });
      const outcomes = await Promise.allSettled(
        Array.from({ length: 8 }, () => consumeBootstrapToken(hub.api, token, 'libvirt')),
      );
      const used = outcomes.filter((o) => o.status === 'fulfilled');
      const refused = outcomes.flatMap((o) => (o.status === 'rejected' ? [o.reason] : []));
      assert.equal(used.length, 3);
      assert.equal(refused.length, 5);
      for (const err of refused)
        assert.ok(isLoamError(err, 'Unauthorized') && /used 3 of 3/.test(err.message));
    });

    it('loam token create prints the token, the CA pin and the join command for the hub’s real address', async () => {
      const { stdout } = await exec(process.execPath, [
        cli,
        'token',
        'create',
        '--data-dir',
        hub.dir,
        '--role',
        'libvirt',
        '--ttl',
        '30m',
        '--usages',
        '2',
      ]);
      const token = /^token: (\S+)$/m.exec(stdout)?.[1] ?? '';
      const pin = caPin(readFileSync(join(hub.dir, 'pki', 'ca.crt'), 'utf8'));
      assert.match(token, /^[a-z0-9]{6}\.[a-z0-9]{16}$/);
      assert.match(stdout, new RegExp(`^ca-pin: ${pin}$`, 'm'));
      assert.match(hub.address, /^127\.0\.0\.1:\d+$/);
      const joins = stdout.split('\n').filter((line) => line.trim().startsWith('loam agent'));
      assert.deepEqual(joins, [
        `  loam agent libvirt --server ${hub.address} --token ${token} --ca-pin ${pin} --data-dir /var/lib/loam-agent`,
      ]);
      const expires = Date.parse(/^expires: (\S+)$/m.exec(stdout)?.[1] ?? '');
      assert.ok(Math.abs(expires - (Date.now() + 30 * 60_000)) < 60_000);
      // The printed token enrolls an agent.
      await enroll(hub.address, hub.caPem, { token, name: 'cli-joined', keys: sharedKeys });
    });

    it('prints a join command per role for a token of any role, and refuses a bad --ttl', async () => {
      const { stdout } = await exec(process.execPath, [
        cli,
        'token',
        'create',
        '--data-dir',
        hub.dir,
        '--server',
        'hub.example.org:7443',
      ]);
      const joins = stdout.split('\n').filter((line) => line.trim().startsWith('loam agent'));
      assert.equal(joins.length, 2);
      assert.match(joins[0] ?? '', /^ {2}loam agent libvirt --server hub\.example\.org:7443 /);
      assert.match(joins[1] ?? '', /^ {2}loam agent network --server hub\.example\.org:7443 /);

      const bad = await exec(process.execPath, [
        cli,
        'token',
        'create',
        '--data-dir',
        hub.dir,
        '--ttl',
        'soon',
      ]).catch((err: { code: number; stderr: string }) => err);
      assert.equal((bad as { code: number }).code, 1);
      assert.match((bad as { stderr: string }).stderr, /--ttl.*duration such as 24h/);
    });
  });
});
