/**
 * A TEST DOUBLE of OpenWrt's `uci` command (libuci's cli.c), for the openwrt driver's local
 * transport: UciCliDouble.create writes an executable script that runs this module with node over
 * config files in a temporary directory, read and written with the project's own uci-format.ts as
 * libuci reads and writes them. It behaves as uci does:
 * - options -c CONFDIR, -q (no error messages), -d DELIM (between list items of show and get),
 *   -f FILE (input instead of stdin), -m (import merges), -n / -N (name anonymous sections on
 *   export, or not: the default), -X (show anonymous sections by name, not as @type[index]);
 * - commands show, get, set, add, add_list, del_list, delete (del), revert, changes, commit,
 *   export, import and batch: one command a line of the input, quoted as in config files; one
 *   that fails prints its error and the batch goes on and exits 0; `exit` ends it;
 * - changes are saved as libuci's delta lines (`network.lan.proto='static'`, `-network.x`,
 *   `+network.cfg0a12b3='device'`, `|…` for list add, `~…` for list del) in the save directory,
 *   one file per config, until commit writes the whole config file (as libuci does: a temporary
 *   file renamed over it) and clears them; setting an option it has moves it to the section's end;
 * - anonymous sections are named as libuci names them (cfg, a counter and a hash of the type and
 *   options) and are addressed as @type[index], a negative index counting from the end;
 * - errors are libuci's, on stderr unless -q: "uci: Entry not found" (exit 1) for what is not
 *   there, "uci: Invalid argument" for a malformed path or an option of a missing section,
 *   "uci: Parse error (…) at line N, byte 0" for a config it cannot read; usage and 255 for an
 *   unknown command.
 * The double's default save directory (the real one is /tmp/.uci) comes from UCI_DOUBLE_SAVEDIR,
 * and each invocation's argv is appended to UCI_DOUBLE_LOG as a JSON line.
 * Not doubled: rename, reorder, -p/-P (more delta paths), -S (lenient parsing), the comments newer
 * libuci keeps.
 */

import {
  appendFileSync,
  chmodSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  batchWords,
  parseUci,
  quoteUci,
  serializeUci,
  type UciSection,
  UciSyntaxError,
  type UciValue,
} from '../../../agents/network/uci-format.js';

export class UciCliDouble {
  private constructor(
    /** The executable to run as `uci`. */
    readonly command: string,
    /** Where the config files are: pass it with -c (the double has no /etc/config). */
    readonly configDir: string,
    readonly saveDir: string,
    private readonly logFile: string,
  ) {}

  /** A double in `dir` (made if need be) whose configs are `files`, by name. */
  static create(dir: string, files: Record<string, string>): UciCliDouble {
    const configDir = join(dir, 'config');
    const saveDir = join(dir, 'uci-changes');
    const logFile = join(dir, 'uci-calls.log');
    mkdirSync(configDir, { recursive: true });
    for (const [name, text] of Object.entries(files)) writeFileSync(join(configDir, name), text);
    const command = join(dir, 'uci');
    const script = fileURLToPath(import.meta.url);
    writeFileSync(
      command,
      [
        '#!/bin/sh',
        `UCI_DOUBLE_SAVEDIR=${shellWord(saveDir)} UCI_DOUBLE_LOG=${shellWord(logFile)} \\`,
        `  exec ${shellWord(process.execPath)} ${shellWord(script)} "$@"`,
        '',
      ].join('\n'),
    );
    chmodSync(command, 0o755);
    return new UciCliDouble(command, configDir, saveDir, logFile);
  }

  /** A config file as it is now. */
  file(config: string): string {
    return readFileSync(join(this.configDir, config), 'utf8');
  }

  sections(config: string): UciSection[] {
    return parseUci(this.file(config));
  }

  /** The arguments of every invocation so far, options included. */
  calls(): string[][] {
    let text = '';
    try {
      text = readFileSync(this.logFile, 'utf8');
    } catch {
      // not run yet
    }
    return text
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as string[]);
  }
}

function shellWord(word: string): string {
  return `'${word.replaceAll("'", "'\\''")}'`;
}

// --- the command ---------------------------------------------------------------------------------

interface Section {
  type: string;
  name: string;
  anonymous: boolean;
  /** In order; setting one it has moves it to the end, as libuci does. */
  options: Map<string, UciValue>;
}

interface Package {
  name: string;
  sections: Section[];
  /** libuci's n_section: counts allocated sections, and names anonymous ones. */
  counter: number;
}

