/**
 * Kubernetes resource quantities ("512Mi", "2G", "1e3", 1073741824). Objects keep the value as the
 * user wrote it; code that needs a number calls parseQuantity.
 */

import { z } from 'zod';
import { addFieldIssue } from './issues.js';

// <sign>?<number>(<binarySI> | <decimalExponent> | <decimalSI>)?, as in k8s.io/apimachinery
// resource.Quantity. The exponent alternative comes before the decimal suffixes so that "1E3" is
// 1000 while a bare "1E" is one exa.
const quantityPattern = /^([+-]?)(\d+(?:\.\d*)?|\.\d+)(?:(Ki|Mi|Gi|Ti|Pi|Ei)|[eE]([+-]?\d+)|([numkMGTPE]))?$/;

const binaryPowers: Record<string, bigint> = { Ki: 1n, Mi: 2n, Gi: 3n, Ti: 4n, Pi: 5n, Ei: 6n };
const decimalExponents: Record<string, number> = {
  n: -9,
  u: -6,
  m: -3,
  k: 3,
  M: 6,
  G: 9,
  T: 12,
  P: 15,
  E: 18,
};

// Quantities are int64 in Kubernetes; bounding the exponent first keeps "1e999999999" from
// allocating a billion-digit bigint before the range check can reject it.
const maxExponent = 64;
const maxValue = 2n ** 63n - 1n;

/**
 * The value of a quantity in base units (bytes for memory), rounded up to an integer away from
 * zero as resource.Quantity.Value() does. Throws on anything that is not a quantity.
 */
export function parseQuantity(quantity: string | number): bigint {
  if (typeof quantity === 'number' && !Number.isFinite(quantity)) {
    throw new Error(`invalid quantity ${quantity}`);
  }
  const text = String(quantity);
  const match = quantityPattern.exec(text);
  if (!match) throw new Error(`invalid quantity ${JSON.stringify(text)}`);
  const [, sign = '', number = '', binarySuffix, exponentText, decimalSuffix] = match;

  const [whole = '', fraction = ''] = number.split('.');
  let exponent = -fraction.length;
  if (exponentText !== undefined) exponent += Number(exponentText);
  if (decimalSuffix !== undefined) exponent += decimalExponents[decimalSuffix] ?? 0;
  if (Math.abs(exponent) > maxExponent) throw new Error(`quantity ${JSON.stringify(text)} is out of range`);

  let numerator = BigInt(`${whole}${fraction}` || '0');
  if (binarySuffix !== undefined) numerator *= 1024n ** (binaryPowers[binarySuffix] ?? 0n);
  let magnitude: bigint;
  if (exponent >= 0) {
    magnitude = numerator * 10n ** BigInt(exponent);
  } else {
    const denominator = 10n ** BigInt(-exponent);
    magnitude = (numerator + denominator - 1n) / denominator;
  }
  if (magnitude > maxValue) throw new Error(`quantity ${JSON.stringify(text)} is out of range`);
  return sign === '-' ? -magnitude : magnitude;
}

/**
 * An int-or-string quantity field that must be positive and at least `min` when given. The CRD
 * gets the int-or-string marker; the grammar itself is only checked here.
 */
export function quantity(options: { min?: string } = {}) {
  const { min } = options;
  const minValue = min === undefined ? undefined : parseQuantity(min);
  return z
    .union([z.number().int(), z.string()])
    .superRefine((value, ctx) => {
      let parsed: bigint;
      try {
        parsed = parseQuantity(value);
      } catch {
        addFieldIssue(ctx, [], 'FieldValueInvalid', 'must be a quantity such as 512Mi, 2Gi or 1000000');
        return;
      }
      if (parsed <= 0n) addFieldIssue(ctx, [], 'FieldValueInvalid', 'must be greater than zero');
      else if (minValue !== undefined && parsed < minValue) {
        addFieldIssue(ctx, [], 'FieldValueInvalid', `must be at least ${min}`);
      }
    })
    .meta({ 'x-kubernetes-int-or-string': true });
}
