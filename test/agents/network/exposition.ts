/** Reading a Prometheus text exposition in the router drivers' metrics tests. */
import { isDeepStrictEqual } from 'node:util';

/** The value of the sample of `name` with exactly `labels`, if there is one. */
export function sample(exposition: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of exposition.split('\n')) {
    const match = /^(\w+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (match?.[1] !== name) continue;
    const shown = Object.fromEntries(
      [...(match[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]),
    );
    if (isDeepStrictEqual(shown, labels)) return Number(match[3]);
  }
  return undefined;
}