type DeltaCommand = 'add' | 'change' | 'remove' | 'list-add' | 'list-del';

interface Delta {
  command: DeltaCommand;
  section: string;
  option?: string;
  value?: string;
}

const deltaPrefix: Record<DeltaCommand, string> = {
  add: '+',
  change: '',
  remove: '-',
  'list-add': '|',
  'list-del': '~',
};

type ErrorKind = 'NotFound' | 'Invalid' | 'Parse' | 'IO';

const errorWords: Record<ErrorKind, string> = {
  NotFound: 'Entry not found',
  Invalid: 'Invalid argument',
  Parse: 'Parse error',
  IO: 'I/O error',
};

class UciFailure extends Error {
  constructor(
    readonly kind: ErrorKind,
    readonly detail = '',
  ) {
    super(`${errorWords[kind]}${detail}`);
  }
}

interface Context {
  confDir: string;
  saveDir: string;
  quiet: boolean;
  delimiter: string;
  exportNames: boolean;
  showExt: boolean;
  merge: boolean;
  batch: boolean;
  inputFile?: string;
  out: string[];
  err: string[];
}

const namePattern = /^[A-Za-z0-9_]+$/;
const packagePattern = /^[A-Za-z0-9_-]+$/;
const typePattern = /^[!-~]+$/;

function perror(ctx: Context, failure: UciFailure): void {
  if (!ctx.quiet) ctx.err.push(`uci: ${failure.message}\n`);
}

function input(ctx: Context): string {
  return readFileSync(ctx.inputFile ?? 0, 'utf8');
}

// libuci's djbhash over a section's type and options, for the name of an anonymous section.
function djbhash(hash: number, text: string): number {
  let h = hash === -1 ? 5381 : hash;
  for (const c of Buffer.from(text)) h = (Math.imul(h, 33) + (c > 127 ? c - 256 : c)) >>> 0;
  return h & 0x7fffffff;
}

function anonymousName(pkg: Package, type: string, options: Map<string, UciValue>): string {
  let hash = djbhash(-1, type);
  for (const [name, value] of options) {
    hash = djbhash(hash, name);
    if (typeof value === 'string') hash = djbhash(hash, value);
  }
  pkg.counter += 1;
  return `cfg${pkg.counter.toString(16).padStart(2, '0')}${(hash % 65536).toString(16).padStart(4, '0')}`;
}

/** A config's text as libuci parses it: its sections, anonymous ones named. */
function parsePackage(name: string, text: string): Package {
  let parsed: UciSection[];
  try {
    parsed = parseUci(text);
  } catch (err) {
    if (!(err instanceof UciSyntaxError)) throw err;
    throw new UciFailure('Parse', ` (${err.message.replace(/^line \d+: /, '')}) at line ${err.line}, byte 0`);
  }
  const pkg: Package = { name, sections: [], counter: 0 };
  for (const section of parsed) {
    pkg.counter += 1;
    const options = new Map(Object.entries(section.options));
    pkg.sections.push({
      type: section.type,
      name: section.name ?? anonymousName(pkg, section.type, options),
      anonymous: section.name === undefined,
      options,
    });
  }
  return pkg;
}

function readPackage(ctx: Context, name: string): Package {
  if (!packagePattern.test(name)) throw new UciFailure('Invalid');
  let text: string;
  try {
    text = readFileSync(join(ctx.confDir, name), 'utf8');
  } catch {
    throw new UciFailure('NotFound');
  }
  return parsePackage(name, text);
}

function deltaPath(ctx: Context, name: string): string {
  return join(ctx.saveDir, name);
}

function readDeltas(ctx: Context, name: string): Delta[] {
  let text = '';
  try {
    text = readFileSync(deltaPath(ctx, name), 'utf8');
  } catch {
    return [];
  }
  return text.split('\n').flatMap((line): Delta[] => {
    const prefix = Object.entries(deltaPrefix).find(([, p]) => p !== '' && line.startsWith(p));
    const command = (prefix?.[0] ?? 'change') as DeltaCommand;
    const [word] = batchWords(prefix ? line.slice(1) : line)[0] ?? [];
    if (word === undefined) return [];
    const equals = word.indexOf('=');
    const path = equals < 0 ? word : word.slice(0, equals);
    const [, section, option] = path.split('.');
    if (section === undefined) return [];
    return [
      {
        command,
        section,
        ...(option === undefined ? {} : { option }),
        ...(equals < 0 ? {} : { value: word.slice(equals + 1) }),
      },
    ];
  });
}

