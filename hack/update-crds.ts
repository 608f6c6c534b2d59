/** Regenerates crds/generated/ from the zod schemas. Run as `npm run update-crds`. */

import { relative } from 'node:path';
import { generatedCrdDir, repoRoot, writeCrdFiles } from './crd-files.js';

for (const name of writeCrdFiles(generatedCrdDir)) {
  console.log(`wrote ${relative(repoRoot, generatedCrdDir)}/${name}`);
}
