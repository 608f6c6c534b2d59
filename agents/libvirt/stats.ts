/**
 * Per-Instance metrics from libvirt's bulk stats (`virsh domstats --raw`), as a pure function:
 * the driver fetches the stats and registers the metrics (LibvirtDriver.registerMetrics).
 */

import type { StatsGroup } from './hypervisor.js';

/** The stats groups the metrics below are read from. */
export const statsGroups: readonly StatsGroup[] = ['state', 'cpu-total', 'balloon', 'interface', 'block'];

/** Metric name -> Prometheus type and help. Counters are libvirt's own counters, set as read. */
export const instanceMetricDefinitions = {
  loam_instance_cpu_seconds_total: {
    type: 'counter',
    help: 'CPU time the Instance used (libvirt cpu.time: all vCPUs and QEMU threads), in seconds.',
  },
  loam_instance_memory_resident_bytes: {
    type: 'gauge',
    help: "Resident memory of the Instance's QEMU process (libvirt balloon.rss), in bytes.",
  },
  loam_instance_network_receive_bytes_total: {
    type: 'counter',
    help: 'Bytes the Instance received on all its network interfaces (libvirt net.<i>.rx.bytes).',
  },
  loam_instance_network_transmit_bytes_total: {
    type: 'counter',
    help: 'Bytes the Instance sent on all its network interfaces (libvirt net.<i>.tx.bytes).',
  },
  loam_instance_storage_read_bytes_total: {
    type: 'counter',
    help: 'Bytes the Instance read from all its disks (libvirt block.<i>.rd.bytes).',
  },
  loam_instance_storage_write_bytes_total: {
    type: 'counter',
    help: 'Bytes the Instance wrote to all its disks (libvirt block.<i>.wr.bytes).',
  },
} as const satisfies Record<string, { type: 'counter' | 'gauge'; help: string }>;

export type InstanceMetric = keyof typeof instanceMetricDefinitions;

export interface InstanceLabels {
  namespace: string;
  name: string;
}

export interface InstanceSample {
  labels: InstanceLabels;
  value: number;
}

export type InstanceSamples = Record<InstanceMetric, InstanceSample[]>;

// virDomainState VIR_DOMAIN_SHUTOFF: no QEMU process, so no counters (libvirt then reports some
// other process's cpu.time).
const shutoff = '5';

// Per-device counters, summed per domain.
const deviceCounters: [RegExp, InstanceMetric][] = [
  [/^net\.\d+\.rx\.bytes$/, 'loam_instance_network_receive_bytes_total'],
  [/^net\.\d+\.tx\.bytes$/, 'loam_instance_network_transmit_bytes_total'],
  [/^block\.\d+\.rd\.bytes$/, 'loam_instance_storage_read_bytes_total'],
  [/^block\.\d+\.wr\.bytes$/, 'loam_instance_storage_write_bytes_total'],
];

/**
 * The samples of each metric for the domains in `identities` (domain name -> Instance) that are
 * not shut off. A metric whose fields a domain lacks (an interface without host-side counters,
 * a driver without the group) has no sample for it. Memory is balloon.rss only: balloon.current
 * is what the guest was given, not what it uses.
 */
export function instanceMetrics(
  stats: ReadonlyMap<string, Record<string, string>>,
  identities: ReadonlyMap<string, InstanceLabels>,
): InstanceSamples {
  const samples = {} as InstanceSamples;
  for (const metric of Object.keys(instanceMetricDefinitions) as InstanceMetric[]) samples[metric] = [];
  for (const [domain, fields] of stats) {
    const identity = identities.get(domain);
    if (identity === undefined || fields['state.state'] === shutoff) continue;
    const labels = { namespace: identity.namespace, name: identity.name };
    const values = new Map<InstanceMetric, number>();
    const cpu = numberOf(fields['cpu.time']);
    if (cpu !== undefined) values.set('loam_instance_cpu_seconds_total', cpu / 1e9);
    const rss = numberOf(fields['balloon.rss']);
    if (rss !== undefined) values.set('loam_instance_memory_resident_bytes', rss * 1024);
    for (const [key, text] of Object.entries(fields)) {
      const metric = deviceCounters.find(([pattern]) => pattern.test(key))?.[1];
      const value = numberOf(text);
      if (metric !== undefined && value !== undefined) values.set(metric, (values.get(metric) ?? 0) + value);
    }
    for (const [metric, value] of values) samples[metric].push({ labels, value });
  }
  return samples;
}

function numberOf(text: string | undefined): number | undefined {
  if (text === undefined || !/^\d+$/.test(text)) return undefined;
  return Number(text);
}
