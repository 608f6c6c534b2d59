/**
 * The API server's Prometheus metrics, named after kube-apiserver's (apiserver_request_duration_seconds,
 * apiserver_current_inflight_requests, apiserver_registered_watchers) with a loam_ prefix.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export interface ApiServerMetrics {
  requestDuration: Histogram<'verb' | 'resource' | 'code'>;
  inflight: Gauge<'request_kind'>;
  watchers: Gauge<'resource'>;
  watchEvents: Counter<'resource'>;
}

export function apiServerMetrics(registry: Registry): ApiServerMetrics {
  return {
    requestDuration: new Histogram({
      name: 'loam_apiserver_request_duration_seconds',
      help: 'Response latency of API requests (watches excluded: they last as long as the client stays), by verb, resource and HTTP code.',
      labelNames: ['verb', 'resource', 'code'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    inflight: new Gauge({
      name: 'loam_apiserver_current_inflight_requests',
      help: 'Requests being served now, by kind (readOnly or mutating); watches excluded.',
      labelNames: ['request_kind'],
      registers: [registry],
    }),
    watchers: new Gauge({
      name: 'loam_apiserver_registered_watchers',
      help: 'Open watch streams, by resource.',
      labelNames: ['resource'],
      registers: [registry],
    }),
    watchEvents: new Counter({
      name: 'loam_apiserver_watch_events_total',
      help: 'Events sent to watch streams, by resource.',
      labelNames: ['resource'],
      registers: [registry],
    }),
  };
}