function deltaLine(pkg: string, delta: Delta): string {
  const path = [pkg, delta.section, ...(delta.option === undefined ? [] : [delta.option])].join('.');
  const value = delta.value === undefined ? '' : `=${quoteUci(delta.value)}`;
  return `${deltaPrefix[delta.command]}${path}${value}\n`;
}

function saveDeltas(ctx: Context, pkg: string, deltas: readonly Delta[]): void {
  if (deltas.length === 0) return;
  mkdirSync(ctx.saveDir, { recursive: true });
  appendFileSync(deltaPath(ctx, pkg), deltas.map((delta) => deltaLine(pkg, delta)).join(''));
}

/** A config as uci sees it: the file with its saved changes. */
function load(ctx: Context, name: string): Package {
  const pkg = readPackage(ctx, name);
  for (const delta of readDeltas(ctx, name)) {
    try {
      applyDelta(pkg, delta);
    } catch {
      // libuci skips a change that no longer applies
    }
  }
  return pkg;
}

function findSection(pkg: Package, name: string): Section | undefined {
  return pkg.sections.find((section) => section.name === name);
}

/** A change to `pkg`, as libuci's list.c makes it; UciFailure when it cannot. */
function applyDelta(pkg: Package, delta: Delta): void {
  const { section: name, option, value } = delta;
  const section = findSection(pkg, name);
  switch (delta.command) {
    case 'add':
    case 'change': {
      if (value === undefined) throw new UciFailure('Invalid');
      if (option === undefined) {
        if (section) section.type = value;
        else {
          pkg.counter += 1;
          pkg.sections.push({ type: value, name, anonymous: delta.command === 'add', options: new Map() });
        }
        return;
      }
      if (!section) throw new UciFailure('Invalid');
      if (value === '') section.options.delete(option);
      else {
        section.options.delete(option);
        section.options.set(option, value);
      }
      return;
    }
    case 'list-add': {
      if (!section || option === undefined || value === undefined) throw new UciFailure('Invalid');
      const previous = section.options.get(option);
      if (Array.isArray(previous)) previous.push(value);
      else {
        section.options.delete(option);
        section.options.set(option, previous === undefined ? [value] : [previous, value]);
      }
      return;
    }
    case 'list-del': {
      if (!section || option === undefined || value === undefined) throw new UciFailure('Invalid');
      const previous = section.options.get(option);
      if (Array.isArray(previous)) {
        section.options.set(
          option,
          previous.filter((item) => item !== value),
        );
      }
      return;
    }
    case 'remove': {
      if (!section) throw new UciFailure('NotFound');
      if (option === undefined) {
        pkg.sections.splice(pkg.sections.indexOf(section), 1);
        return;
      }
      const previous = section.options.get(option);
      if (previous === undefined) throw new UciFailure('NotFound');
      if (Array.isArray(previous) && value !== undefined) previous.splice(Number(value), 1);
      else section.options.delete(option);
    }
  }
}

interface Pointer {
  pkg: Package;
  /** The section's name as given, or the name of the section an @type[index] found. */
  sectionName?: string;
  section?: Section;
  option?: string;
  found?: UciValue;
  value?: string;
  /** Everything named was found. */
  complete: boolean;
}

/** libuci's uci_lookup_ptr with extended syntax: "config[.section[.option]][=value]". */
function lookup(ctx: Context, text: string): Pointer {
  const equals = text.indexOf('=');
  const path = equals < 0 ? text : text.slice(0, equals);
  const value = equals < 0 ? undefined : text.slice(equals + 1);
  const [pkgName = '', sectionRef, option, ...more] = path.split('.');
  if (more.length > 0 || (option !== undefined && !namePattern.test(option))) throw new UciFailure('Invalid');
  const pkg = load(ctx, pkgName);
  const pointer: Pointer = { pkg, complete: false, ...(value === undefined ? {} : { value }) };
  if (sectionRef === undefined) return { ...pointer, complete: true };
  let section: Section | undefined;
  if (namePattern.test(sectionRef)) {
    section = findSection(pkg, sectionRef);
    pointer.sectionName = sectionRef;
  } else {
    const match = /^@([^[\]]*)\[(-?\d+)\]$/.exec(sectionRef);
    if (!match) throw new UciFailure('Invalid');
    const [, type = '', index = ''] = match;
    if (type !== '' && !typePattern.test(type)) throw new UciFailure('Invalid');
    const candidates = pkg.sections.filter((s) => type === '' || s.type === type);
    const at = Number(index);
    section = candidates[at < 0 ? candidates.length + at : at];
    if (section) pointer.sectionName = section.name;
  }
  if (option !== undefined) pointer.option = option;
  if (!section) return pointer;
  pointer.section = section;
  if (option === undefined) return { ...pointer, complete: true };
  const found = section.options.get(option);
  if (found === undefined) return pointer;
  return { ...pointer, found, complete: true };
}

