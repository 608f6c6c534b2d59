/**
 * JSON merge patch (RFC 7386) and JSON patch (RFC 6902) for PATCH requests with
 * `application/merge-patch+json` and `application/json-patch+json`. Pure: inputs are never
 * mutated and results share no objects or arrays with them.
 *
 * JSON patch follows RFC 6902 (and RFC 6901 pointers) strictly. Failures use kube-apiserver's
 * split and the texts of the library it uses (gopkg.in/evanphx/json-patch.v4):
 * - a document that is not a list of operation objects → LoamError('BadRequest') (HTTP 400),
 *   with encoding/json's message, as `jsonpatch.DecodePatch` fails;
 * - an operation that cannot be applied (unknown op, missing member, path that does not exist,
 *   failed `test`) → LoamError('Invalid') (HTTP 422), as `Patch.Apply` fails.
 */
import { LoamError } from '../../crds/errors.js';

type JsonObject = { [key: string]: unknown };

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Assigns without ever touching a prototype (a JSON key may be `__proto__`). */
function setKey(obj: JsonObject, key: string, value: unknown): void {
  if (key === '__proto__') {
    Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
  } else {
    obj[key] = value;
  }
}

/** Deep copy of a JSON value (arrays and plain objects; anything else is kept as is). */
function clone(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(clone);
  if (isObject(v)) {
    const out: JsonObject = {};
    for (const [k, child] of Object.entries(v)) setKey(out, k, clone(child));
    return out;
  }
  return v;
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) {
    return Array.isArray(b) && a.length === b.length && a.every((v, i) => deepEqual(v, b[i]));
  }
  if (isObject(a) && isObject(b)) {
    const keys = Object.keys(a);
    if (keys.length !== Object.keys(b).length) return false;
    return keys.every((k) => Object.hasOwn(b, k) && deepEqual(a[k], b[k]));
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// RFC 7386

/**
 * RFC 7386 JSON merge patch: a non-object patch replaces the target; an object patch merges
 * member by member, `null` deleting, objects merging recursively, anything else (arrays
 * included) replacing. Never throws.
 *
 * kube-apiserver additionally rejects a top-level `null` or scalar merge patch with
 * 400 "Invalid JSON Patch"; that check belongs to the request handler, not here.
 */
export function applyMergePatch(target: unknown, patch: unknown): unknown {
  return mergeOwned(clone(target), patch);
}

/** `target` is already a private copy and may be changed in place. */
function mergeOwned(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return clone(patch);
  const out: JsonObject = isObject(target) ? target : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete out[key];
    else setKey(out, key, mergeOwned(Object.hasOwn(out, key) ? out[key] : undefined, value));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// RFC 6902

export type JsonPatchOperation =
  | { op: 'add' | 'replace' | 'test'; path: string; value: unknown }
  | { op: 'remove'; path: string }
  | { op: 'move' | 'copy'; from: string; path: string };

/** encoding/json's name for the JSON type of `v`, as in "cannot unmarshal <kind> into ...". */
function jsonKind(v: unknown): string {
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'number' || typeof v === 'bigint') return 'number';
  if (typeof v === 'string') return 'string';
  return 'object';
}

/** Go's %q for the strconv error texts. */
const quote = (s: string) => JSON.stringify(s);

const missing = 'missing value';
const invalidIndex = 'invalid index referenced';

/** A failed step; the message is completed with context by the operation that hit it. */
class Step extends Error {}

/** A resolved parent: the container holding the pointer's last token. */
type Parent = { container: JsonObject | unknown[]; key: string };

/** RFC 6901 tokens, or undefined for a pointer that is neither `` nor starts with `/`. */
function tokens(pointer: string): string[] | undefined {
  if (pointer === '') return [];
  if (!pointer.startsWith('/')) return undefined;
  return pointer
    .slice(1)
    .split('/')
    .map((t) => t.replaceAll('~1', '/').replaceAll('~0', '~'));
}

/** RFC 6901 array index (`0` or no leading zero); throws strconv's text otherwise. */
function arrayIndex(key: string): number {
  if (!/^(0|[1-9][0-9]*)$/.test(key)) throw new Step(`strconv.Atoi: parsing ${quote(key)}: invalid syntax`);
  return Number(key);
}

/** The container of `pointer`'s last token, or undefined when any step before it does not exist. */
function findParent(root: unknown, pointer: string): Parent | undefined {
  const toks = tokens(pointer);
  if (toks === undefined || toks.length === 0) return undefined;
  let node = root;
  for (const tok of toks.slice(0, -1)) {
    if (Array.isArray(node)) {
      if (!/^(0|[1-9][0-9]*)$/.test(tok) || Number(tok) >= node.length) return undefined;
      node = node[Number(tok)];
    } else if (isObject(node)) {
      if (!Object.hasOwn(node, tok)) return undefined;
      node = node[tok];
    } else {
      return undefined;
    }
  }
  if (!Array.isArray(node) && !isObject(node)) return undefined;
  return { container: node, key: toks[toks.length - 1] ?? '' };
}

function getIn({ container, key }: Parent): unknown {
  if (Array.isArray(container)) {
    const i = arrayIndex(key);
    if (i >= container.length) throw new Step(`Unable to access invalid index: ${key}: ${invalidIndex}`);
    return container[i];
  }
  if (!Object.hasOwn(container, key)) throw new Step(`unable to get nonexistent key: ${key}: ${missing}`);
  return container[key];
}

function addIn({ container, key }: Parent, value: unknown): void {
  if (Array.isArray(container)) {
    if (key === '-') {
      container.push(value);
      return;
    }
    let i: number;
    try {
      i = arrayIndex(key);
    } catch (err) {
      throw err instanceof Step
        ? new Step(`value was not a proper array index: '${key}': ${err.message}`)
        : err;
    }
    if (i > container.length) throw new Step(`Unable to access invalid index: ${key}: ${invalidIndex}`);
    container.splice(i, 0, value);
    return;
  }
  setKey(container, key, value);
}

function removeIn({ container, key }: Parent): unknown {
  if (Array.isArray(container)) {
    const i = arrayIndex(key);
    if (i >= container.length) throw new Step(`Unable to access invalid index: ${key}: ${invalidIndex}`);
    return container.splice(i, 1)[0];
  }
  if (!Object.hasOwn(container, key)) throw new Step(`Unable to remove nonexistent key: ${key}: ${missing}`);
  const value = container[key];
  delete container[key];
  return value;
}

/** Why a string member (`path`, `from`) cannot be read, or its value. */
function stringMember(op: JsonObject, name: 'path' | 'from'): string | { error: string } {
  const v = op[name];
  if (v === undefined || v === null || !Object.hasOwn(op, name)) {
    return {
      error:
        name === 'path'
          ? `operation missing path field: ${missing}`
          : `operation, missing from field: ${missing}`,
    };
  }
  if (typeof v !== 'string')
    return { error: `json: cannot unmarshal ${jsonKind(v)} into Go value of type string` };
  return v;
}

const valueMissing = `operation, missing value field: ${missing}`;

/** Applies one operation to the document held in `doc.root` (a private copy). */
function applyOne(doc: { root: unknown }, op: JsonObject): void {
  const kind = typeof op.op === 'string' ? op.op : 'unknown';
  const invalid = (message: string) => new LoamError('Invalid', message);
  const fail = (message: string): never => {
    throw invalid(message);
  };
  const wrap = <T>(prefix: string, fn: () => T): T => {
    try {
      return fn();
    } catch (err) {
      if (err instanceof Step) throw invalid(`${prefix}: ${err.message}`);
      throw err;
    }
  };
  const hasValue = Object.hasOwn(op, 'value');

  switch (kind) {
    case 'add': {
      const path = stringMember(op, 'path');
      if (typeof path !== 'string') throw invalid(`add operation failed to decode path: ${missing}`);
      if (!hasValue) throw invalid(`add operation failed to decode value: ${valueMissing}`);
      if (path === '') {
        doc.root = clone(op.value);
        return;
      }
      const parent =
        findParent(doc.root, path) ??
        fail(`add operation does not apply: doc is missing path: "${path}": ${missing}`);
      wrap(`error in add for path: '${path}'`, () => addIn(parent, clone(op.value)));
      return;
    }
    case 'remove': {
      const path = stringMember(op, 'path');
      if (typeof path !== 'string') throw invalid(`remove operation failed to decode path: ${missing}`);
      const parent =
        findParent(doc.root, path) ??
        fail(`remove operation does not apply: doc is missing path: "${path}": ${missing}`);
      wrap(`error in remove for path: '${path}'`, () => removeIn(parent));
      return;
    }
    case 'replace': {
      const path = stringMember(op, 'path');
      if (typeof path !== 'string') throw invalid(`replace operation failed to decode path: ${path.error}`);
      if (!hasValue) throw invalid(`replace operation failed to decode value: ${valueMissing}`);
      if (path === '') {
        doc.root = clone(op.value);
        return;
      }
      const parent =
        findParent(doc.root, path) ??
        fail(`replace operation does not apply: doc is missing path: ${path}: ${missing}`);
      try {
        getIn(parent);
      } catch (err) {
        if (err instanceof Step)
          throw invalid(`replace operation does not apply: doc is missing key: ${path}: ${missing}`);
        throw err;
      }
      if (Array.isArray(parent.container)) parent.container[Number(parent.key)] = clone(op.value);
      else setKey(parent.container, parent.key, clone(op.value));
      return;
    }
    case 'move': {
      const from = stringMember(op, 'from');
      if (typeof from !== 'string') throw invalid(`move operation failed to decode from: ${from.error}`);
      const source =
        findParent(doc.root, from) ??
        fail(`move operation does not apply: doc is missing from path: ${from}: ${missing}`);
      const value = wrap(`error in move for path: '${source.key}'`, () => removeIn(source));
      const path = stringMember(op, 'path');
      if (typeof path !== 'string') throw invalid(`move operation failed to decode path: ${path.error}`);
      if (path === '') {
        doc.root = value;
        return;
      }
      // Removing first makes a move into the moved value's own child fail here, as RFC 6902 requires.
      const target =
        findParent(doc.root, path) ??
        fail(`move operation does not apply: doc is missing destination path: ${path}: ${missing}`);
      wrap(`error in move for path: '${path}'`, () => addIn(target, value));
      return;
    }
    case 'copy': {
      const from = stringMember(op, 'from');
      if (typeof from !== 'string') throw invalid(`copy operation failed to decode from: ${from.error}`);
      let value: unknown;
      if (from === '') {
        value = doc.root;
      } else {
        const source =
          findParent(doc.root, from) ??
          fail(`copy operation does not apply: doc is missing from path: ${from}: ${missing}`);
        value = wrap(`error in copy for from: '${from}'`, () => getIn(source));
      }
      const path = stringMember(op, 'path');
      if (typeof path !== 'string') throw invalid(`copy operation failed to decode path: ${missing}`);
      if (path === '') {
        doc.root = clone(value);
        return;
      }
      const target =
        findParent(doc.root, path) ??
        fail(`copy operation does not apply: doc is missing destination path: ${path}: ${missing}`);
      wrap('error while adding value during copy', () => addIn(target, clone(value)));
      return;
    }
    case 'test': {
      const path = stringMember(op, 'path');
      if (typeof path !== 'string') throw invalid(`test operation failed to decode path: ${path.error}`);
      const failed = `testing value ${path} failed: test failed`;
      if (!hasValue) throw invalid(failed);
      let actual: unknown;
      if (path === '') {
        actual = doc.root;
      } else {
        const parent =
          findParent(doc.root, path) ??
          fail(`test operation does not apply: is missing path: ${path}: ${missing}`);
        if (!Array.isArray(parent.container) && !Object.hasOwn(parent.container, parent.key))
          throw invalid(failed);
        actual = wrap(`error in test for path: '${path}'`, () => getIn(parent));
      }
      if (!deepEqual(actual, op.value)) throw invalid(failed);
      return;
    }
    default:
      throw invalid(`Unexpected kind: ${kind}`);
  }
}

/**
 * RFC 6902 JSON patch: add, remove, replace, move, copy and test, with RFC 6901 pointers
 * (`~0`/`~1` escapes, `-` to append). Returns the patched copy; `target` and `operations`
 * are left untouched. As in kube-apiserver, a `null` document is an empty patch.
 */
export function applyJsonPatch(target: unknown, operations: unknown): unknown {
  if (operations === null) return clone(target);
  if (!Array.isArray(operations)) {
    throw new LoamError(
      'BadRequest',
      `json: cannot unmarshal ${jsonKind(operations)} into Go value of type jsonpatch.Patch`,
    );
  }
  for (const op of operations) {
    if (op !== null && !isObject(op)) {
      throw new LoamError(
        'BadRequest',
        `json: cannot unmarshal ${jsonKind(op)} into Go value of type jsonpatch.Operation`,
      );
    }
  }
  const doc = { root: clone(target) };
  for (const op of operations as (JsonObject | null)[]) applyOne(doc, op ?? {});
  return doc.root;
}
