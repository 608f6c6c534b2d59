import assert from 'node:assert/strict';
import {
  escapeFieldValue,
  labelSelectorFromObject,
  parseFieldSelector,
  parseLabelSelector,
} from '../../controllers/apiserver/selectors.js';
import { isLoamError } from '../../crds/errors.js';

type Labels = Record<string, string> | undefined;

/** Asserts fn throws a LoamError with `code` whose message equals (string) or matches (RegExp) `message`. */
function assertLoamError(fn: () => unknown, code: 'BadRequest' | 'Invalid', message: string | RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isLoamError(err, code), `expected LoamError ${code}, got ${String(err)}`);
    if (typeof message === 'string') assert.equal(err.message, message);
    else assert.match(err.message, message);
    return true;
  });
}

const nameRegexDetail =
  "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const valueRegexDetail =
  "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

describe('apiserver/selectors parseLabelSelector', () => {
  const web = { app: 'web', tier: 'frontend' };
  const db = { app: 'db', tier: 'backend', 'loam.dev/zone': 'a' };
  const rows: [string, Labels, boolean][] = [
    ['', web, true],
    ['', undefined, true],
    ['   ', {}, true],
    ['app=web', web, true],
    ['app=web', db, false],
    ['app==web', web, true],
    ['app = web', web, true],
    ['app!=web', web, false],
    ['app!=web', db, true],
    ['app!=web', {}, true],
    ['app!=web', undefined, true],
    ['app in (web,db)', db, true],
    ['app in (web, db)', web, true],
    ['app in (x,y)', web, false],
    ['app in (web)', {}, false],
    ['app notin (web)', db, true],
    ['app notin (web)', web, false],
    ['app notin (web)', {}, true],
    ['app', web, true],
    ['app', {}, false],
    ['!app', {}, true],
    ['!app', web, false],
    [' ! app ', {}, true],
    ['app=web,tier=frontend', web, true],
    ['app=web,tier=backend', web, false],
    ['app=web , tier in (frontend,backend) , !gone', web, true],
    ['loam.dev/zone=a', db, true],
    ['loam.dev/zone', web, false],
    ['app=', { app: '' }, true],
    ['app=', {}, false],
    ['app=,tier', { app: '', tier: 'x' }, true],
    ['app in (),tier', { app: '', tier: 'x' }, true],
    ['app in (,web)', { app: '' }, true],
    ['in in (in,notin)', { in: 'notin' }, true],
    ['notin notin (in)', { notin: 'x' }, true],
    ['replicas>2', { replicas: '3' }, true],
    ['replicas>2', { replicas: '2' }, false],
    ['replicas<2', { replicas: '-1' }, true],
    ['replicas>2', { replicas: 'many' }, false],
    ['replicas>2', {}, false],
    ['a=b\t,\nc', { a: 'b', c: '' }, true],
  ];
  for (const [text, labels, expected] of rows) {
    it(`${JSON.stringify(text)} ${expected ? 'matches' : 'does not match'} ${JSON.stringify(labels)}`, () => {
      assert.equal(parseLabelSelector(text).matches(labels), expected);
    });
  }

  it('reports emptiness and a canonical string sorted by key', () => {
    assert.equal(parseLabelSelector('').empty, true);
    const s = parseLabelSelector('z in (b,a,b), a!=1, !m, k, n==x');
    assert.equal(s.empty, false);
    assert.equal(s.toString(), 'a!=1,k,!m,n==x,z in (a,b)');
    assert.deepEqual(
      s.requirements.map((r) => [r.key, r.operator, [...r.values]]),
      [
        ['a', '!=', ['1']],
        ['k', 'exists', []],
        ['m', '!', []],
        ['n', '==', ['x']],
        ['z', 'in', ['a', 'b']],
      ],
    );
  });

  const errors: [string, string][] = [
    ['app:web', `unable to parse requirement: <nil>: Invalid value: "app:web": ${nameRegexDetail}`],
    ['*bar', `unable to parse requirement: <nil>: Invalid value: "*bar": ${nameRegexDetail}`],
    [
      'a/b/c=d',
      `unable to parse requirement: <nil>: Invalid value: "a/b/c": a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')`,
    ],
    [
      'Loam.dev/x',
      "unable to parse requirement: <nil>: Invalid value: \"Loam.dev/x\": prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
    ],
    ['/x', 'unable to parse requirement: <nil>: Invalid value: "/x": prefix part must be non-empty'],
    [
      `${'k'.repeat(64)}`,
      `unable to parse requirement: <nil>: Invalid value: "${'k'.repeat(64)}": name part must be no more than 63 characters`,
    ],
    ['app=we b', "found 'b', expected: ',' or 'end of string'"],
    ['app=a=b', "found '=', expected: ',' or 'end of string'"],
    ['app=web,', "found '', expected: identifier after ','"],
    [',app', "found ',', expected: !, identifier, or 'end of string'"],
    ['app in web', "unable to parse requirement: found 'web' expected: '('"],
    ['app in (web', "unable to parse requirement: found '', expected: ',' or ')'"],
    ['app in (a b)', "unable to parse requirement: found 'b', expected: ',' or ')'"],
    ['app foo', "unable to parse requirement: found 'foo', expected: in, notin, =, ==, !=, gt, lt"],
    ['!', "unable to parse requirement: found '', expected: identifier"],
    ['app=(x)', "unable to parse requirement: found '(', expected: identifier"],
    ['!app=web', "found '=', expected: ',' or 'end of string'"],
    ['app=-web', `unable to parse requirement: values[0][app]: Invalid value: "-web": ${valueRegexDetail}`],
    [
      `app=${'v'.repeat(64)}`,
      `unable to parse requirement: values[0][app]: Invalid value: "${'v'.repeat(64)}": must be no more than 63 characters`,
    ],
    [
      'app in (-a,-b)',
      `unable to parse requirement: [values[0][app]: Invalid value: "-a": ${valueRegexDetail}, values[1][app]: Invalid value: "-b": ${valueRegexDetail}]`,
    ],
    [
      'n>x',
      `unable to parse requirement: values[0]: Invalid value: "x": for 'Gt', 'Lt' operators, the value must be an integer`,
    ],
  ];
  for (const [text, message] of errors) {
    it(`rejects ${JSON.stringify(text)}`, () =>
      assertLoamError(() => parseLabelSelector(text), 'BadRequest', message));
  }
});

