/**
 * Loam's Kubernetes-compatible API server (standalone mode): HTTPS over HTTP/2 with HTTP/1.1
 * fallback, client-certificate or bearer-token authentication, discovery, OpenAPI, metrics, and
 * the resource verbs of resources.ts. Every error leaves as a Kubernetes Status.
 */
import type { KeyObject } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import {
  createSecureServer,
  type Http2SecureServer,
  type Http2ServerRequest,
  type Http2ServerResponse,
} from 'node:http2';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { Registry } from 'prom-client';
import YAML from 'yaml';
import { LoamError } from '../../crds/errors.js';
import type { KindInfo } from '../../crds/kind.js';
import { tokenVerificationKey } from '../pki/tokens.js';
import type { Store } from '../storage/store.js';
import { adminGroup, authorize, certificateUser, monitoringGroup, tokenUser, type User } from './auth.js';
import { ConsoleSessions, openInstanceStream, refuseUpgrade, type StreamHub } from './console.js';
import {
  aggregatedDiscovery,
  aggregatedDiscoveryContentType,
  discoveryDocument,
  wantsAggregatedDiscovery,
} from './discovery.js';
import { parseFieldValidation } from './fields.js';
import { type ApiServerMetrics, apiServerMetrics } from './metrics.js';
import { openapiDocuments, openapiIndex } from './openapi.js';
import {
  encodeOpenapiV2,
  openapiV2Document,
  openapiV2ProtobufType,
  wantsOpenapiV2Protobuf,
} from './openapi-v2.js';
import { type JobHub, performAction } from './power.js';
import { decodeKubernetesProtobuf, protobufContentType } from './protobuf.js';
import { type DeleteOptions, patchTypes, Resources, type WriteOptions } from './resources.js';
import { review, reviewFor } from './reviews.js';
import { isActionSubresource, isConnectSubresource, type ResourceRequest, routeRequest } from './routing.js';
import { statusFromError } from './status.js';
import { toTable, wantsTable } from './table.js';

export interface ApiServerOptions {
  store: Store;
  kinds: readonly KindInfo[];
  tls: { certPem: string; keyPem: string; caPem: string };
  /** Private key whose public half verifies bearer tokens. */
  tokenKeyPem: string;
  host: string;
  port: number;
  logger: Logger;
  /** Where the API server's metrics go; /metrics serves this registry. A private one when absent. */
  registry?: Registry;
  /** Interval between watch bookmarks (tests shorten it). */
  bookmarkIntervalMs?: number;
  /** The agent hub consoles and power actions go through, while this control plane runs it (it leads); none without. */
  hub?: () => (StreamHub & JobHub) | undefined;
  /** Interval between the pings that keep a console's WebSocket open (tests shorten it). */
  consolePingIntervalMs?: number;
}

/** kube-apiserver's limit on a request body. */
const maxBodyBytes = 3 * 1024 * 1024;
/** Deeper bodies are refused before any recursive code sees them; real objects nest ~10 levels. */
const maxBodyDepth = 100;

export class ApiServer {
  private readonly server: Http2SecureServer;
  private readonly resources: Resources;
  private readonly watches = new Set<AbortController>();
  /** /openapi/v3 and its per-group-version documents, serialized once: the index hashes these bytes. */
  private readonly openapi = new Map<string, string>();
  /** /openapi/v2 (Swagger 2.0) as JSON and as gnostic protobuf, serialized once. */
  private readonly openapiV2: { json: string; protobuf: Uint8Array };
  private readonly tokenKey: KeyObject;
  private readonly certificateUsers = new WeakMap<object, User | undefined>();
  private readonly registry: Registry;
  private readonly metrics: ApiServerMetrics;
  private readonly consoles: ConsoleSessions;

