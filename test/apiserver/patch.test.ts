import assert from 'node:assert/strict';
import { applyJsonPatch, applyMergePatch } from '../../controllers/apiserver/patch.js';
import { isLoamError } from '../../crds/errors.js';

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null) {
    for (const child of Object.values(v)) deepFreeze(child);
    Object.freeze(v);
  }
  return v;
}

/** Every object and array reachable from v. */
function containers(v: unknown, into = new Set<object>()): Set<object> {
  if (typeof v === 'object' && v !== null) {
    into.add(v);
    for (const child of Object.values(v)) containers(child, into);
  }
  return into;
}

function assertShares(result: unknown, ...inputs: unknown[]): void {
  const mine = containers(result);
  for (const input of inputs) {
    for (const c of containers(input)) assert.ok(!mine.has(c), 'result shares an object with an input');
  }
}

describe('apiserver/patch applyMergePatch', () => {
  // RFC 7386 Appendix A, row by row.
  const rfc7386: [unknown, unknown, unknown][] = [
    [{ a: 'b' }, { a: 'c' }, { a: 'c' }],
    [{ a: 'b' }, { b: 'c' }, { a: 'b', b: 'c' }],
    [{ a: 'b' }, { a: null }, {}],
    [{ a: 'b', b: 'c' }, { a: null }, { b: 'c' }],
    [{ a: ['b'] }, { a: 'c' }, { a: 'c' }],
    [{ a: 'c' }, { a: ['b'] }, { a: ['b'] }],
    [{ a: { b: 'c' } }, { a: { b: 'd', c: null } }, { a: { b: 'd' } }],
    [{ a: [{ b: 'c' }] }, { a: [1] }, { a: [1] }],
    [
      ['a', 'b'],
      ['c', 'd'],
      ['c', 'd'],
    ],
    [{ a: 'b' }, ['c'], ['c']],
    [{ a: 'foo' }, null, null],
    [{ a: 'foo' }, 'bar', 'bar'],
    [{ e: null }, { a: 1 }, { e: null, a: 1 }],
    [[1, 2], { a: 'b', c: null }, { a: 'b' }],
    [{}, { a: { bb: { ccc: null } } }, { a: { bb: {} } }],
  ];
  for (const [target, patch, expected] of rfc7386) {
    it(`RFC 7386: ${JSON.stringify(target)} + ${JSON.stringify(patch)} = ${JSON.stringify(expected)}`, () => {
      deepFreeze(target);
      deepFreeze(patch);
      const result = applyMergePatch(target, patch);
      assert.deepEqual(result, expected);
      assertShares(result, target, patch);
    });
  }

  it('merges a Kubernetes object without touching its inputs', () => {
    const target = deepFreeze({
      metadata: { name: 'lab', labels: { app: 'web', old: 'x' }, annotations: { keep: 'y' } },
      spec: { cidr: '10.0.0.0/24', peers: [{ name: 'a' }] },
    });
    const patch = deepFreeze({
      metadata: { labels: { old: null, new: 'z' } },
      spec: { peers: [{ name: 'b' }] },
    });
    const result = applyMergePatch(target, patch);
    assert.deepEqual(result, {
      metadata: { name: 'lab', labels: { app: 'web', new: 'z' }, annotations: { keep: 'y' } },
      spec: { cidr: '10.0.0.0/24', peers: [{ name: 'b' }] },
    });
    assertShares(result, target, patch);
  });

  it('treats a "__proto__" member as data', () => {
    const patch = JSON.parse('{"__proto__": {"polluted": true}}');
    const result = applyMergePatch({}, patch) as Record<string, unknown>;
    assert.ok(Object.hasOwn(result, '__proto__'));
    assert.equal(Object.getPrototypeOf(result), Object.prototype);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });
});

