/**
 * OpenWrt's UCI configuration format, read and written as libuci does (file.c), so Loam can
 * review, test and merge what it sends a router without one:
 * - `config <type> ['<name>']` opens a section; `option <name> '<value>'` sets a value and
 *   `list <name> '<value>'` appends to a list in the section opened last.
 * - A word may be unquoted, 'single-quoted' (nothing is special inside) or "double-quoted" (a
 *   backslash escapes the next character), and parts run together (`'a'"b"c` is `abc`). Outside
 *   single quotes a backslash escapes the next character, or joins the next line when it ends one;
 *   `#` outside quotes starts a comment and `;` ends a command. Quoted words may span lines.
 * - Sections and options are named with letters, digits and `_`; a second `config` with a name
 *   already seen continues that section.
 * `uci batch` scripts are read with the same tokenizer.
 */

export type UciValue = string | string[];

export interface UciSection {
  type: string;
  /** Undefined for an anonymous section. */
  name?: string;
  options: Record<string, UciValue>;
}

export class UciSyntaxError extends Error {
  constructor(
    readonly line: number,
    reason: string,
  ) {
    super(`line ${line}: ${reason}`);
    this.name = 'UciSyntaxError';
  }
}

/** One command: its words, and the (0-based) lines it starts and ends on. */
interface Command {
  words: string[];
  firstLine: number;
  lastLine: number;
}

function tokenize(text: string): Command[] {
  const commands: Command[] = [];
  let words: string[] = [];
  let word: string | undefined;
  let line = 0;
  let firstLine = 0;
  let quote: "'" | '"' | undefined;
  let quoteLine = 0;

  const startWord = () => {
    if (word !== undefined) return;
    word = '';
    if (words.length === 0) firstLine = line;
  };
  const append = (c: string) => {
    startWord();
    word += c;
    if (c === '\n') line++;
  };
  const endWord = () => {
    if (word !== undefined) words.push(word);
    word = undefined;
  };
  const endCommand = () => {
    endWord();
    if (words.length > 0) commands.push({ words, firstLine, lastLine: line });
    words = [];
  };
  /** A backslash at `i`: escapes the next character, or joins the next line. Returns the new index. */
  const backslash = (i: number): number => {
    const next = text[i + 1];
    if (next === undefined) return i;
    if (next === '\n' || (next === '\r' && text[i + 2] === '\n')) {
      line++;
      return next === '\n' ? i + 1 : i + 2;
    }
    append(next);
    return i + 1;
  };

  for (let i = 0; i < text.length; i++) {
    const c = text[i] as string;
    if (quote === "'") {
      if (c === "'") quote = undefined;
      else append(c);
      continue;
    }
    if (quote === '"') {
      if (c === '"') quote = undefined;
      else if (c === '\\') i = backslash(i);
      else append(c);
      continue;
    }
    switch (c) {
      case "'":
      case '"':
        startWord();
        quote = c;
        quoteLine = line;
        break;
      case '\\':
        i = backslash(i);
        break;
      case '#':
        endWord();
        while (i + 1 < text.length && text[i + 1] !== '\n') i++;
        break;
      case ';':
        endCommand();
        break;
      case '\n':
        endCommand();
        line++;
        break;
      default:
        if (/\s/.test(c)) endWord();
        else append(c);
    }
  }
  if (quote !== undefined) throw new UciSyntaxError(quoteLine + 1, `unterminated ${quote}`);
  endCommand();
  return commands;
}

const namePattern = /^[A-Za-z0-9_]+$/;
const typePattern = /^[!-~]+$/;

function keyword(word: string, full: string): boolean {
  return word === full || word === full[0];
}

interface ParsedConfig {
  sections: UciSection[];
  /** The lines (0-based, inclusive) each section was written on; more than one span when continued. */
  spans: Map<UciSection, [number, number][]>;
}

function parseConfig(text: string): ParsedConfig {
  const sections: UciSection[] = [];
  const spans = new Map<UciSection, [number, number][]>();
  let current: [UciSection, [number, number]] | undefined;
  for (const { words, firstLine, lastLine } of tokenize(text)) {
    const [command = '', first, second] = words;
    const fail = (reason: string) => new UciSyntaxError(firstLine + 1, reason);
    if (keyword(command, 'package')) {
      current = undefined;
    } else if (keyword(command, 'config')) {
      if (first === undefined || !typePattern.test(first)) throw fail('invalid or missing section type');
      if (second !== undefined && second !== '' && !namePattern.test(second)) {
        throw fail(`invalid section name ${JSON.stringify(second)}`);
      }
      const named = second === undefined || second === '' ? undefined : second;
      let section = named === undefined ? undefined : sections.find((s) => s.name === named);
      if (section) section.type = first;
      else {
        section = { type: first, ...(named === undefined ? {} : { name: named }), options: {} };
        sections.push(section);
        spans.set(section, []);
      }
      const span: [number, number] = [firstLine, lastLine];
      spans.get(section)?.push(span);
      current = [section, span];
    } else if (keyword(command, 'option') || keyword(command, 'list')) {
      if (!current) throw fail('option or list before the first section');
      if (first === undefined || !namePattern.test(first)) throw fail('invalid or missing option name');
      const [section, span] = current;
      const value = second ?? '';
      const previous = section.options[first];
      if (keyword(command, 'option')) section.options[first] = value;
      else {
        section.options[first] =
          previous === undefined ? [value] : [...(Array.isArray(previous) ? previous : [previous]), value];
      }
      span[1] = lastLine;
    } else {
      throw fail(`invalid command ${JSON.stringify(command)}`);
    }
  }
  return { sections, spans };
}