  private constructor(private readonly options: ApiServerOptions) {
    this.resources = new Resources(options.store, undefined, options.bookmarkIntervalMs);
    this.tokenKey = tokenVerificationKey(options.tokenKeyPem);
    this.registry = options.registry ?? new Registry();
    this.metrics = apiServerMetrics(this.registry);
    const documents = openapiDocuments(options.kinds);
    this.openapi.set('/openapi/v3', JSON.stringify(openapiIndex(documents)));
    for (const [path, document] of documents)
      this.openapi.set(`/openapi/v3/${path}`, JSON.stringify(document));
    const swagger = openapiV2Document(options.kinds);
    this.openapiV2 = { json: JSON.stringify(swagger), protobuf: encodeOpenapiV2(swagger) };
    this.server = createSecureServer(
      {
        allowHTTP1: true,
        cert: options.tls.certPem,
        key: options.tls.keyPem,
        ca: options.tls.caPem,
        requestCert: true,
        // Unauthenticated requests still get a Status (401) rather than a failed handshake.
        rejectUnauthorized: false,
      },
      (req, res) => void this.handle(req, res),
    );
    // WebSockets (consoles) start as HTTP/1.1 upgrades (RFC 6455), never on HTTP/2.
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      void this.upgrade(req, socket, head);
    });
    this.consoles = new ConsoleSessions(options.consolePingIntervalMs ?? 30_000, options.logger);
  }

  static async start(options: ApiServerOptions): Promise<ApiServer> {
    const server = new ApiServer(options);
    await new Promise<void>((resolve, reject) => {
      server.server.once('error', reject);
      server.server.listen(options.port, options.host, () => resolve());
    });
    return server;
  }

  get port(): number {
    return (this.server.address() as { port: number }).port;
  }

  get url(): string {
    const host = this.options.host.includes(':') ? `[${this.options.host}]` : this.options.host;
    return `https://${host === '0.0.0.0' || host === '[::]' ? '127.0.0.1' : host}:${this.port}`;
  }

  async close(): Promise<void> {
    for (const watch of this.watches) watch.abort();
    this.consoles.close();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: Http2ServerRequest, res: Http2ServerResponse): Promise<void> {
    const started = process.hrtime.bigint();
    const url = new URL(req.url, 'https://loam');
    let subject: ResourceRequest | undefined;
    const requestKind = ['GET', 'HEAD'].includes(req.method) ? 'readOnly' : 'mutating';
    this.metrics.inflight.inc({ request_kind: requestKind });
    try {
      if (['/healthz', '/livez', '/readyz'].includes(url.pathname)) {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
        return;
      }
      const user = this.certificateUser(req) ?? tokenUser(req.headers.authorization, this.tokenKey);
      if (!user) throw new LoamError('Unauthorized', 'Unauthorized');
      if (url.pathname === '/metrics' && req.method === 'GET') {
        if (!user.groups.some((g) => g === adminGroup || g === monitoringGroup)) {
          throw new LoamError('Forbidden', `forbidden: User "${user.name}" cannot get path "/metrics"`);
        }
        res.writeHead(200, { 'content-type': this.registry.contentType }).end(await this.registry.metrics());
        return;
      }
      const reviewed = reviewFor(req.method, url.pathname);
      if (reviewed) {
        this.send(res, 201, review(reviewed, user, await readBody(req, 'json', true)));
        return;
      }
      const route = routeRequest(req.method, url, this.options.kinds);
      if (route.type === 'other') {
        const legacyV2 = url.pathname === '/swagger-2.0.0.pb-v1';
        if (req.method === 'GET' && (legacyV2 || url.pathname.replace(/\/+$/, '') === '/openapi/v2')) {
          // The legacy path is protobuf only, as it was on kube-apiserver (client-go's fallback).
          if (legacyV2 || wantsOpenapiV2Protobuf(req.headers.accept)) {
            res.writeHead(200, { 'content-type': openapiV2ProtobufType }).end(this.openapiV2.protobuf);
          } else {
            res.writeHead(200, { 'content-type': 'application/json' }).end(this.openapiV2.json);
          }
          return;
        }
        const openapi = req.method === 'GET' ? this.openapi.get(url.pathname.replace(/\/+$/, '')) : undefined;
        if (openapi) {
          res.writeHead(200, { 'content-type': 'application/json' }).end(openapi);
          return;
        }
        const aggregated = wantsAggregatedDiscovery(req.headers.accept);
        const aggregatedDoc =
          req.method === 'GET' && aggregated
            ? aggregatedDiscovery(url.pathname, this.options.kinds, aggregated)
            : undefined;
        if (aggregated && aggregatedDoc) {
          res
            .writeHead(200, { 'content-type': aggregatedDiscoveryContentType(aggregated) })
            .end(JSON.stringify(aggregatedDoc));
          return;
        }
        const doc = req.method === 'GET' ? discoveryDocument(url.pathname, this.options.kinds) : undefined;
        if (!doc) throw new LoamError('NotFound', 'the server could not find the requested resource');
        this.send(res, 200, doc);
        return;
      }
      subject = route;
      authorize(user, route);
      // As kube-apiserver answers an exec without the upgrade.
      if (isConnectSubresource(route)) throw new LoamError('BadRequest', 'Upgrade request required');
      await this.serveResource(route, req, res, url);
    } catch (err) {
      if (!(err instanceof LoamError))
        this.options.logger.error({ err, path: url.pathname }, 'request failed');
      const status = statusFromError(err, {
        ...(subject ? { resource: subject.kind.plural, group: subject.kind.group } : {}),
        ...(subject?.name ? { name: subject.name } : {}),
      });
      if (res.headersSent) res.end();
      else this.send(res, status.code, status);
    } finally {
      this.metrics.inflight.dec({ request_kind: requestKind });
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      // A watch lasts as long as its client: its duration says nothing about latency.
      if (subject?.verb !== 'watch') {
        this.metrics.requestDuration.observe(
          {
            verb: subject?.verb ?? req.method,
            resource: subject ? subject.kind.plural : '',
            code: String(res.statusCode),
          },
          seconds,
        );
      }
      this.options.logger.debug(
        {
          method: req.method,
          path: url.pathname,
          query: url.search,
          code: res.statusCode,
          ms: Math.round(seconds * 1000),
        },
        'request',
      );
    }
  }

  private async serveResource(
    route: ResourceRequest,
    req: Http2ServerRequest,
    res: Http2ServerResponse,
    url: URL,
  ): Promise<void> {
    const table = wantsTable(req.headers.accept);
    const write: WriteOptions = {
      fieldValidation: parseFieldValidation(url.searchParams.get('fieldValidation')),
      dryRun: parseDryRun(url.searchParams.getAll('dryRun')),
      ...(url.searchParams.get('fieldManager')
        ? { fieldManager: url.searchParams.get('fieldManager') as string }
        : {}),
      ...(req.headers['user-agent'] ? { userAgent: req.headers['user-agent'] } : {}),
      force: url.searchParams.get('force') === 'true',
      warnings: [],
    };
    const respond = (code: number, obj: unknown) => {
      // kubectl prints each `Warning: 299 - "..."` header as a warning line.
      if (write.warnings.length > 0) {
        res.setHeader(
          'warning',
          write.warnings.map((w) => `299 - ${JSON.stringify(w)}`),
        );
      }
      if (!table) return this.send(res, code, obj);
      const list = obj as { metadata: Record<string, unknown>; items?: unknown[] };
      const objects = (list.items ?? [obj]) as Parameters<typeof toTable>[1];
      const metadata = list.items ? list.metadata : { resourceVersion: list.metadata.resourceVersion };
      return this.send(res, code, toTable(route.kind, objects, metadata, new Date()));
    };
    switch (route.verb) {
      case 'get':
        return respond(200, await this.resources.get(route));
      case 'list':
        return respond(200, await this.resources.list(route, url.searchParams));
      case 'watch':
        return this.serveWatch(route, url, res, table);
      case 'create':
        return respond(201, await this.resources.create(route, await readBody(req), write));
      case 'update':
        if (isActionSubresource(route)) {
          const options = actionOptions(await readBody(req, 'json', true), write);
          return respond(200, await performAction(route, this.resources, this.options.hub?.(), options));
        }
        return respond(200, await this.resources.update(route, await readBody(req), write));
      case 'patch': {
        const contentType = (req.headers['content-type'] ?? '').split(';')[0]?.trim() ?? '';
        const body = await readBody(req, contentType === patchTypes.apply ? 'yaml' : 'json');
        return respond(200, await this.resources.patch(route, contentType, body, write));
      }
      case 'delete':
        return respond(
          200,
          await this.resources.delete(route, deleteOptions(await readBody(req, 'json', true), url, write)),
        );
      case 'deletecollection':
        return respond(
          200,
          await this.resources.deleteCollection(
            route,
            url.searchParams,
            deleteOptions(await readBody(req, 'json', true), url, write),
          ),
        );
    }
  }

  private async serveWatch(
    route: ResourceRequest,
    url: URL,
    res: Http2ServerResponse,
    table: boolean,
  ): Promise<void> {
    const abort = new AbortController();
    this.watches.add(abort);
    const resource = { resource: route.kind.plural };
    this.metrics.watchers.inc(resource);
    // kube-apiserver ends an open-ended watch after a random 30-60 min so clients re-list now and then.
    const requested = Number(url.searchParams.get('timeoutSeconds') ?? 0);
    const timeoutSeconds = requested > 0 ? requested : 1800 + Math.floor(Math.random() * 1800);
    const timer = setTimeout(() => abort.abort(), timeoutSeconds * 1000);
    res.on('close', () => abort.abort());
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-cache' });
    // HTTP/2 sends headers on writeHead; the HTTP/1.1 fallback needs a nudge.
    (res as unknown as { flushHeaders?: () => void }).flushHeaders?.();
    try {
      await this.resources.watch(
        route,
        url.searchParams,
        {
          send: (type, object) => {
            const payload =
              table && type !== 'ERROR'
                ? toTable(route.kind, [object as Parameters<typeof toTable>[1][number]], {}, new Date())
                : object;
            res.write(`${JSON.stringify({ type, object: payload })}\n`);
            this.metrics.watchEvents.inc(resource);
          },
        },
        abort.signal,
      );
    } catch (err) {
      // Errors after the stream started (a compacted resourceVersion among them) travel as an
      // ERROR event, which is what client-go and client-node expect (410 Gone -> re-list).
      if (!(err instanceof LoamError)) this.options.logger.error({ err }, 'watch failed');
      res.write(`${JSON.stringify({ type: 'ERROR', object: statusFromError(err) })}\n`);
    } finally {
      clearTimeout(timer);
      this.watches.delete(abort);
      this.metrics.watchers.dec(resource);
      res.end();
    }
  }

  /**
   * An HTTP/1.1 upgrade: a connect subresource (an Instance's console) becomes a WebSocket once
   * the caller is authorized and its stream is open; anything else, or a refusal, is answered
   * with a Status.
   */
  private async upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const url = new URL(req.url ?? '/', 'https://loam');
    let subject: ResourceRequest | undefined;
    // A client that resets the connection while its stream opens: serve() cleans up.
    socket.on('error', () => socket.destroy());
    try {
      const user = this.certificateUser(req) ?? tokenUser(req.headers.authorization, this.tokenKey);
      if (!user) throw new LoamError('Unauthorized', 'Unauthorized');
      const route = routeRequest(req.method ?? 'GET', url, this.options.kinds);
      if (route.type === 'other' || !isConnectSubresource(route)) {
        throw new LoamError(
          'BadRequest',
          `${url.pathname} cannot be upgraded: only connect subresources can`,
        );
      }
      subject = route;
      authorize(user, route);
      const stream = await openInstanceStream(route, this.resources, this.options.hub?.());
      const log = {
        user: user.name,
        namespace: route.namespace,
        name: route.name,
        subresource: route.subresource,
      };
      this.consoles.serve(req, socket, head, stream, log);
    } catch (err) {
      if (!(err instanceof LoamError))
        this.options.logger.error({ err, path: url.pathname }, 'upgrade failed');
      const status = statusFromError(err, {
        ...(subject ? { resource: subject.kind.plural, group: subject.kind.group } : {}),
        ...(subject?.name ? { name: subject.name } : {}),
      });
      this.options.logger.debug(
        { method: req.method, path: url.pathname, code: status.code },
        'upgrade refused',
      );
      refuseUpgrade(socket, status);
    }
  }

  /**
   * The client certificate's user, read once per connection: parsing the peer certificate on
   * every request costs more than serving a get from the embedded store.
   */
  private certificateUser(req: Http2ServerRequest | IncomingMessage): User | undefined {
    // An HTTP/2 request's socket is a fresh proxy each time; its session is the connection.
    const session = 'stream' in req ? (req.stream as { session?: object } | undefined)?.session : undefined;
    const connection: object = session ?? req.socket;
    if (!this.certificateUsers.has(connection)) {
      this.certificateUsers.set(connection, certificateUser(req.socket as unknown as TLSSocket));
    }
    return this.certificateUsers.get(connection);
  }

  private send(res: Http2ServerResponse, code: number, body: unknown): void {
    res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  }
}