function printValue(value: string): string {
  return quoteUci(value);
}

function showValue(ctx: Context, value: UciValue, quote: boolean): string {
  if (!Array.isArray(value)) return quote ? printValue(value) : value;
  return value
    .map((item) => (!quote && !/[ \t\r\n]/.test(item) ? item : printValue(item)))
    .join(ctx.delimiter);
}

function showPackage(ctx: Context, pkg: Package): void {
  const indexes = new Map<string, number>();
  for (const section of pkg.sections) {
    const index = indexes.get(section.type) ?? 0;
    indexes.set(section.type, index + 1);
    const ref = ctx.showExt && section.anonymous ? `@${section.type}[${index}]` : section.name;
    showSection(ctx, pkg, section, ref);
  }
}

function showSection(ctx: Context, pkg: Package, section: Section, ref = section.name): void {
  ctx.out.push(`${pkg.name}.${ref}=${section.type}\n`);
  for (const [option, value] of section.options) {
    ctx.out.push(`${pkg.name}.${ref}.${option}=${showValue(ctx, value, true)}\n`);
  }
}

function asSections(pkg: Package, names: boolean): UciSection[] {
  return pkg.sections.map((section) => ({
    type: section.type,
    ...(section.anonymous && !names ? {} : { name: section.name }),
    options: Object.fromEntries(section.options),
  }));
}

/** Writes the config as libuci's commit does: the whole file, through a temporary file renamed over it. */
function writePackage(ctx: Context, pkg: Package): void {
  const path = join(ctx.confDir, pkg.name);
  const temporary = join(ctx.confDir, `.${pkg.name}.uci-${process.pid}`);
  let mode = 0o644;
  try {
    mode = statSync(path).mode & 0o7777;
  } catch {
    // a new config
  }
  writeFileSync(temporary, serializeUci(asSections(pkg, false)), { mode });
  renameSync(temporary, path);
}

function configs(ctx: Context): string[] {
  return readdirSync(ctx.confDir)
    .filter((name) => !name.includes('.') && packagePattern.test(name))
    .sort();
}

/** One command; its exit status. */
function command(ctx: Context, argv: readonly string[]): number {
  const [verb = '', ...args] = argv;
  const name = verb.toLowerCase();
  try {
    switch (name) {
      case 'batch':
        return ctx.batch ? 255 : batch(ctx);
      case 'show':
      case 'changes':
      case 'export':
      case 'commit':
        if (args.length > 1) return 255;
        if (args.length === 1) return packageCommand(ctx, name, args[0] ?? '');
        for (const config of configs(ctx)) packageCommand(ctx, name, config);
        return 0;
      case 'get':
      case 'set':
      case 'add_list':
      case 'del_list':
      case 'del':
      case 'delete':
      case 'revert':
        if (args.length !== 1) return 255;
        return sectionCommand(ctx, name, args[0] ?? '');
      case 'add':
        if (args.length !== 2) return 255;
        return add(ctx, args[0] ?? '', args[1] ?? '');
      case 'import':
        return importConfig(ctx, args);
      default:
        return 255;
    }
  } catch (err) {
    if (!(err instanceof UciFailure)) throw err;
    perror(ctx, err);
    return 1;
  }
}