/** The sections of a UCI config file. Throws UciSyntaxError naming the line. */
export function parseUci(text: string): UciSection[] {
  return parseConfig(text).sections;
}

/** `'value'`, with single quotes escaped the way libuci writes them. */
export function quoteUci(value: string): string {
  return `'${value.replaceAll("'", "'\\''")}'`;
}

function sectionText(section: UciSection): string {
  const lines = [`\nconfig ${section.type}${section.name === undefined ? '' : ` ${quoteUci(section.name)}`}`];
  for (const [name, value] of Object.entries(section.options)) {
    if (Array.isArray(value)) lines.push(...value.map((item) => `\tlist ${name} ${quoteUci(item)}`));
    else lines.push(`\toption ${name} ${quoteUci(value)}`);
  }
  return `${lines.join('\n')}\n`;
}

/** A config file as `uci commit` writes it. */
export function serializeUci(sections: readonly UciSection[]): string {
  return `${sections.map(sectionText).join('')}\n`;
}

/**
 * Options of owned sections that the router sets itself and a renderer never produces (a
 * WireGuard private key made on the router): kept when the section is replaced.
 */
function carryOver(
  desired: UciSection,
  previous: UciSection | undefined,
  keep: readonly string[],
): UciSection {
  if (!previous || previous.type !== desired.type) return desired;
  const kept = Object.entries(previous.options).filter(
    ([name]) => keep.includes(name) && desired.options[name] === undefined,
  );
  return kept.length === 0
    ? desired
    : { ...desired, options: { ...desired.options, ...Object.fromEntries(kept) } };
}

/**
 * `text` with the sections `owns` selects replaced by `desired`: owned sections (and the blank
 * line before each) are cut out and `desired` is appended, so every other byte of the file stays
 * as it was and merging twice gives what merging once does.
 */
export function mergeUci(
  text: string,
  desired: readonly UciSection[],
  owns: (section: UciSection) => boolean,
  keep: readonly string[] = [],
): string {
  const { sections, spans } = parseConfig(text);
  const lines = text.split('\n');
  const cut = new Set<number>();
  const previous = new Map<string, UciSection>();
  for (const section of sections.filter(owns)) {
    if (section.name !== undefined) previous.set(section.name, section);
    for (const [first, last] of spans.get(section) ?? []) {
      for (let line = first; line <= last; line++) cut.add(line);
      if (first > 0 && !cut.has(first - 1) && lines[first - 1]?.trim() === '') cut.add(first - 1);
    }
  }
  const rest = lines.filter((_, index) => !cut.has(index)).join('\n');
  const body = rest === '' || rest.endsWith('\n') ? rest : `${rest}\n`;
  return (
    body +
    desired
      .map((section) =>
        sectionText(
          carryOver(section, section.name === undefined ? undefined : previous.get(section.name), keep),
        ),
      )
      .join('')
  );
}

// --- uci batch ---------------------------------------------------------------------------------

export type UciCommand =
  /** Without option: create the section (value is its type); with one: set a single value. */
  | { verb: 'set'; config: string; section: string; option?: string; value: string }
  | { verb: 'add_list'; config: string; section: string; option: string; value: string }
  | { verb: 'delete'; config: string; section: string; option?: string };

function commandPath(command: UciCommand): string {
  return [command.config, command.section, ...(command.option === undefined ? [] : [command.option])].join(
    '.',
  );
}

function batchLine(command: UciCommand): string {
  const path = commandPath(command);
  if (command.verb === 'delete') return `delete ${path}`;
  if (command.verb === 'add_list') return `add_list ${path}=${quoteUci(command.value)}`;
  // Creating a section sets its type, which is a bare word.
  return `set ${path}=${command.option === undefined ? command.value : quoteUci(command.value)}`;
}

/** A `uci batch` script: one command a line. */
export function formatBatch(commands: readonly UciCommand[]): string {
  return commands.map((command) => `${batchLine(command)}\n`).join('');
}

/** The words of each command of a `uci batch` script, quotes and escapes resolved. Throws UciSyntaxError. */
export function batchWords(text: string): string[][] {
  return tokenize(text).map((command) => command.words);
}

