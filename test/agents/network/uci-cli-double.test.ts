/**
 * The test double of the `uci` command answers as uci does: the outputs, exit statuses and error
 * messages below are those of libuci's cli.c and of uci's own test suite (tests/shunit2), which
 * the local transport relies on.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UciCliDouble } from './uci-cli-double.js';

const testConfig = `config type 'section'
\toption opt 'val'
\tlist list_opt 'val0'
\tlist list_opt 'val1'

config device
\toption name 'br-lan'
\tlist ports 'lan1'

config device
\toption name 'br-guest'
`;

describe('uci command test double', () => {
  const tempDir = mkdtempSync(join(tmpdir(), 'loam-uci-double-'));
  let double: UciCliDouble;

  function uci(args: string[], input?: string): { stdout: string; stderr: string; status: number | null } {
    const result = spawnSync(double.command, ['-c', double.configDir, ...args], {
      encoding: 'utf8',
      timeout: 10_000,
      ...(input === undefined ? { stdio: ['ignore', 'pipe', 'pipe'] } : { input }),
    });
    return { stdout: result.stdout, stderr: result.stderr, status: result.status };
  }

  beforeEach(() => {
    rmSync(join(tempDir, 'd'), { recursive: true, force: true });
    double = UciCliDouble.create(join(tempDir, 'd'), { test: testConfig });
  });

  after(() => rmSync(tempDir, { recursive: true, force: true }));

  it('exports a config as uci does, anonymous sections unnamed unless -n', () => {
    const exported = uci(['export', 'test']);
    assert.equal(exported.status, 0);
    assert.equal(
      exported.stdout,
      "package test\n\nconfig type 'section'\n\toption opt 'val'\n\tlist list_opt 'val0'\n\tlist list_opt 'val1'\n\n" +
        "config device\n\toption name 'br-lan'\n\tlist ports 'lan1'\n\nconfig device\n\toption name 'br-guest'\n\n",
    );
    assert.match(
      uci(['-n', 'export', 'test']).stdout,
      /config device 'cfg[0-9a-f]{6}'\n\toption name 'br-lan'/,
    );
    assert.deepEqual(uci(['-q', 'export', 'nilpackage']), { stdout: '', stderr: '', status: 1 });
  });

  it('gets values, types and lists; what is not there is "uci: Entry not found", exit 1', () => {
    assert.deepEqual(uci(['get', 'test.section.opt']), { stdout: 'val\n', stderr: '', status: 0 });
    assert.equal(uci(['get', 'test.section']).stdout, 'type\n');
    assert.equal(uci(['get', 'test.section.list_opt']).stdout, 'val0 val1\n');
    assert.equal(uci(['get', 'test.@device[-1].name']).stdout, 'br-guest\n');
    assert.deepEqual(uci(['get', 'test.section.nope']), {
      stdout: '',
      stderr: 'uci: Entry not found\n',
      status: 1,
    });
    assert.deepEqual(uci(['-q', 'get', 'test.nope']), { stdout: '', stderr: '', status: 1 });
    for (const path of [
      'test.',
      'test.section.',
      'test.section.opt.',
      'test.@',
      'test.@zer.',
      'test.@[28]',
    ]) {
      const result = uci(['-q', 'get', path]);
      assert.ok(result.status !== 0 && result.stdout === '', path);
    }
  });

  it('shows anonymous sections as @type[index], lists quoted', () => {
    const shown = uci(['show', 'test']).stdout;
    assert.match(shown, /^test\.section\.list_opt='val0' 'val1'$/m);
    assert.match(shown, /^test\.@device\[1\]\.name='br-guest'$/m);
    assert.match(uci(['-X', 'show', 'test']).stdout, /^test\.cfg[0-9a-f]{6}\.name='br-lan'$/m);
  });

  it('keeps changes pending until commit, which writes the whole file and moves a changed option to the end', () => {
    assert.equal(uci(['set', 'test.section.opt=new']).status, 0);
    assert.equal(uci(['add_list', 'test.section.list_opt=val2']).status, 0);
    assert.equal(uci(['delete', 'test.@device[0]']).status, 0);
    assert.equal(double.file('test'), testConfig, 'the file is unchanged');
    const changes = uci(['changes', 'test']).stdout.split('\n');
    assert.deepEqual(changes.slice(0, 2), ["test.section.opt='new'", "test.section.list_opt+='val2'"]);
    assert.match(changes[2] ?? '', /^-test\.cfg[0-9a-f]{6}$/);
    assert.equal(uci(['get', 'test.section.opt']).stdout, 'new\n', 'reads see them');
    assert.equal(uci(['commit', 'test']).status, 0);
    assert.equal(
      double.file('test'),
      "\nconfig type 'section'\n\tlist list_opt 'val0'\n\tlist list_opt 'val1'\n\tlist list_opt 'val2'\n\toption opt 'new'\n\n" +
        "config device\n\toption name 'br-guest'\n\n",
    );
    assert.equal(uci(['changes', 'test']).stdout, '');
    assert.deepEqual(readdirSync(double.saveDir), []);
  });

  it('refuses options of a missing section and deletes of what is not there', () => {
    assert.deepEqual(uci(['set', 'test.nope.opt=1']), {
      stdout: '',
      stderr: 'uci: Invalid argument\n',
      status: 1,
    });
    assert.deepEqual(uci(['delete', 'test.section.nope']), {
      stdout: '',
      stderr: 'uci: Entry not found\n',
      status: 1,
    });
    assert.equal(uci(['changes']).stdout, '');
  });

  it('adds anonymous sections by a generated name', () => {
    const added = uci(['add', 'test', 'device']);
    assert.match(added.stdout, /^cfg[0-9a-f]{6}\n$/);
    assert.equal(uci(['changes', 'test']).stdout, `test.${added.stdout.trim()}='device'\n`);
    uci(['commit', 'test']);
    assert.ok(double.file('test').endsWith("config device\n\toption name 'br-guest'\n\nconfig device\n\n"));
  });

  it('runs a batch from its input: a failing command does not stop it, the batch exits 0, exit ends it', () => {
    const result = uci(
      ['batch'],
      [
        "set test.new='interface'",
        "set test.new.proto='static' # a comment",
        "set test.missing.proto='dhcp'",
        'commit test',
        "set test.new.after='exit stops before this'",
        'exit',
        "set test.never='interface'",
        '',
      ].join('\n'),
    );
    assert.deepEqual(result, { stdout: '', stderr: 'uci: Invalid argument\n', status: 0 });
    assert.match(double.file('test'), /\nconfig interface 'new'\n\toption proto 'static'\n\n$/);
    assert.equal(uci(['changes', 'test']).stdout, "test.new.after='exit stops before this'\n");
    assert.equal(uci(['-q', 'get', 'test.never']).status, 1);
  });

  it('imports an export back, replacing the config and committing it', () => {
    const exported = uci(['export', 'test']).stdout;
    uci(['set', 'test.section.opt=changed']);
    uci(['commit', 'test']);
    assert.equal(uci(['import', 'test'], exported).status, 0);
    assert.equal(`package test\n${double.file('test')}`, exported);
  });

  it('reverts pending changes and prints usage, exit 255, for a command it does not know', () => {
    uci(['set', 'test.section.opt=new']);
    assert.equal(uci(['revert', 'test']).status, 0);
    assert.equal(uci(['changes', 'test']).stdout, '');
    const unknown = uci(['frobnicate', 'test']);
    assert.equal(unknown.status, 255);
    assert.match(unknown.stderr, /^Usage: uci \[<options>\] <command> \[<arguments>\]/);
  });
});