async function readBody(
  req: Http2ServerRequest,
  format: 'json' | 'yaml' = 'json',
  optional = false,
): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBodyBytes) {
      throw new LoamError('RequestEntityTooLarge', 'Request entity too large: limit is 3145728');
    }
    chunks.push(chunk);
  }
  const bytes = Buffer.concat(chunks);
  const contentType = (req.headers['content-type'] ?? '').split(';')[0]?.trim();
  // Typed Go clients (kubectl's create, auth can-i, auth whoami) send built-in kinds as protobuf.
  const protobuf = contentType === protobufContentType;
  const text = protobuf ? '' : bytes.toString('utf8');
  if (protobuf ? bytes.length === 0 : text.trim() === '') {
    if (optional) return undefined;
    throw new LoamError('BadRequest', 'the request body is empty');
  }
  const yaml = format === 'yaml' || contentType === 'application/yaml';
  let body: unknown;
  if (protobuf) {
    body = decodeKubernetesProtobuf(bytes);
  } else {
    try {
      // The yaml library refuses alias expansion past 100 (billion-laughs bodies).
      body = yaml ? YAML.parse(text) : JSON.parse(text);
    } catch (err) {
      throw new LoamError(
        'BadRequest',
        `the request body is not valid ${yaml ? 'YAML' : 'JSON'}: ${(err as Error).message}`,
      );
    }
  }
  if (nestingDepth(body) > maxBodyDepth) {
    throw new LoamError('BadRequest', `the request body nests deeper than ${maxBodyDepth} levels`);
  }
  return body;
}

