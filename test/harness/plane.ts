/**
 * `loam up` in the test process: loopback, free ports, the embedded store, no logs, and no
 * controllers unless a test asks (API and hub tests drive objects and jobs by hand).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ControlPlane, type UpOptions, up } from '../../controllers/up.js';

export function tempDir(name: string): string {
  return mkdtempSync(join(tmpdir(), `loam-${name}-`));
}

export function startPlane(dataDir: string, options: Partial<UpOptions> = {}): Promise<ControlPlane> {
  return up({
    dataDir,
    host: '127.0.0.1',
    port: 0,
    store: 'sqlite',
    etcdEndpoints: [],
    tlsSans: [],
    logLevel: 'silent',
    // Loopback and a free port, so planes in one test run never collide.
    agentHost: '127.0.0.1',
    agentPort: 0,
    controllers: false,
    ...options,
  });
}
