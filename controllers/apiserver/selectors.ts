/**
 * Label and field selectors as kube-apiserver parses them (`?labelSelector=` / `?fieldSelector=`,
 * `kubectl -l` / `--field-selector`), ported from k8s.io/apimachinery pkg/labels/selector.go,
 * pkg/fields/selector.go and metav1.LabelSelectorAsSelector, error texts included. Pure: no I/O.
 */
import { LoamError } from '../../crds/errors.js';

/** The operators of k8s.io/apimachinery/pkg/selection, spelled as Kubernetes spells them. */
export type LabelOperator = 'in' | 'notin' | '=' | '==' | '!=' | 'exists' | '!' | 'gt' | 'lt';

export interface LabelRequirement {
  readonly key: string;
  readonly operator: LabelOperator;
  /** Sorted and de-duplicated for `in`/`notin`; one value for `=`, `==`, `!=`, `gt`, `lt`; none otherwise. */
  readonly values: readonly string[];
}

export interface LabelSelector {
  /** True when the selector does not restrict anything (an empty selector string matches everything). */
  readonly empty: boolean;
  /** The requirements, sorted by key; all must match. */
  readonly requirements: readonly LabelRequirement[];
  matches(labels: Readonly<Record<string, string>> | undefined): boolean;
  /** The canonical Kubernetes form, e.g. `app=web,tier in (a,b)`. */
  toString(): string;
}

export interface FieldRequirement {
  readonly field: string;
  /** `==` is stored as `=`, as apimachinery does. */
  readonly operator: '=' | '!=';
  /** Unescaped value. */
  readonly value: string;
}

export interface FieldSelector {
  readonly empty: boolean;
  readonly requirements: readonly FieldRequirement[];
  /** A field absent from `fields` counts as the empty string, as in Kubernetes' `fields.Set`. */
  matches(fields: Readonly<Record<string, string>>): boolean;
  /** The value a `field=value` term pins `field` to, if any (lets a store narrow a list by name/namespace). */
  requiresExactMatch(field: string): string | undefined;
  toString(): string;
}

/** metav1.LabelSelector as it appears in object specs. */
export interface LabelSelectorObject {
  matchLabels?: Readonly<Record<string, string>> | null;
  matchExpressions?: readonly LabelSelectorRequirementObject[] | null;
}

export interface LabelSelectorRequirementObject {
  key: string;
  operator: string;
  values?: readonly string[] | null;
}

// ---------------------------------------------------------------------------------------------
// Validation (k8s.io/apimachinery/pkg/util/validation), with its exact messages.

const qualifiedNameFmt = '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]';
const qualifiedNameErrMsg =
  "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const qualifiedNameRe = new RegExp(`^${qualifiedNameFmt}$`);
const labelValueFmt = `(${qualifiedNameFmt})?`;
const labelValueErrMsg =
  "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const labelValueRe = new RegExp(`^${labelValueFmt}$`);
const dns1123LabelFmt = '[a-z0-9]([-a-z0-9]*[a-z0-9])?';
const dns1123SubdomainFmt = `${dns1123LabelFmt}(\\.${dns1123LabelFmt})*`;
const dns1123SubdomainErrMsg =
  "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const dns1123SubdomainRe = new RegExp(`^${dns1123SubdomainFmt}$`);
const maxNameLength = 63;
const maxSubdomainLength = 253;

function regexError(msg: string, fmt: string, ...examples: string[]): string {
  if (examples.length === 0) return `${msg} (regex used for validation is '${fmt}')`;
  return `${msg} (e.g. ${examples.map((e) => `'${e}', `).join(' or ')}regex used for validation is '${fmt}')`;
}

const maxLenError = (n: number) => `must be no more than ${n} characters`;
/** Go's len(): UTF-8 bytes. */
const byteLength = (s: string) => Buffer.byteLength(s, 'utf8');

function isDNS1123Subdomain(value: string): string[] {
  const errs: string[] = [];
  if (byteLength(value) > maxSubdomainLength) errs.push(maxLenError(maxSubdomainLength));
  if (!dns1123SubdomainRe.test(value))
    errs.push(regexError(dns1123SubdomainErrMsg, dns1123SubdomainFmt, 'example.com'));
  return errs;
}

