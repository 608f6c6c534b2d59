/**
 * Validation of manifest files as a user writes them (YAML, several documents), for `loam
 * validate`: each document is checked against its kind's schema and reported by kind/name.
 */
import YAML from 'yaml';
import { isLoamError } from './errors.js';
import { apiVersion, kindByName, kinds } from './v1alpha1/index.js';
import { validateObject } from './validate.js';

export interface ManifestResult {
  /** `Kind/name`, or `document N` when the document has no usable kind or name. */
  name: string;
  /** One line per problem, naming the field; empty when the document is valid. */
  errors: string[];
  /** The object with its schema's defaults applied, when it is valid. */
  object?: unknown;
}

export function validateManifests(text: string): ManifestResult[] {
  const results: ManifestResult[] = [];
  YAML.parseAllDocuments(text).forEach((doc, index) => {
    const fallbackName = `document ${index + 1}`;
    if (doc.errors.length > 0) {
      results.push({ name: fallbackName, errors: doc.errors.map((e) => `invalid YAML: ${e.message}`) });
      return;
    }
    const obj: unknown = doc.toJS();
    if (obj === null || obj === undefined) return; // an empty document, e.g. after a trailing ---
    if (typeof obj !== 'object' || Array.isArray(obj)) {
      results.push({ name: fallbackName, errors: ['a manifest must be a YAML mapping'] });
      return;
    }
    const {
      kind,
      apiVersion: version,
      metadata,
    } = obj as { kind?: unknown; apiVersion?: unknown; metadata?: { name?: unknown } };
    const name =
      typeof kind === 'string' && typeof metadata?.name === 'string'
        ? `${kind}/${metadata.name}`
        : fallbackName;
    const info = typeof kind === 'string' ? kindByName(kind) : undefined;
    if (!info) {
      const known = kinds.map((k) => k.kind).join(', ');
      results.push({
        name,
        errors: [`kind: Unsupported value: ${JSON.stringify(kind)}: supported kinds: ${known}`],
      });
      return;
    }
    if (version !== apiVersion) {
      results.push({
        name,
        errors: [
          `apiVersion: Unsupported value: ${JSON.stringify(version)}: supported values: "${apiVersion}"`,
        ],
      });
      return;
    }
    try {
      results.push({ name, errors: [], object: validateObject(info, obj) });
    } catch (err) {
      if (!isLoamError(err, 'Invalid')) throw err;
      results.push({ name, errors: err.causes.map((cause) => `${cause.field}: ${cause.message}`) });
    }
  });
  return results;
}
