/** Fails (exit 1) when crds/generated/ differs from what the zod schemas generate. Run as `npm run verify-crds`. */

import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { generatedCrdDir, listCrdFiles, repoRoot, writeCrdFiles } from './crd-files.js';

const freshDir = mkdtempSync(join(tmpdir(), 'loam-crds-'));
const problems: string[] = [];
try {
  const expected = writeCrdFiles(freshDir);
  for (const name of expected) {
    const committed = join(generatedCrdDir, name);
    if (!existsSync(committed)) problems.push(`${name} is missing`);
    else if (readFileSync(committed, 'utf8') !== readFileSync(join(freshDir, name), 'utf8')) {
      problems.push(`${name} is stale`);
    }
  }
  for (const name of listCrdFiles(generatedCrdDir)) {
    if (!expected.includes(name)) problems.push(`${name} is no longer generated`);
  }
} finally {
  rmSync(freshDir, { recursive: true, force: true });
}

const dir = relative(repoRoot, generatedCrdDir);
if (problems.length > 0) {
  for (const problem of problems) console.error(`${dir}/${problem}`);
  console.error('run npm run update-crds');
  process.exitCode = 1;
} else {
  console.log(`${dir} is up to date`);
}
