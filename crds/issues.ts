import type { z } from 'zod';

/** The Kubernetes field error types (`StatusCause.type`) a validation failure is reported with. */
export type FieldReason =
  | 'FieldValueRequired'
  | 'FieldValueInvalid'
  | 'FieldValueNotSupported'
  | 'FieldValueDuplicate'
  | 'FieldValueTooLong'
  | 'FieldValueTooMany'
  | 'FieldValueForbidden';

/**
 * Reports a problem found by a refinement. `path` is relative to the refined schema, so a rule on
 * the spec points at the field a user has to change, not at the spec as a whole. crds/validate.ts
 * reads `params.reason` back; `message` is the detail after the Kubernetes prefix ("Required
 * value", "Forbidden", ...).
 */
export function addFieldIssue(
  ctx: z.RefinementCtx,
  path: PropertyKey[],
  reason: FieldReason,
  message: string,
): void {
  ctx.addIssue({ code: 'custom', path, message, params: { reason } });
}

/** For a pair of mutually exclusive fields of which one is required, both directly on `value`. */
export function requireExactlyOne(
  ctx: z.RefinementCtx,
  value: Record<string, unknown>,
  first: string,
  second: string,
): void {
  const hasFirst = value[first] !== undefined;
  const hasSecond = value[second] !== undefined;
  if (hasFirst && hasSecond) {
    addFieldIssue(ctx, [second], 'FieldValueForbidden', `may not be set together with ${first}`);
  } else if (!hasFirst && !hasSecond) {
    addFieldIssue(ctx, [first], 'FieldValueRequired', `one of ${first} or ${second} is required`);
  }
}
