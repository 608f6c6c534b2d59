import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { kindByName, kinds } from '../../crds/v1alpha1/index.js';
import { validateObject } from '../../crds/validate.js';
import { repoRoot } from '../../hack/crd-files.js';

const samplesDir = join(repoRoot, 'crds', 'samples');

function loadSamples(): { file: string; object: { kind?: unknown; metadata?: { name?: unknown } } }[] {
  return readdirSync(samplesDir)
    .filter((file) => file.endsWith('.yaml'))
    .sort()
    .flatMap((file) =>
      YAML.parseAllDocuments(readFileSync(join(samplesDir, file), 'utf8')).map((doc) => ({
        file,
        object: doc.toJS(),
      })),
    );
}

describe('crds/samples', () => {
  const samples = loadSamples();

  it('has one sample file per kind', () => {
    const files = new Set(samples.map((sample) => sample.file));
    for (const info of kinds)
      assert.ok(files.has(`${info.singular}.yaml`), `no crds/samples/${info.singular}.yaml`);
  });

  for (const { file, object } of samples) {
    it(`${file}: ${String(object.kind)} ${String(object.metadata?.name)} validates`, () => {
      const info = kindByName(String(object.kind));
      assert.ok(info, `unknown kind ${String(object.kind)}`);
      validateObject(info, object);
    });
  }
});