/** How deeply objects and arrays nest in `value`, measured without recursion. */
function nestingDepth(value: unknown): number {
  let deepest = 0;
  const pending: [unknown, number][] = [[value, 0]];
  for (let next = pending.pop(); next; next = pending.pop()) {
    const [item, depth] = next;
    if (typeof item !== 'object' || item === null) continue;
    deepest = Math.max(deepest, depth + 1);
    if (deepest > maxBodyDepth) break;
    for (const child of Object.values(item)) pending.push([child, depth + 1]);
  }
  return deepest;
}

function parseDryRun(values: string[]): boolean {
  for (const value of values) {
    if (value !== 'All') {
      throw new LoamError(
        'BadRequest',
        `Invalid dryRun value: ${JSON.stringify(value)}: supported values: "All"`,
      );
    }
  }
  return values.length > 0;
}

/**
 * An action's options, as KubeVirt's StopOptions and the like: of them only dryRun is read, from
 * the body (where virtctl --dry-run puts it) as from the query.
 */
function actionOptions(body: unknown, write: WriteOptions): WriteOptions {
  const { dryRun } = (body ?? {}) as { dryRun?: unknown };
  if (dryRun === undefined) return write;
  if (!Array.isArray(dryRun) || !dryRun.every((value) => typeof value === 'string')) {
    throw new LoamError(
      'BadRequest',
      `dryRun: ${JSON.stringify(dryRun)} is not a list of strings, e.g. ["All"]`,
    );
  }
  return { ...write, dryRun: write.dryRun || parseDryRun(dryRun) };
}

const propagationPolicies = ['Orphan', 'Background', 'Foreground'] as const;

/** metav1.DeleteOptions from the body and the query (client-node sends the body, kubectl both). */
function deleteOptions(body: unknown, url: URL, write: WriteOptions): DeleteOptions {
  const options = (body ?? {}) as {
    preconditions?: DeleteOptions['preconditions'];
    propagationPolicy?: string;
    dryRun?: string[];
  };
  const policy = options.propagationPolicy ?? url.searchParams.get('propagationPolicy') ?? undefined;
  if (policy !== undefined && !(propagationPolicies as readonly string[]).includes(policy)) {
    const message = `Unsupported value: ${JSON.stringify(policy)}: supported values: ${propagationPolicies.map((p) => JSON.stringify(p)).join(', ')}`;
    throw new LoamError('Invalid', `DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: ${message}`, {
      causes: [{ field: 'propagationPolicy', reason: 'FieldValueNotSupported', message }],
    });
  }
  return {
    ...(options.preconditions ? { preconditions: options.preconditions } : {}),
    ...(policy ? { propagationPolicy: policy as DeleteOptions['propagationPolicy'] } : {}),
    dryRun: write.dryRun || parseDryRun(options.dryRun ?? []),
  };
}
