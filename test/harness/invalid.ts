import assert from 'node:assert/strict';
import { isLoamError, type LoamError } from '../../crds/errors.js';
import type { KindInfo } from '../../crds/kind.js';
import { validateObject } from '../../crds/validate.js';

/** The Invalid error validating `object` as `kind` raises; fails the test when it is valid. */
export function invalid(kind: KindInfo, object: unknown): LoamError {
  try {
    validateObject(kind, object);
  } catch (err) {
    assert.ok(isLoamError(err, 'Invalid'), `expected LoamError Invalid, got ${String(err)}`);
    return err;
  }
  assert.fail('expected the object to be invalid');
}
