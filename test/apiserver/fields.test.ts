import assert from 'node:assert/strict';
import { checkUnknownFields, unknownFields } from '../../controllers/apiserver/fields.js';
import { instanceKind, networkKind } from '../../crds/v1alpha1/index.js';

describe('apiserver unknown fields', () => {
  const network = {
    apiVersion: 'loam.dev/v1alpha1',
    kind: 'Network',
    metadata: { name: 'lab', labels: { any: 'label' }, managedFields: [{ whatever: 1 }] },
    spec: { cidr: '10.0.0.0/24', dhcp: { enabled: true } },
  };

  it('finds none in a well-formed object, whatever its labels and managedFields hold', () => {
    assert.deepEqual(unknownFields(networkKind, network), []);
  });

  it('names every undeclared field by path, in lists too', () => {
    const typo = {
      ...network,
      metadata: { ...network.metadata, lables: {} },
      spec: { ...network.spec, egres: true, dhcp: { enabled: true, lease: '1h' } },
      extra: 1,
    };
    assert.deepEqual(unknownFields(networkKind, typo).sort(), [
      'extra',
      'metadata.lables',
      'spec.dhcp.lease',
      'spec.egres',
    ]);
    const instance = { spec: { networks: [{ name: 'lab', ip: '10.0.0.5' }] } };
    assert.deepEqual(unknownFields(instanceKind, instance), ['spec.networks[0].ip']);
  });

  it('fails under Strict, warns under Warn, and says nothing under Ignore', () => {
    const typo = { ...network, spec: { ...network.spec, egres: true } };
    assert.throws(
      () => checkUnknownFields(networkKind, typo, 'Strict'),
      /strict decoding error: unknown field "spec.egres"/,
    );
    assert.deepEqual(checkUnknownFields(networkKind, typo, 'Warn'), ['unknown field "spec.egres"']);
    assert.deepEqual(checkUnknownFields(networkKind, typo, 'Ignore'), []);
  });
});