describe('apiserver/selectors labelSelectorFromObject', () => {
  it('ANDs matchLabels and matchExpressions', () => {
    const s = labelSelectorFromObject({
      matchLabels: { app: 'web' },
      matchExpressions: [
        { key: 'tier', operator: 'In', values: ['a', 'b'] },
        { key: 'env', operator: 'NotIn', values: ['prod'] },
        { key: 'team', operator: 'Exists' },
        { key: 'legacy', operator: 'DoesNotExist', values: [] },
      ],
    });
    assert.equal(s.matches({ app: 'web', tier: 'a', team: 'x' }), true);
    assert.equal(s.matches({ app: 'web', tier: 'a', team: 'x', env: 'dev' }), true);
    assert.equal(s.matches({ app: 'web', tier: 'a', team: 'x', env: 'prod' }), false);
    assert.equal(s.matches({ app: 'web', tier: 'c', team: 'x' }), false);
    assert.equal(s.matches({ app: 'web', tier: 'a' }), false);
    assert.equal(s.matches({ app: 'web', tier: 'a', team: 'x', legacy: '' }), false);
    assert.equal(s.matches({ app: 'db', tier: 'a', team: 'x' }), false);
    assert.equal(s.toString(), 'app=web,env notin (prod),!legacy,team,tier in (a,b)');
  });

  it('matches everything when empty and nothing when absent', () => {
    for (const empty of [{}, { matchLabels: {}, matchExpressions: [] }, { matchLabels: null }]) {
      const s = labelSelectorFromObject(empty);
      assert.equal(s.empty, true);
      assert.equal(s.matches({ any: 'thing' }), true);
    }
    for (const none of [null, undefined]) {
      const s = labelSelectorFromObject(none);
      assert.equal(s.empty, false);
      assert.equal(s.matches({}), false);
    }
  });

  const errors: [Parameters<typeof labelSelectorFromObject>[0], string][] = [
    [
      { matchExpressions: [{ key: 'a', operator: 'Seriously' }] },
      '"Seriously" is not a valid label selector operator',
    ],
    [
      { matchExpressions: [{ key: 'a', operator: 'In', values: [] }] },
      "values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty",
    ],
    [
      { matchExpressions: [{ key: 'a', operator: 'Exists', values: ['x'] }] },
      'values: Invalid value: ["x"]: values set must be empty for exists and does not exist',
    ],
    [{ matchLabels: { 'bad key': 'x' } }, `key: Invalid value: "bad key": ${nameRegexDetail}`],
    [
      { matchLabels: { app: 'bad value' } },
      `values[0][app]: Invalid value: "bad value": ${valueRegexDetail}`,
    ],
  ];
  for (const [selector, message] of errors) {
    it(`rejects ${JSON.stringify(selector)}`, () =>
      assertLoamError(() => labelSelectorFromObject(selector), 'BadRequest', message));
  }
});