/** validation.IsQualifiedName: `[DNS-subdomain '/'] name`, name ≤ 63. */
export function isQualifiedName(value: string): string[] {
  const errs: string[] = [];
  const parts = value.split('/');
  let name: string;
  if (parts.length === 1) {
    name = parts[0] ?? '';
  } else if (parts.length === 2) {
    const prefix = parts[0] ?? '';
    name = parts[1] ?? '';
    if (prefix.length === 0) errs.push('prefix part must be non-empty');
    else for (const msg of isDNS1123Subdomain(prefix)) errs.push(`prefix part ${msg}`);
  } else {
    return [
      `a qualified name ${regexError(qualifiedNameErrMsg, qualifiedNameFmt, 'MyName', 'my.name', '123-abc')}` +
        " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
    ];
  }
  if (name.length === 0) errs.push('name part must be non-empty');
  else if (byteLength(name) > maxNameLength) errs.push(`name part ${maxLenError(maxNameLength)}`);
  if (!qualifiedNameRe.test(name)) {
    errs.push(
      `name part ${regexError(qualifiedNameErrMsg, qualifiedNameFmt, 'MyName', 'my.name', '123-abc')}`,
    );
  }
  return errs;
}

/** validation.IsValidLabelValue: empty, or ≤ 63 alphanumerics with `-_.` inside. */
export function isValidLabelValue(value: string): string[] {
  const errs: string[] = [];
  if (byteLength(value) > maxNameLength) errs.push(maxLenError(maxNameLength));
  if (!labelValueRe.test(value))
    errs.push(regexError(labelValueErrMsg, labelValueFmt, 'MyValue', 'my_value', '12345'));
  return errs;
}

// ---------------------------------------------------------------------------------------------
// field.Error / aggregate formatting, so messages read exactly as kube-apiserver's.

/** Go's %q for a string (close enough for every printable input; control characters escaped). */
function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0) ?? 0;
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\r') out += '\\r';
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, '0')}`;
    else if (c >= 0x80 && c < 0xa0) out += `\\u${c.toString(16).padStart(4, '0')}`;
    else out += ch;
  }
  return `${out}"`;
}