const batchVerbs = ['set', 'add_list', 'delete'] as const;

/** The set, add_list and delete commands of a `uci batch` script. Throws UciSyntaxError. */
export function parseBatch(text: string): UciCommand[] {
  return tokenize(text).map(({ words, firstLine }) => {
    const fail = (reason: string) => new UciSyntaxError(firstLine + 1, reason);
    const [verb = '', argument, extra] = words;
    const known = batchVerbs.find((v) => v === verb);
    if (!known) throw fail(`unsupported command ${JSON.stringify(verb)}`);
    if (argument === undefined || extra !== undefined) throw fail(`${verb} takes one argument`);
    const equals = argument.indexOf('=');
    const path = equals < 0 ? argument : argument.slice(0, equals);
    const value = equals < 0 ? undefined : argument.slice(equals + 1);
    const [config = '', section = '', option, ...more] = path.split('.');
    if (more.length > 0 || ![config, section, option ?? '_'].every((name) => namePattern.test(name))) {
      throw fail(`invalid path ${JSON.stringify(path)}`);
    }
    const where = { config, section, ...(option === undefined ? {} : { option }) };
    if (known === 'delete' && value === undefined) return { verb: known, ...where };
    if (known === 'set' && value !== undefined) return { verb: known, ...where, value };
    if (known === 'add_list' && value !== undefined && option !== undefined) {
      return { verb: known, config, section, option, value };
    }
    throw fail(`${verb} ${path}: ${value === undefined ? 'a value is missing' : 'takes no value'}`);
  });
}

export type UciConfigs = Record<string, readonly UciSection[]>;

/** What `uci batch` would make of `configs`: a new value, `configs` is not changed. */
export function applyBatch(
  configs: UciConfigs,
  commands: readonly UciCommand[],
): Record<string, UciSection[]> {
  const result: Record<string, UciSection[]> = Object.fromEntries(
    Object.entries(configs).map(([name, sections]) => [name, structuredClone([...sections])]),
  );
  for (const command of commands) {
    const sections = result[command.config];
    if (!sections) throw new Error(`uci: no config ${command.config}`);
    const index = sections.findIndex((s) => s.name === command.section);
    const section = sections[index];
    const missing = () => new Error(`uci: ${commandPath(command)}: entry not found`);
    if (command.verb === 'set' && command.option === undefined) {
      if (section) section.type = command.value;
      else sections.push({ type: command.value, name: command.section, options: {} });
      continue;
    }
    if (!section) throw missing();
    if (command.verb === 'set') section.options[command.option as string] = command.value;
    else if (command.verb === 'add_list') {
      const previous = section.options[command.option];
      section.options[command.option] =
        previous === undefined
          ? [command.value]
          : [...(Array.isArray(previous) ? previous : [previous]), command.value];
    } else if (command.option === undefined) sections.splice(index, 1);
    else if (section.options[command.option] === undefined) throw missing();
    else delete section.options[command.option];
  }
  return result;
}

/**
 * The batch that turns the owned sections of `existing` into `desired` (named sections), leaving
 * every other section alone: stale owned sections are deleted, new ones created, changed options
 * set (lists are replaced whole), and options in `keep` that the router set itself stay.
 */
export function diffUci(
  config: string,
  existing: readonly UciSection[],
  desired: readonly UciSection[],
  owns: (section: UciSection) => boolean,
  keep: readonly string[] = [],
): UciCommand[] {
  const previous = new Map(existing.filter(owns).map((section) => [section.name, section]));
  const wanted = new Set(desired.map((section) => section.name));
  const commands: UciCommand[] = [];
  for (const name of previous.keys()) {
    if (name !== undefined && !wanted.has(name)) commands.push({ verb: 'delete', config, section: name });
  }
  for (const section of desired) {
    const name = section.name;
    if (name === undefined) throw new Error(`uci: a desired ${section.type} section has no name`);
    const before = previous.get(name);
    const fresh = before === undefined || before.type !== section.type;
    if (before && fresh) commands.push({ verb: 'delete', config, section: name });
    if (fresh) commands.push({ verb: 'set', config, section: name, value: section.type });
    const options = new Set([...Object.keys(section.options), ...(fresh ? [] : Object.keys(before.options))]);
    for (const option of options) {
      const value = section.options[option];
      const old = fresh ? undefined : before.options[option];
      if (JSON.stringify(value) === JSON.stringify(old)) continue;
      if (value === undefined) {
        if (!keep.includes(option)) commands.push({ verb: 'delete', config, section: name, option });
      } else if (!Array.isArray(value)) {
        commands.push({ verb: 'set', config, section: name, option, value });
      } else {
        if (old !== undefined) commands.push({ verb: 'delete', config, section: name, option });
        commands.push(
          ...value.map((item) => ({ verb: 'add_list' as const, config, section: name, option, value: item })),
        );
      }
    }
  }
  return commands;
}