describe('apiserver/selectors parseFieldSelector', () => {
  const supported = ['metadata.name', 'metadata.namespace', 'status.phase'] as const;
  const pod = { 'metadata.name': 'web-1', 'metadata.namespace': 'default', 'status.phase': 'Running' };
  const rows: [string, Record<string, string>, boolean][] = [
    ['', pod, true],
    ['metadata.name=web-1', pod, true],
    ['metadata.name==web-1', pod, true],
    ['metadata.name=web-2', pod, false],
    ['metadata.name!=web-2', pod, true],
    ['metadata.name!=web-1', pod, false],
    ['metadata.name=web-1,metadata.namespace=default', pod, true],
    ['metadata.name=web-1,metadata.namespace!=default', pod, false],
    ['status.phase=', {}, true],
    ['status.phase!=Running', {}, true],
    ['metadata.name=a\\,b\\=c\\\\d', { 'metadata.name': 'a,b=c\\d' }, true],
    [',metadata.name=web-1,', pod, true],
  ];
  for (const [text, fields, expected] of rows) {
    it(`${JSON.stringify(text)} ${expected ? 'matches' : 'does not match'} ${JSON.stringify(fields)}`, () => {
      assert.equal(parseFieldSelector(text, supported).matches(fields), expected);
    });
  }

  it('exposes requirements, exact matches and a canonical string', () => {
    const s = parseFieldSelector('metadata.namespace==ns,metadata.name!=x', supported);
    assert.equal(s.empty, false);
    assert.equal(s.requiresExactMatch('metadata.namespace'), 'ns');
    assert.equal(s.requiresExactMatch('metadata.name'), undefined);
    assert.equal(s.toString(), 'metadata.name!=x,metadata.namespace=ns');
    assert.equal(parseFieldSelector('', supported).empty, true);
  });

  it('escapes values the way it unescapes them', () => {
    const value = 'a,b=c\\d';
    const s = parseFieldSelector(`metadata.name=${escapeFieldValue(value)}`, supported);
    assert.deepEqual(s.requirements, [{ field: 'metadata.name', operator: '=', value }]);
  });

  const errors: [string, string][] = [
    ['spec.nodeName=n1', 'field label not supported: spec.nodeName'],
    ['metadata.name=x,zzz=1,aaa=2', 'field label not supported: aaa'],
    ['metadata.name = x', 'field label not supported: metadata.name '],
    ['metadata.name', "invalid selector: 'metadata.name'; can't understand 'metadata.name'"],
    ['metadata.name=x,bogus', "invalid selector: 'metadata.name=x,bogus'; can't understand 'bogus'"],
    ['metadata.name=a\\b', 'invalid field selector: invalid escape sequence: \\b'],
    ['metadata.name=a\\', 'invalid field selector: invalid escape sequence: \\'],
    ['metadata.name=a=b', 'invalid field selector: unescaped character in value: 61'],
  ];
  for (const [text, message] of errors) {
    it(`rejects ${JSON.stringify(text)}`, () =>
      assertLoamError(() => parseFieldSelector(text, supported), 'BadRequest', message));
  }
});