/** encoding/json rendering of a field.Error's non-string bad value (Go escapes <, >, & in HTML-safe mode). */
function goJson(v: unknown): string {
  return (JSON.stringify(v) ?? 'null').replace(
    /[<>&\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/** field.Invalid(path, value, detail).Error(); a nil path prints as `<nil>`. */
function invalid(path: string | null, value: unknown, detail: string): string {
  const shown = typeof value === 'string' ? goQuote(value) : goJson(value);
  return `${path ?? '<nil>'}: Invalid value: ${shown}${detail ? `: ${detail}` : ''}`;
}

/** utilerrors.NewAggregate(errs).Error(): one message alone, several de-duplicated in brackets. */
function aggregate(messages: string[]): string {
  const seen = [...new Set(messages)];
  return seen.length === 1 ? (seen[0] ?? '') : `[${seen.join(', ')}]`;
}

// ---------------------------------------------------------------------------------------------
// Requirements (labels.NewRequirement and Requirement.Matches).

const binaryOperators: readonly LabelOperator[] = ['in', 'notin', '=', '==', '!=', 'gt', 'lt'];

/** strconv.ParseInt(s, 10, 64), or undefined. */
function parseInt64(s: string): bigint | undefined {
  if (!/^[+-]?[0-9]+$/.test(s)) return undefined;
  const n = BigInt(s);
  return n < -(2n ** 63n) || n > 2n ** 63n - 1n ? undefined : n;
}

/** labels.NewRequirement's checks; returns the aggregated error text, or undefined when valid. */
function requirementError(
  key: string,
  op: LabelOperator,
  values: readonly string[] | null,
): string | undefined {
  const errs: string[] = [];
  const keyErrs = isQualifiedName(key);
  if (keyErrs.length > 0) errs.push(invalid('key', key, keyErrs.join('; ')));
  const vals = values ?? [];
  switch (op) {
    case 'in':
    case 'notin':
      if (vals.length === 0)
        errs.push(invalid('values', values, "for 'in', 'notin' operators, values set can't be empty"));
      break;
    case '=':
    case '==':
    case '!=':
      if (vals.length !== 1)
        errs.push(invalid('values', values, 'exact-match compatibility requires one single value'));
      break;
    case 'exists':
    case '!':
      if (vals.length !== 0)
        errs.push(invalid('values', values, 'values set must be empty for exists and does not exist'));
      break;
    case 'gt':
    case 'lt':
      if (vals.length !== 1)
        errs.push(invalid('values', values, "for 'Gt', 'Lt' operators, exactly one value is required"));
      vals.forEach((v, i) => {
        if (parseInt64(v) === undefined) {
          errs.push(invalid(`values[${i}]`, v, "for 'Gt', 'Lt' operators, the value must be an integer"));
        }
      });
      break;
  }
  vals.forEach((v, i) => {
    const valueErrs = isValidLabelValue(v);
    if (valueErrs.length > 0) errs.push(invalid(`values[${i}][${key}]`, v, valueErrs.join('; ')));
  });
  return errs.length === 0 ? undefined : aggregate(errs);
}

function requirementMatches(r: LabelRequirement, labels: Readonly<Record<string, string>>): boolean {
  const has = Object.hasOwn(labels, r.key);
  const value = has ? labels[r.key] : undefined;
  switch (r.operator) {
    case 'in':
    case '=':
    case '==':
      return has && r.values.includes(value ?? '');
    case 'notin':
    case '!=':
      return !has || !r.values.includes(value ?? '');
    case 'exists':
      return has;
    case '!':
      return !has;
    case 'gt':
    case 'lt': {
      if (!has || r.values.length !== 1) return false;
      const actual = parseInt64(value ?? '');
      const wanted = parseInt64(r.values[0] ?? '');
      if (actual === undefined || wanted === undefined) return false;
      return r.operator === 'gt' ? actual > wanted : actual < wanted;
    }
  }
}

function requirementString(r: LabelRequirement): string {
  const sep: Record<LabelOperator, string> = {
    in: ' in ',
    notin: ' notin ',
    '=': '=',
    '==': '==',
    '!=': '!=',
    gt: '>',
    lt: '<',
    exists: '',
    '!': '',
  };
  if (r.operator === 'exists') return r.key;
  if (r.operator === '!') return `!${r.key}`;
  const values = r.values.length === 1 ? (r.values[0] ?? '') : [...r.values].sort().join(',');
  return r.operator === 'in' || r.operator === 'notin'
    ? `${r.key}${sep[r.operator]}(${values})`
    : `${r.key}${sep[r.operator]}${values}`;
}

function makeLabelSelector(reqs: LabelRequirement[], nothing = false): LabelSelector {
  const requirements = Object.freeze([...reqs].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)));
  return Object.freeze({
    empty: !nothing && requirements.length === 0,
    requirements,
    matches(labels: Readonly<Record<string, string>> | undefined): boolean {
      if (nothing) return false;
      const set = labels ?? {};
      return requirements.every((r) => requirementMatches(r, set));
    },
    toString: () => requirements.map(requirementString).join(','),
  });
}

// ---------------------------------------------------------------------------------------------
// The label selector lexer and parser (labels.Parse), token for token.

type Tok =
  | 'error'
  | 'eos'
  | ')'
  | ','
  | '!'
  | '=='
  | '='
  | '>'
  | 'identifier'
  | 'in'
  | '<'
  | '!='
  | 'notin'
  | '(';

/** The literal tokens; anything else the lexer reads is an identifier. */
const string2token: ReadonlySet<string> = new Set([
  ')',
  ',',
  '!',
  '==',
  '=',
  '>',
  'in',
  '<',
  '!=',
  'notin',
  '(',
]);
const tokenOf = (s: string): Tok | undefined => (string2token.has(s) ? (s as Tok) : undefined);

interface Scanned {
  tok: Tok;
  lit: string;
}

const isWhitespace = (ch: string) => ch === ' ' || ch === '\t' || ch === '\r' || ch === '\n';
const isSpecialSymbol = (ch: string) => '=!(),><'.includes(ch) && ch.length === 1;
const EOS = '\0';

class Lexer {
  private pos = 0;
  constructor(private readonly s: string) {}

  private read(): string {
    if (this.pos < this.s.length) return this.s[this.pos++] ?? EOS;
    return EOS;
  }

  private unread(): void {
    this.pos--;
  }

  private scanIDOrKeyword(): Scanned {
    let buffer = '';
    for (;;) {
      const ch = this.read();
      if (ch === EOS) break;
      if (isSpecialSymbol(ch) || isWhitespace(ch)) {
        this.unread();
        break;
      }
      buffer += ch;
    }
    return { tok: tokenOf(buffer) ?? 'identifier', lit: buffer };
  }

  private scanSpecialSymbol(): Scanned {
    let last: Scanned | undefined;
    let buffer = '';
    for (;;) {
      const ch = this.read();
      if (ch === EOS) break;
      if (!isSpecialSymbol(ch)) {
        this.unread();
        break;
      }
      buffer += ch;
      const tok = tokenOf(buffer);
      if (tok !== undefined) {
        last = { tok, lit: buffer };
      } else if (last !== undefined) {
        this.unread();
        break;
      }
    }
    return last ?? { tok: 'error', lit: `error expected: keyword found '${buffer}'` };
  }

  lex(): Scanned {
    let ch = this.read();
    while (isWhitespace(ch)) ch = this.read();
    if (ch === EOS) return { tok: 'eos', lit: '' };
    this.unread();
    return isSpecialSymbol(ch) ? this.scanSpecialSymbol() : this.scanIDOrKeyword();
  }
}

/** Thrown inside the parser, turned into a LoamError by parseLabelSelector. */
class SelectorSyntaxError extends Error {}

/** In a Values context, `in` and `notin` are plain identifiers (`k in (in,notin)`). */
type Context = 'keyAndOperator' | 'values';

class Parser {
  private readonly items: Scanned[] = [];
  private position = 0;

  constructor(text: string) {
    const lexer = new Lexer(text);
    for (;;) {
      const item = lexer.lex();
      this.items.push(item);
      if (item.tok === 'eos') break;
    }
  }

  private adjust(item: Scanned | undefined, context: Context): Scanned {
    const it = item ?? { tok: 'eos', lit: '' };
    if (context === 'values' && (it.tok === 'in' || it.tok === 'notin')) {
      return { tok: 'identifier', lit: it.lit };
    }
    return it;
  }

  private lookahead(context: Context): Scanned {
    return this.adjust(this.items[this.position], context);
  }

  private consume(context: Context): Scanned {
    return this.adjust(this.items[this.position++], context);
  }

  parse(): LabelRequirement[] {
    const requirements: LabelRequirement[] = [];
    for (;;) {
      const { tok, lit } = this.lookahead('values');
      switch (tok) {
        case 'identifier':
        case '!': {
          try {
            requirements.push(this.parseRequirement());
          } catch (err) {
            if (err instanceof SelectorSyntaxError) {
              throw new SelectorSyntaxError(`unable to parse requirement: ${err.message}`);
            }
            throw err;
          }
          const next = this.consume('values');
          if (next.tok === 'eos') return requirements;
          if (next.tok === ',') {
            const after = this.lookahead('values');
            if (after.tok !== 'identifier' && after.tok !== '!') {
              throw new SelectorSyntaxError(`found '${after.lit}', expected: identifier after ','`);
            }
            break;
          }
          throw new SelectorSyntaxError(`found '${next.lit}', expected: ',' or 'end of string'`);
        }
        case 'eos':
          return requirements;
        default:
          throw new SelectorSyntaxError(`found '${lit}', expected: !, identifier, or 'end of string'`);
      }
    }
  }

  private parseRequirement(): LabelRequirement {
    const { key, operator: inferred } = this.parseKeyAndInferOperator();
    if (inferred === 'exists' || inferred === '!') return newRequirement(key, inferred, []);
    const operator = this.parseOperator();
    const values = operator === 'in' || operator === 'notin' ? this.parseValues() : this.parseExactValue();
    return newRequirement(key, operator, [...values].sort());
  }

  private parseKeyAndInferOperator(): { key: string; operator: LabelOperator | undefined } {
    let operator: LabelOperator | undefined;
    let { tok, lit } = this.consume('values');
    if (tok === '!') {
      operator = '!';
      ({ tok, lit } = this.consume('values'));
    }
    if (tok !== 'identifier') throw new SelectorSyntaxError(`found '${lit}', expected: identifier`);
    const keyErrs = isQualifiedName(lit);
    if (keyErrs.length > 0) throw new SelectorSyntaxError(invalid(null, lit, keyErrs.join('; ')));
    const next = this.lookahead('values').tok;
    if ((next === 'eos' || next === ',') && operator !== '!') operator = 'exists';
    return { key: lit, operator };
  }

  private parseOperator(): LabelOperator {
    const { tok, lit } = this.consume('keyAndOperator');
    switch (tok) {
      case 'in':
        return 'in';
      case '=':
        return '=';
      case '==':
        return '==';
      case '>':
        return 'gt';
      case '<':
        return 'lt';
      case 'notin':
        return 'notin';
      case '!=':
        return '!=';
      default:
        throw new SelectorSyntaxError(`found '${lit}', expected: ${binaryOperators.join(', ')}`);
    }
  }

  private parseValues(): Set<string> {
    const open = this.consume('values');
    if (open.tok !== '(') throw new SelectorSyntaxError(`found '${open.lit}' expected: '('`);
    const { tok, lit } = this.lookahead('values');
    switch (tok) {
      case 'identifier':
      case ',': {
        const values = this.parseIdentifiersList();
        if (this.consume('values').tok !== ')') {
          throw new SelectorSyntaxError(`found '${lit}', expected: ')'`);
        }
        return values;
      }
      case ')':
        this.consume('values');
        return new Set(['']);
      default:
        throw new SelectorSyntaxError(`found '${lit}', expected: ',', ')' or identifier`);
    }
  }

  private parseIdentifiersList(): Set<string> {
    const values = new Set<string>();
    for (;;) {
      const { tok, lit } = this.consume('values');
      switch (tok) {
        case 'identifier': {
          values.add(lit);
          const next = this.lookahead('values');
          if (next.tok === ',') continue;
          if (next.tok === ')') return values;
          throw new SelectorSyntaxError(`found '${next.lit}', expected: ',' or ')'`);
        }
        case ',': {
          if (values.size === 0) values.add('');
          const next = this.lookahead('values').tok;
          if (next === ')') {
            values.add('');
            return values;
          }
          if (next === ',') {
            this.consume('values');
            values.add('');
          }
          break;
        }
        default:
          throw new SelectorSyntaxError(`found '${lit}', expected: ',', or identifier`);
      }
    }
  }

  private parseExactValue(): Set<string> {
    const ahead = this.lookahead('values').tok;
    if (ahead === 'eos' || ahead === ',') return new Set(['']);
    const { tok, lit } = this.consume('values');
    if (tok === 'identifier') return new Set([lit]);
    throw new SelectorSyntaxError(`found '${lit}', expected: identifier`);
  }
}

function newRequirement(key: string, operator: LabelOperator, values: string[]): LabelRequirement {
  const err = requirementError(key, operator, values);
  if (err !== undefined) throw new SelectorSyntaxError(err);
  return Object.freeze({ key, operator, values: Object.freeze(values) });
}

/**
 * Parses a label selector string as kube-apiserver does (labels.Parse): comma-separated
 * `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, and `k>n` / `k<n` (integers).
 * An empty string selects everything. Errors: LoamError('BadRequest') with Kubernetes' text.
 */
export function parseLabelSelector(text: string): LabelSelector {
  try {
    return makeLabelSelector(new Parser(text).parse());
  } catch (err) {
    if (err instanceof SelectorSyntaxError) throw new LoamError('BadRequest', err.message);
    throw err;
  }
}

const expressionOperators: Readonly<Record<string, LabelOperator>> = {
  In: 'in',
  NotIn: 'notin',
  Exists: 'exists',
  DoesNotExist: '!',
};

/**
 * metav1.LabelSelectorAsSelector: a null/undefined selector matches nothing, an empty one
 * everything; matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist) are ANDed.
 * Errors: LoamError('BadRequest') with Kubernetes' text.
 */
export function labelSelectorFromObject(selector: LabelSelectorObject | null | undefined): LabelSelector {
  if (selector === null || selector === undefined) return makeLabelSelector([], true);
  const matchLabels = selector.matchLabels ?? {};
  const expressions = selector.matchExpressions ?? [];
  const requirements: LabelRequirement[] = [];
  try {
    for (const key of Object.keys(matchLabels).sort()) {
      requirements.push(newRequirement(key, '=', [matchLabels[key] ?? '']));
    }
    for (const expr of expressions) {
      const operator = Object.hasOwn(expressionOperators, expr.operator)
        ? expressionOperators[expr.operator]
        : undefined;
      if (operator === undefined) {
        throw new SelectorSyntaxError(
          `${goQuote(String(expr.operator))} is not a valid label selector operator`,
        );
      }
      const values = expr.values && expr.values.length > 0 ? [...expr.values] : null;
      const err = requirementError(expr.key, operator, values);
      if (err !== undefined) throw new SelectorSyntaxError(err);
      requirements.push(Object.freeze({ key: expr.key, operator, values: Object.freeze(values ?? []) }));
    }
  } catch (err) {
    if (err instanceof SelectorSyntaxError) throw new LoamError('BadRequest', err.message);
    throw err;
  }
  return makeLabelSelector(requirements);
}

// ---------------------------------------------------------------------------------------------
// Field selectors (fields.ParseAndTransformSelector with the server's field label conversion).

/** fields.EscapeValue: backslash-escape `\`, `,` and `=` for use in a field selector value. */
export function escapeFieldValue(value: string): string {
  return value.replace(/[\\,=]/g, (c) => `\\${c}`);
}

function unescapeFieldValue(s: string): string {
  if (!/[\\,=]/.test(s)) return s;
  let out = '';
  let inSlash = false;
  for (const c of s) {
    if (inSlash) {
      if (c !== '\\' && c !== ',' && c !== '=') {
        throw new LoamError('BadRequest', `invalid field selector: invalid escape sequence: \\${c}`);
      }
      out += c;
      inSlash = false;
    } else if (c === '\\') {
      inSlash = true;
    } else if (c === ',' || c === '=') {
      // Go prints the rune with %v: its code point.
      throw new LoamError(
        'BadRequest',
        `invalid field selector: unescaped character in value: ${c.codePointAt(0)}`,
      );
    } else {
      out += c;
    }
  }
  if (inSlash) throw new LoamError('BadRequest', 'invalid field selector: invalid escape sequence: \\');
  return out;
}

/** Comma-separated terms; a backslash-escaped comma stays in its term (backslash kept). */
function splitTerms(selector: string): string[] {
  if (selector.length === 0) return [];
  const terms: string[] = [];
  let start = 0;
  let inSlash = false;
  for (let i = 0; i < selector.length; i++) {
    const c = selector[i];
    if (inSlash) inSlash = false;
    else if (c === '\\') inSlash = true;
    else if (c === ',') {
      terms.push(selector.slice(start, i));
      start = i + 1;
    }
  }
  terms.push(selector.slice(start));
  return terms;
}

const termOperators = ['!=', '==', '='] as const;

function splitTerm(
  term: string,
): { lhs: string; op: (typeof termOperators)[number]; rhs: string } | undefined {
  for (let i = 0; i < term.length; i++) {
    for (const op of termOperators) {
      if (term.startsWith(op, i)) return { lhs: term.slice(0, i), op, rhs: term.slice(i + op.length) };
    }
  }
  return undefined;
}

/**
 * Parses a field selector (`f=v`, `f==v`, `f!=v`, comma-separated, values backslash-escaped) and
 * checks each field against `supportedFields` (pass `metadata.name` and `metadata.namespace` too,
 * as every Kubernetes kind supports them). Errors: LoamError('BadRequest') with Kubernetes' text,
 * `field label not supported: <field>` for an unknown field.
 */
export function parseFieldSelector(text: string, supportedFields: readonly string[]): FieldSelector {
  // apimachinery sorts the raw terms (bytewise) before parsing, so errors name the first in that order.
  const parts = splitTerms(text).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  const requirements: FieldRequirement[] = [];
  for (const part of parts) {
    if (part === '') continue;
    const term = splitTerm(part);
    if (term === undefined)
      throw new LoamError('BadRequest', `invalid selector: '${text}'; can't understand '${part}'`);
    const value = unescapeFieldValue(term.rhs);
    requirements.push(Object.freeze({ field: term.lhs, operator: term.op === '!=' ? '!=' : '=', value }));
  }
  const supported = new Set(supportedFields);
  for (const r of requirements) {
    if (!supported.has(r.field)) throw new LoamError('BadRequest', `field label not supported: ${r.field}`);
  }
  const frozen = Object.freeze(requirements);
  return Object.freeze({
    empty: frozen.length === 0,
    requirements: frozen,
    matches(fields: Readonly<Record<string, string>>): boolean {
      return frozen.every((r) => {
        const actual = Object.hasOwn(fields, r.field) ? (fields[r.field] ?? '') : '';
        return r.operator === '=' ? actual === r.value : actual !== r.value;
      });
    },
    requiresExactMatch(field: string): string | undefined {
      return frozen.find((r) => r.field === field && r.operator === '=')?.value;
    },
    toString: () => frozen.map((r) => `${r.field}${r.operator}${escapeFieldValue(r.value)}`).join(','),
  });
}
