/**
 * The `loam` command line. Thin: each command parses its flags with commander and calls into the
 * modules that do the work.
 */
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { validateManifests } from '../crds/manifests.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

const program = new Command()
  .name('loam')
  .description('Self-hosted control plane for VMs, unikernels and private networks, driven with kubectl.')
  .version(pkg.version)
  .showHelpAfterError();

program
  .command('validate')
  .description('check manifests against the loam.dev/v1alpha1 schemas, without touching anything')
  .requiredOption(
    '-f, --filename <file>',
    'manifest file (YAML, several documents allowed; - for stdin); repeatable',
    collect,
    [],
  )
  .action((options: { filename: string[] }) => {
    let failed = false;
    for (const file of options.filename) {
      const text = readFileSync(file === '-' ? 0 : file, 'utf8');
      for (const result of validateManifests(text)) {
        if (result.errors.length === 0) {
          console.log(`${file}: ${result.name}: valid`);
          continue;
        }
        failed = true;
        for (const error of result.errors) console.error(`${file}: ${result.name}: ${error}`);
      }
    }
    process.exitCode = failed ? 1 : 0;
  });

program.parseAsync().catch((err: unknown) => {
  console.error(`loam: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