function packageCommand(ctx: Context, name: string, tuple: string): number {
  let pointer: Pointer;
  try {
    pointer = lookup(ctx, tuple);
  } catch (err) {
    if (!(err instanceof UciFailure)) throw err;
    perror(ctx, err);
    return 1;
  }
  const { pkg } = pointer;
  if (name === 'changes') {
    for (const delta of readDeltas(ctx, pkg.name)) {
      const path = [pkg.name, delta.section, ...(delta.option === undefined ? [] : [delta.option])].join('.');
      const op = delta.command === 'list-add' ? '+=' : delta.command === 'list-del' ? '-=' : '=';
      const value =
        delta.command === 'remove' || delta.value === undefined ? '' : `${op}${printValue(delta.value)}`;
      ctx.out.push(`${delta.command === 'remove' ? '-' : ''}${path}${value}\n`);
    }
  } else if (name === 'commit') {
    writePackage(ctx, pkg);
    rmSync(deltaPath(ctx, pkg.name), { force: true });
  } else if (name === 'export') {
    ctx.out.push(`package ${pkg.name}\n${serializeUci(asSections(pkg, ctx.exportNames))}`);
  } else {
    if (!pointer.complete) {
      perror(ctx, new UciFailure('NotFound'));
      return 1;
    }
    if (pointer.option !== undefined && pointer.section && pointer.found !== undefined) {
      ctx.out.push(
        `${pkg.name}.${pointer.section.name}.${pointer.option}=${showValue(ctx, pointer.found, true)}\n`,
      );
    } else if (pointer.section) showSection(ctx, pkg, pointer.section);
    else showPackage(ctx, pkg);
  }
  return 0;
}

function sectionCommand(ctx: Context, name: string, tuple: string): number {
  const pointer = lookup(ctx, tuple);
  const { pkg, section, option, value, complete } = pointer;
  if (value !== undefined && (name === 'get' || name === 'revert')) return 1;
  const delta = (command: DeltaCommand, more: Partial<Delta> = {}): Delta => ({
    command,
    section: pointer.sectionName ?? '',
    ...(option === undefined ? {} : { option }),
    ...more,
  });
  let change: Delta | undefined;
  switch (name) {
    case 'get':
      if (!complete) throw new UciFailure('NotFound');
      if (pointer.found !== undefined) ctx.out.push(`${showValue(ctx, pointer.found, false)}\n`);
      else if (section) ctx.out.push(`${section.type}\n`);
      return 0;
    case 'revert': {
      const kept = readDeltas(ctx, pkg.name).filter(
        (d) =>
          pointer.sectionName !== undefined &&
          (d.section !== pointer.sectionName || (option !== undefined && d.option !== option)),
      );
      rmSync(deltaPath(ctx, pkg.name), { force: true });
      saveDeltas(ctx, pkg.name, kept);
      return 0;
    }
    case 'set':
      if (value === undefined || pointer.sectionName === undefined) throw new UciFailure('Invalid');
      if (option !== undefined && !section) throw new UciFailure('Invalid');
      if (option === undefined && value !== '' && !typePattern.test(value)) throw new UciFailure('Invalid');
      if (value === '') {
        if (!complete) return 0;
        change = delta('remove');
      } else if (option !== undefined && pointer.found === value) return 0;
      else change = delta('change', { value });
      break;
    case 'add_list':
    case 'del_list':
      if (!section || option === undefined || value === undefined) throw new UciFailure('Invalid');
      if (name === 'del_list' && !Array.isArray(pointer.found)) return 0;
      change = delta(name === 'add_list' ? 'list-add' : 'list-del', { value });
      break;
    default:
      if (value !== undefined && !/^-?\d+/.test(value)) return 1;
      if (!complete) throw new UciFailure('NotFound');
      if (!section) throw new UciFailure('Invalid');
      change = delta('remove', Array.isArray(pointer.found) && value ? { value } : {});
  }
  applyDelta(pkg, change);
  saveDeltas(ctx, pkg.name, [change]);
  return 0;
}

function add(ctx: Context, pkgName: string, type: string): number {
  const pkg = load(ctx, pkgName);
  if (!typePattern.test(type)) throw new UciFailure('Invalid');
  pkg.counter += 1;
  const name = anonymousName(pkg, type, new Map());
  pkg.sections.push({ type, name, anonymous: true, options: new Map() });
  saveDeltas(ctx, pkg.name, [{ command: 'add', section: name, value: type }]);
  ctx.out.push(`${name}\n`);
  return 0;
}