describe('apiserver/patch applyJsonPatch', () => {
  // RFC 6902 Appendix A (A.13, a duplicate "op" member, cannot survive JSON.parse and is left out).
  const rfc6902: [string, unknown, unknown[], unknown][] = [
    [
      'A.1 adding an object member',
      { foo: 'bar' },
      [{ op: 'add', path: '/baz', value: 'qux' }],
      { baz: 'qux', foo: 'bar' },
    ],
    [
      'A.2 adding an array element',
      { foo: ['bar', 'baz'] },
      [{ op: 'add', path: '/foo/1', value: 'qux' }],
      { foo: ['bar', 'qux', 'baz'] },
    ],
    [
      'A.3 removing an object member',
      { baz: 'qux', foo: 'bar' },
      [{ op: 'remove', path: '/baz' }],
      { foo: 'bar' },
    ],
    [
      'A.4 removing an array element',
      { foo: ['bar', 'qux', 'baz'] },
      [{ op: 'remove', path: '/foo/1' }],
      { foo: ['bar', 'baz'] },
    ],
    [
      'A.5 replacing a value',
      { baz: 'qux', foo: 'bar' },
      [{ op: 'replace', path: '/baz', value: 'boo' }],
      { baz: 'boo', foo: 'bar' },
    ],
    [
      'A.6 moving a value',
      { foo: { bar: 'baz', waldo: 'fred' }, qux: { corge: 'grault' } },
      [{ op: 'move', from: '/foo/waldo', path: '/qux/thud' }],
      { foo: { bar: 'baz' }, qux: { corge: 'grault', thud: 'fred' } },
    ],
    [
      'A.7 moving an array element',
      { foo: ['all', 'grass', 'cows', 'eat'] },
      [{ op: 'move', from: '/foo/1', path: '/foo/3' }],
      { foo: ['all', 'cows', 'eat', 'grass'] },
    ],
    [
      'A.8 testing a value: success',
      { baz: 'qux', foo: ['a', 2, 'c'] },
      [
        { op: 'test', path: '/baz', value: 'qux' },
        { op: 'test', path: '/foo/1', value: 2 },
      ],
      { baz: 'qux', foo: ['a', 2, 'c'] },
    ],
    [
      'A.10 adding a nested member object',
      { foo: 'bar' },
      [{ op: 'add', path: '/child', value: { grandchild: {} } }],
      { foo: 'bar', child: { grandchild: {} } },
    ],
    [
      'A.11 ignoring unrecognized elements',
      { foo: 'bar' },
      [{ op: 'add', path: '/baz', value: 'qux', xyz: 123 }],
      { foo: 'bar', baz: 'qux' },
    ],
    [
      'A.14 ~ escape ordering',
      { '/': 9, '~1': 10 },
      [{ op: 'test', path: '/~01', value: 10 }],
      { '/': 9, '~1': 10 },
    ],
    [
      'A.16 adding an array value',
      { foo: ['bar'] },
      [{ op: 'add', path: '/foo/-', value: ['abc', 'def'] }],
      { foo: ['bar', ['abc', 'def']] },
    ],
    // Beyond the appendix.
    ['add replaces an existing member', { a: 1 }, [{ op: 'add', path: '/a', value: 2 }], { a: 2 }],
    ['add appends at index == length', { a: [1] }, [{ op: 'add', path: '/a/1', value: 2 }], { a: [1, 2] }],
    ['add at the root replaces the document', { a: 1 }, [{ op: 'add', path: '', value: { b: 2 } }], { b: 2 }],
    ['replace at the root', { a: 1 }, [{ op: 'replace', path: '', value: [1] }], [1]],
    ['replace null by a value', { a: null }, [{ op: 'replace', path: '/a', value: 1 }], { a: 1 }],
    ['add a null value', { a: 1 }, [{ op: 'add', path: '/b', value: null }], { a: 1, b: null }],
    [
      'escaped annotation key',
      { metadata: { annotations: {} } },
      [{ op: 'add', path: '/metadata/annotations/loam.dev~1owner~0x', value: 'me' }],
      { metadata: { annotations: { 'loam.dev/owner~x': 'me' } } },
    ],
    ['empty member name', { '': 1 }, [{ op: 'replace', path: '/', value: 2 }], { '': 2 }],
    ['move to the same place', { a: [1, 2] }, [{ op: 'move', from: '/a/0', path: '/a/0' }], { a: [1, 2] }],
    ['move to the root', { a: { b: 1 } }, [{ op: 'move', from: '/a', path: '' }], { b: 1 }],
    [
      'copy a subtree',
      { a: { b: [1] } },
      [{ op: 'copy', from: '/a', path: '/c' }],
      { a: { b: [1] }, c: { b: [1] } },
    ],
    ['copy the root into a member', { a: 1 }, [{ op: 'copy', from: '', path: '/b' }], { a: 1, b: { a: 1 } }],
    [
      'test compares structurally',
      { a: { x: [1, { y: null }], z: 'q' } },
      [{ op: 'test', path: '/a', value: { z: 'q', x: [1, { y: null }] } }],
      { a: { x: [1, { y: null }], z: 'q' } },
    ],
    ['test the root', [1], [{ op: 'test', path: '', value: [1] }], [1]],
    [
      'operations run in order',
      { n: 1 },
      [
        { op: 'remove', path: '/n' },
        { op: 'add', path: '/n', value: 2 },
      ],
      { n: 2 },
    ],
  ];
  for (const [name, target, operations, expected] of rfc6902) {
    it(name, () => {
      deepFreeze(target);
      deepFreeze(operations);
      const result = applyJsonPatch(target, operations);
      assert.deepEqual(result, expected);
      assertShares(result, target, operations);
    });
  }

  it('treats a null document as an empty patch, as kube-apiserver does', () => {
    const target = deepFreeze({ a: { b: 1 } });
    const result = applyJsonPatch(target, null);
    assert.deepEqual(result, target);
    assertShares(result, target);
  });

  it('treats a "__proto__" member as data', () => {
    const result = applyJsonPatch({}, [
      { op: 'add', path: '/__proto__', value: { polluted: true } },
    ]) as object;
    assert.ok(Object.hasOwn(result, '__proto__'));
    assert.equal(Object.getPrototypeOf(result), Object.prototype);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });

  const doc = { a: { b: 'c' }, arr: [1, 2], s: 'str', '/': 9, '~1': 10 };
  const errors: [string, unknown, 'BadRequest' | 'Invalid', string][] = [
    // Malformed documents: 400, with encoding/json's text (jsonpatch.DecodePatch).
    [
      'an object',
      { op: 'add' },
      'BadRequest',
      'json: cannot unmarshal object into Go value of type jsonpatch.Patch',
    ],
    ['a string', 'add', 'BadRequest', 'json: cannot unmarshal string into Go value of type jsonpatch.Patch'],
    [
      'a number element',
      [1],
      'BadRequest',
      'json: cannot unmarshal number into Go value of type jsonpatch.Operation',
    ],
    [
      'an array element',
      [[]],
      'BadRequest',
      'json: cannot unmarshal array into Go value of type jsonpatch.Operation',
    ],
    // Operations that do not apply: 422, with evanphx/json-patch's text.
    [
      'A.9 testing a value: error',
      [{ op: 'test', path: '/a/b', value: 'bar' }],
      'Invalid',
      'testing value /a/b failed: test failed',
    ],
    [
      'A.12 adding to a nonexistent target',
      [{ op: 'add', path: '/baz/bat', value: 'qux' }],
      'Invalid',
      'add operation does not apply: doc is missing path: "/baz/bat": missing value',
    ],
    [
      'A.15 comparing strings and numbers',
      [{ op: 'test', path: '/~01', value: '10' }],
      'Invalid',
      'testing value /~01 failed: test failed',
    ],
    ['an unknown op', [{ op: 'frobnicate', path: '/a' }], 'Invalid', 'Unexpected kind: frobnicate'],
    ['no op', [{ path: '/a' }], 'Invalid', 'Unexpected kind: unknown'],
    ['a null operation', [null], 'Invalid', 'Unexpected kind: unknown'],
    [
      'add without path',
      [{ op: 'add', value: 1 }],
      'Invalid',
      'add operation failed to decode path: missing value',
    ],
    [
      'add without value',
      [{ op: 'add', path: '/x' }],
      'Invalid',
      'add operation failed to decode value: operation, missing value field: missing value',
    ],
    [
      'a path without a leading slash',
      [{ op: 'add', path: 'x', value: 1 }],
      'Invalid',
      'add operation does not apply: doc is missing path: "x": missing value',
    ],
    [
      'add through a scalar',
      [{ op: 'add', path: '/s/x', value: 1 }],
      'Invalid',
      'add operation does not apply: doc is missing path: "/s/x": missing value',
    ],
    [
      'add past the end of an array',
      [{ op: 'add', path: '/arr/3', value: 1 }],
      'Invalid',
      "error in add for path: '/arr/3': Unable to access invalid index: 3: invalid index referenced",
    ],
    [
      'add at an index with a leading zero',
      [{ op: 'add', path: '/arr/01', value: 1 }],
      'Invalid',
      `error in add for path: '/arr/01': value was not a proper array index: '01': strconv.Atoi: parsing "01": invalid syntax`,
    ],
    [
      'add at a negative index',
      [{ op: 'add', path: '/arr/-1', value: 1 }],
      'Invalid',
      `error in add for path: '/arr/-1': value was not a proper array index: '-1': strconv.Atoi: parsing "-1": invalid syntax`,
    ],
    [
      'remove a missing member',
      [{ op: 'remove', path: '/nope' }],
      'Invalid',
      "error in remove for path: '/nope': Unable to remove nonexistent key: nope: missing value",
    ],
    [
      'remove under a missing member',
      [{ op: 'remove', path: '/nope/x' }],
      'Invalid',
      'remove operation does not apply: doc is missing path: "/nope/x": missing value',
    ],
    [
      'remove past the end of an array',
      [{ op: 'remove', path: '/arr/2' }],
      'Invalid',
      "error in remove for path: '/arr/2': Unable to access invalid index: 2: invalid index referenced",
    ],
    [
      'remove "-"',
      [{ op: 'remove', path: '/arr/-' }],
      'Invalid',
      `error in remove for path: '/arr/-': strconv.Atoi: parsing "-": invalid syntax`,
    ],
    [
      'remove the root',
      [{ op: 'remove', path: '' }],
      'Invalid',
      'remove operation does not apply: doc is missing path: "": missing value',
    ],
    [
      'replace a missing member',
      [{ op: 'replace', path: '/nope', value: 1 }],
      'Invalid',
      'replace operation does not apply: doc is missing key: /nope: missing value',
    ],
    [
      'replace past the end of an array',
      [{ op: 'replace', path: '/arr/2', value: 1 }],
      'Invalid',
      'replace operation does not apply: doc is missing key: /arr/2: missing value',
    ],
    [
      'replace with a non-string path',
      [{ op: 'replace', path: 3, value: 1 }],
      'Invalid',
      'replace operation failed to decode path: json: cannot unmarshal number into Go value of type string',
    ],
    [
      'replace without value',
      [{ op: 'replace', path: '/a' }],
      'Invalid',
      'replace operation failed to decode value: operation, missing value field: missing value',
    ],
    [
      'move without from',
      [{ op: 'move', path: '/x' }],
      'Invalid',
      'move operation failed to decode from: operation, missing from field: missing value',
    ],
    [
      'move from a missing member',
      [{ op: 'move', from: '/nope', path: '/x' }],
      'Invalid',
      "error in move for path: 'nope': Unable to remove nonexistent key: nope: missing value",
    ],
    [
      'move into its own child',
      [{ op: 'move', from: '/a', path: '/a/b/c' }],
      'Invalid',
      'move operation does not apply: doc is missing destination path: /a/b/c: missing value',
    ],
    [
      'copy from a missing member',
      [{ op: 'copy', from: '/nope', path: '/x' }],
      'Invalid',
      "error in copy for from: '/nope': unable to get nonexistent key: nope: missing value",
    ],
    [
      'copy to a missing parent',
      [{ op: 'copy', from: '/a', path: '/nope/x' }],
      'Invalid',
      'copy operation does not apply: doc is missing destination path: /nope/x: missing value',
    ],
    [
      'copy past the end of an array',
      [{ op: 'copy', from: '/a', path: '/arr/5' }],
      'Invalid',
      'error while adding value during copy: Unable to access invalid index: 5: invalid index referenced',
    ],
    [
      'test a missing member for null',
      [{ op: 'test', path: '/nope', value: null }],
      'Invalid',
      'testing value /nope failed: test failed',
    ],
    [
      'test under a missing member',
      [{ op: 'test', path: '/nope/x', value: 1 }],
      'Invalid',
      'test operation does not apply: is missing path: /nope/x: missing value',
    ],
    [
      'test past the end of an array',
      [{ op: 'test', path: '/arr/9', value: 1 }],
      'Invalid',
      "error in test for path: '/arr/9': Unable to access invalid index: 9: invalid index referenced",
    ],
    ['test without value', [{ op: 'test', path: '/s' }], 'Invalid', 'testing value /s failed: test failed'],
    [
      'a failure after a successful operation',
      [
        { op: 'add', path: '/x', value: 1 },
        { op: 'test', path: '/x', value: 2 },
      ],
      'Invalid',
      'testing value /x failed: test failed',
    ],
  ];
  for (const [name, operations, code, message] of errors) {
    it(`rejects ${name}`, () => {
      const target = deepFreeze(structuredClone(doc));
      assert.throws(
        () => applyJsonPatch(target, operations),
        (err: unknown) => {
          assert.ok(isLoamError(err, code), `expected LoamError ${code}, got ${String(err)}`);
          assert.equal(err.message, message);
          return true;
        },
      );
      assert.deepEqual(target, doc);
    });
  }
});
