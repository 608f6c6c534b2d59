/** The CLI as a user runs it: the real bin/loam entry point, exit codes and output. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const samples = `${root}crds/samples`;

function loam(args: string[], input?: string) {
  const res = spawnSync(`${root}bin/loam`, args, { cwd: root, encoding: 'utf8', input, timeout: 30_000 });
  return { status: res.status, stdout: res.stdout, stderr: res.stderr };
}

describe('loam CLI', () => {
  it('prints help with the commands', () => {
    const res = loam(['--help']);
    assert.equal(res.status, 0);
    assert.match(res.stdout, /Usage: loam/);
    assert.match(res.stdout, /validate/);
  });

  it('validates every sample manifest', () => {
    const files = readdirSync(samples).filter((f) => f.endsWith('.yaml'));
    const res = loam(['validate', ...files.flatMap((f) => ['-f', `${samples}/${f}`])]);
    assert.equal(res.status, 0, res.stderr);
    assert.match(res.stdout, /Network\/lab: valid/);
  });

  it('fails with one line per problem naming the field', () => {
    const manifest = [
      'apiVersion: loam.dev/v1alpha1',
      'kind: Network',
      'metadata: {name: lab, namespace: default}',
      'spec: {cidr: 10.20.0.1/24, wireguard: {port: 70000, cidr: 10.99.0.0/24}}',
      '---',
      'apiVersion: loam.dev/v1alpha1',
      'kind: Gadget',
      'metadata: {name: x}',
    ].join('\n');
    const res = loam(['validate', '-f', '-'], manifest);
    assert.equal(res.status, 1);
    assert.match(res.stderr, /-: Network\/lab: spec\.cidr: Invalid value: "10\.20\.0\.1\/24"/);
    assert.match(res.stderr, /-: Network\/lab: spec\.wireguard\.port: Invalid value: 70000/);
    assert.match(res.stderr, /-: Gadget\/x: kind: Unsupported value: "Gadget"/);
  });

  it('names a missing file in one line and exits non-zero', () => {
    const res = loam(['validate', '-f', '/nonexistent.yaml']);
    assert.equal(res.status, 1);
    assert.match(res.stderr, /^loam: .*\/nonexistent\.yaml/);
    assert.equal(res.stderr.trim().split('\n').length, 1);
  });
});