/** `uci import [CONFIG]`: the input replaces the config (a commit), or with -m is merged in as changes. */
function importConfig(ctx: Context, args: readonly string[]): number {
  if (args.length > 1 || (ctx.merge && args.length === 0)) return 255;
  const text = input(ctx);
  // With a config named, everything is of it; otherwise each `package` line starts one.
  const parts = new Map<string, string>();
  let current = args[0];
  for (const line of text.split('\n')) {
    const header = /^\s*package\s+'?([^'\s]+)'?\s*$/.exec(line);
    if (header) {
      if (args[0] === undefined) current = header[1];
      continue;
    }
    if (current === undefined) throw new UciFailure('Parse', ' (no package) at line 1, byte 0');
    parts.set(current, `${parts.get(current) ?? ''}${line}\n`);
  }
  for (const [name, part] of parts) {
    if (!packagePattern.test(name)) throw new UciFailure('Invalid');
    const imported = parsePackage(name, part);
    let existing: Package | undefined;
    if (ctx.merge) {
      try {
        existing = load(ctx, name);
      } catch {
        existing = undefined;
      }
    }
    if (existing) {
      const deltas: Delta[] = [];
      for (const section of imported.sections) {
        const sectionName = section.anonymous
          ? anonymousName(existing, section.type, new Map())
          : section.name;
        deltas.push({
          command: section.anonymous ? 'add' : 'change',
          section: sectionName,
          value: section.type,
        });
        for (const [option, value] of section.options) {
          for (const item of Array.isArray(value) ? value : [value]) {
            deltas.push({
              command: Array.isArray(value) ? 'list-add' : 'change',
              section: sectionName,
              option,
              value: item,
            });
          }
        }
      }
      saveDeltas(ctx, name, deltas);
    } else writePackage(ctx, imported);
  }
  return 0;
}

function batch(ctx: Context): number {
  ctx.batch = true;
  let commands: string[][];
  try {
    commands = batchWords(input(ctx));
  } catch (err) {
    if (!(err instanceof UciSyntaxError)) throw err;
    perror(ctx, new UciFailure('Parse', ` (${err.message})`));
    return 0;
  }
  for (const words of commands) {
    if (words.length > 4) {
      if (!ctx.quiet) ctx.err.push('Too many arguments\n');
      continue;
    }
    if (words[0]?.toLowerCase() === 'exit') break;
    if (command(ctx, words) === 255 && !ctx.quiet) ctx.err.push('Unknown command\n');
  }
  return 0;
}

const usage = `Usage: uci [<options>] <command> [<arguments>]

Commands:
\tbatch
\texport     [<config>]
\timport     [<config>]
\tchanges    [<config>]
\tcommit     [<config>]
\tadd        <config> <section-type>
\tadd_list   <config>.<section>.<option>=<string>
\tdel_list   <config>.<section>.<option>=<string>
\tshow       [<config>[.<section>[.<option>]]]
\tget        <config>.<section>[.<option>]
\tset        <config>.<section>[.<option>]=<value>
\tdelete     <config>[.<section>[[.<option>][=<id>]]]
\trevert     <config>[.<section>[.<option>]]

`;

/** The command line as `uci` runs it: output, errors and exit status. */
export function runUci(
  argv: readonly string[],
  env: { saveDir: string },
): { stdout: string; stderr: string; status: number } {
  const ctx: Context = {
    confDir: '/etc/config',
    saveDir: env.saveDir,
    quiet: false,
    delimiter: ' ',
    exportNames: false,
    showExt: true,
    merge: false,
    batch: false,
    out: [],
    err: [],
  };
  let index = 0;
  for (; index < argv.length; index++) {
    const arg = argv[index] ?? '';
    if (!arg.startsWith('-') || arg === '-') break;
    const flag = arg.slice(1);
    const takesValue = ['c', 'd', 'f'].includes(flag);
    const value = takesValue ? argv[++index] : undefined;
    if (takesValue && value === undefined) return { stdout: '', stderr: usage, status: 0 };
    if (flag === 'c') ctx.confDir = value ?? '';
    else if (flag === 'd') ctx.delimiter = value ?? '';
    else if (flag === 'f') ctx.inputFile = value ?? '';
    else if (flag === 'm') ctx.merge = true;
    else if (flag === 'n') ctx.exportNames = true;
    else if (flag === 'N') ctx.exportNames = false;
    else if (flag === 'q') ctx.quiet = true;
    else if (flag === 'X') ctx.showExt = false;
    else return { stdout: '', stderr: usage, status: 0 };
  }
  const args = argv.slice(index);
  if (args.length === 0) return { stdout: '', stderr: usage, status: 0 };
  const status = command(ctx, args);
  return {
    stdout: ctx.out.join(''),
    stderr: ctx.err.join('') + (status === 255 ? usage : ''),
    status,
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const argv = process.argv.slice(2);
  const log = process.env.UCI_DOUBLE_LOG;
  if (log) appendFileSync(log, `${JSON.stringify(argv)}\n`);
  const { stdout, stderr, status } = runUci(argv, { saveDir: process.env.UCI_DOUBLE_SAVEDIR ?? '/tmp/.uci' });
  process.stdout.write(stdout);
  process.stderr.write(stderr);
  process.exitCode = status;
}
