import assert from 'node:assert/strict';
import { type Condition, formatTimestamp, getCondition, setCondition } from '../../crds/meta.js';

describe('crds/meta conditions', () => {
  const earlier = new Date('2025-05-01T12:00:00.250Z');
  const later = new Date('2025-05-01T12:05:00Z');
  const ready: Condition = {
    type: 'Ready',
    status: 'False',
    reason: 'Provisioning',
    message: 'downloading the image',
    lastTransitionTime: formatTimestamp(earlier),
  };

  it('formats timestamps as Kubernetes does: UTC, whole seconds', () => {
    assert.equal(formatTimestamp(earlier), '2025-05-01T12:00:00Z');
  });

  it('appends a condition of a new type, stamped now', () => {
    const next = setCondition(
      undefined,
      { type: 'Ready', status: 'True', reason: 'Running', message: '' },
      later,
    );
    assert.deepEqual(next, [
      {
        type: 'Ready',
        status: 'True',
        reason: 'Running',
        message: '',
        lastTransitionTime: '2025-05-01T12:05:00Z',
      },
    ]);
  });

  it('keeps lastTransitionTime when the status stays the same', () => {
    const current = [ready];
    const next = setCondition(
      current,
      {
        type: 'Ready',
        status: 'False',
        reason: 'Booting',
        message: 'waiting for the guest',
        observedGeneration: 2,
      },
      later,
    );
    assert.deepEqual(next, [
      {
        type: 'Ready',
        status: 'False',
        reason: 'Booting',
        message: 'waiting for the guest',
        observedGeneration: 2,
        lastTransitionTime: '2025-05-01T12:00:00Z',
      },
    ]);
    assert.notEqual(next, current, 'a new array');
    assert.deepEqual(current, [ready], 'the input is not mutated');
  });

  it('moves lastTransitionTime when the status changes', () => {
    const next = setCondition(
      [ready],
      { type: 'Ready', status: 'True', reason: 'Running', message: '' },
      later,
    );
    assert.equal(getCondition(next, 'Ready')?.lastTransitionTime, '2025-05-01T12:05:00Z');
    assert.equal(getCondition(next, 'Ready')?.status, 'True');
  });

  it('leaves conditions of other types alone, in order', () => {
    const scheduled: Condition = { ...ready, type: 'Scheduled', status: 'True', reason: 'HostChosen' };
    const next = setCondition(
      [scheduled, ready],
      { type: 'Ready', status: 'True', reason: 'Running', message: '' },
      later,
    );
    assert.deepEqual(
      next.map((condition) => condition.type),
      ['Scheduled', 'Ready'],
    );
    assert.equal(next[0], scheduled);
  });

  it('getCondition finds by type, or undefined', () => {
    assert.equal(getCondition([ready], 'Ready'), ready);
    assert.equal(getCondition([ready], 'Scheduled'), undefined);
    assert.equal(getCondition(undefined, 'Ready'), undefined);
  });
});
