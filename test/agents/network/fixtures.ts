/** Files the network tests read: stock OpenWrt configs, manifests and golden outputs. */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { RouterDriver, RouterModel } from '../../../agents/network/model.js';
import { type ManifestFile, modelFromManifests, type RenderOptions } from '../../../agents/network/render.js';

/** The source tree's test/agents/network/ (tests run from dist/). */
const here = new URL('../../../../test/agents/network/', import.meta.url);

/** A config file of a freshly installed OpenWrt 23.05, with a few hand edits and stale Loam sections. */
export function stockConfig(name: 'network' | 'dhcp' | 'firewall'): string {
  return readFileSync(new URL(`fixtures/openwrt/${name}`, here), 'utf8');
}

export function fixturePath(name: string): string {
  return fileURLToPath(new URL(`fixtures/${name}`, here));
}

/**
 * Compares `actual` with golden/<name>. `LOAM_UPDATE_GOLDEN=1` rewrites the file instead; the
 * diff of the golden file is then what a reviewer reads.
 */
export function assertGolden(name: string, actual: string): void {
  const file = new URL(`golden/${name}`, here);
  if (process.env.LOAM_UPDATE_GOLDEN === '1') writeFileSync(file, actual);
  assert.equal(
    actual,
    readFileSync(file, 'utf8'),
    `golden/${name} differs (LOAM_UPDATE_GOLDEN=1 rewrites it)`,
  );
}

/** The tenants scenario (fixtures/tenants.yaml) with the router settings its tests use. */
export function tenants(driver: RouterDriver): { files: ManifestFile[]; options: RenderOptions } {
  const path = fixturePath('tenants.yaml');
  return {
    files: [{ name: path, text: readFileSync(path, 'utf8') }],
    options: {
      driver,
      trunk: driver === 'openwrt' ? 'lan4' : 'eth1',
      uplink: driver === 'openwrt' ? 'lan' : 'eth1',
      vxlanLocal: '192.0.2.1',
      vteps: ['192.0.2.11', '192.0.2.12'],
    },
  };
}

/** The tenants scenario's router model; fails the test when the scenario does not render cleanly. */
export function tenantsModel(driver: RouterDriver): RouterModel {
  const { files, options } = tenants(driver);
  const { model, errors } = modelFromManifests(files, options);
  assert.deepEqual(errors, []);
  assert.ok(model);
  return model;
}
