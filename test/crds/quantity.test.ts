import assert from 'node:assert/strict';
import { parseQuantity } from '../../crds/quantity.js';

describe('crds/quantity parseQuantity', () => {
  const valid: [string | number, bigint][] = [
    ['0', 0n],
    ['512', 512n],
    [512, 512n],
    ['+2', 2n],
    ['1Ki', 1024n],
    ['512Mi', 536870912n],
    ['1Gi', 1073741824n],
    ['2Ti', 2n * 1024n ** 4n],
    ['1Ei', 1024n ** 6n],
    ['1k', 1000n],
    ['1M', 1000000n],
    ['1G', 1000000000n],
    ['1E', 10n ** 18n],
    ['1e3', 1000n],
    ['1E3', 1000n],
    ['5e-1', 1n],
    ['0.5Gi', 536870912n],
    ['.5Ki', 512n],
    ['5.', 5n],
    ['1.5', 2n],
    ['100m', 1n],
    ['-1Gi', -1073741824n],
    ['1e+18', 10n ** 18n],
  ];
  for (const [input, expected] of valid) {
    it(`${typeof input === 'string' ? JSON.stringify(input) : input} is ${expected}`, () =>
      assert.equal(parseQuantity(input), expected));
  }

  const invalid: (string | number)[] = [
    '',
    'abc',
    '2GB',
    '1kb',
    '1e',
    'Gi',
    '1 Gi',
    '1.2.3',
    '1Ki5',
    '0x10',
    '1e999999999',
    '9Ei0',
    Number.NaN,
    Number.POSITIVE_INFINITY,
  ];
  for (const input of invalid) {
    it(`${typeof input === 'string' ? JSON.stringify(input) : input} throws`, () =>
      assert.throws(() => parseQuantity(input)));
  }

  it('rejects values beyond int64', () => assert.throws(() => parseQuantity('8Ei'), /out of range/));
});
