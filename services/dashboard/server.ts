import { createReadStream } from "node:fs";
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import { X509Certificate } from "node:crypto";
import { Metadata, status as Status } from "@grpc/grpc-js";
import type { Peer } from "../security/site-trust.js";
import type { Logger } from "../shared/logger.js";
import { InvalidArgument } from "../site/jobs/errors.js";
import { AdminCall, type AdminGate } from "../site/session/admin-call.js";
import { isLoopbackAddress } from "../site/transport/listen-address.js";
import { statusOf } from "../site/transport/grpc-status.js";
import { liveFeed } from "./live.js";
import { jobView, overview, type SiteView } from "./views.js";

export interface DashboardOptions {
  /** host:port to serve on. Beyond loopback only over HTTPS (a site with TLS) unless `insecure`. */
  address: string;
  insecure?: boolean;
}

const require = createRequire(import.meta.url);
const ASSETS: Record<string, { path: string; type: string }> = {
  "/": { path: new URL("assets/index.html", import.meta.url).pathname, type: "text/html; charset=utf-8" },
  "/assets/app.js": { path: new URL("assets/app.js", import.meta.url).pathname, type: "text/javascript; charset=utf-8" },
  "/assets/style.css": { path: new URL("assets/style.css", import.meta.url).pathname, type: "text/css; charset=utf-8" },
  "/assets/uplot.js": { path: require.resolve("uplot/dist/uPlot.iife.min.js"), type: "text/javascript; charset=utf-8" },
  "/assets/uplot.css": { path: require.resolve("uplot/dist/uPlot.min.css"), type: "text/css; charset=utf-8" },
};

/** Pages may load only this origin's scripts and styles, and nobody may frame them. */
const SECURITY_HEADERS = {
  "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
};

/** The largest request body taken (an abort's reason). */
const MAX_BODY_BYTES = 4096;

/** Admin API status codes as HTTP status codes: the one table. */
const HTTP_STATUS: Partial<Record<Status, number>> = {
  [Status.UNAUTHENTICATED]: 401,
  [Status.PERMISSION_DENIED]: 403,
  [Status.NOT_FOUND]: 404,
  [Status.INVALID_ARGUMENT]: 400,
  [Status.FAILED_PRECONDITION]: 409,
  [Status.UNAVAILABLE]: 503,
};

/**
 * The web dashboard, served from the site's own process: static pages, a JSON
 * API and a live NDJSON stream. Every API request is an admin call like the
 * gRPC ones: authenticated (a bearer token, or an admin's client certificate
 * over HTTPS), authorized by role and scope, and written to the audit log.
 */
export class Dashboard {
  private constructor(
    private readonly server: Server,
    readonly port: number,
    readonly url: string,
  ) {}

  static async start(options: DashboardOptions, site: SiteView, gate: AdminGate, logger: Logger): Promise<Dashboard> {
    const { host, port } = splitAddress(options.address);
    const trust = site.trust;
    if (!trust && !isLoopbackAddress(options.address)) {
      if (!options.insecure) {
        throw new Error(`refusing to serve the dashboard on ${options.address} without TLS: admins' tokens would cross the network in clear. Give the site its kit (--tls-dir), serve on 127.0.0.1, or pass --insecure`);
      }
      logger.warn({ address: options.address }, "INSECURE: dashboard served beyond loopback without TLS (--insecure)");
    }
    const handler = (request: IncomingMessage, response: ServerResponse) => void handle(request, response, site, gate, logger);
    const server = trust ? createHttpsServer({ ...trust.pem, requestCert: true, rejectUnauthorized: false }, handler) : createHttpServer(handler);
    if (trust) trust.onReload(() => (server as ReturnType<typeof createHttpsServer>).setSecureContext({ ...trust.pem }));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => resolve());
    });
    const bound = (server.address() as AddressInfo).port;
    const url = `${trust ? "https" : "http"}://${host.includes(":") ? `[${host}]` : host}:${bound}/`;
    logger.info({ url }, "dashboard listening");
    return new Dashboard(server, bound, url);
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

async function handle(request: IncomingMessage, response: ServerResponse, site: SiteView, gate: AdminGate, logger: Logger): Promise<void> {
  const url = new URL(request.url ?? "/", "http://dashboard");
  const asset = request.method === "GET" ? ASSETS[url.pathname] : undefined;
  if (asset) {
    response.writeHead(200, { ...SECURITY_HEADERS, "content-type": asset.type });
    createReadStream(asset.path).on("error", () => response.destroy()).pipe(response);
    return;
  }
  const route = routeOf(request.method ?? "", url.pathname);
  if (!route) return reply(response, 404, { error: `no such page: ${request.method} ${url.pathname}` });
  const call = new AdminCall(gate, route.action, peerOf(request));
  try {
    const metadata = new Metadata();
    if (request.headers.authorization) metadata.set("authorization", request.headers.authorization);
    call.authenticate(metadata);
    if (route.action === "Dashboard.Live") {
      const jobId = url.searchParams.get("job") ?? undefined;
      // Checked once here, as a gRPC stream is; each message re-reads only what the caller may view.
      if (jobId) await jobView(site, call, jobId);
      else overview(site, call);
      await call.allowed();
      return liveFeed(request, response, { site, call, jobId, headers: SECURITY_HEADERS });
    }
    const body = await route.run(site, call, await readBody(request));
    await call.allowed();
    reply(response, 200, body);
  } catch (error) {
    await call.refused(error);
    const code = statusOf(error);
    if (code === Status.INTERNAL) logger.error({ err: error, action: route.action }, "dashboard request failed");
    reply(response, HTTP_STATUS[code] ?? 500, { error: error instanceof Error ? error.message : String(error) });
  }
}

interface Route {
  action: string;
  run(site: SiteView, call: AdminCall, body: string): unknown;
}

function routeOf(method: string, path: string): Route | undefined {
  if (method === "GET" && path === "/api/overview") return { action: "Dashboard.Overview", run: (site, call) => overview(site, call) };
  if (method === "GET" && path === "/api/live") return { action: "Dashboard.Live", run: () => undefined };
  const job = /^\/api\/jobs\/([^/]+)(\/abort)?$/.exec(path);
  if (!job) return undefined;
  const jobId = decodeURIComponent(job[1]!);
  if (method === "GET" && !job[2]) return { action: "Dashboard.Job", run: (site, call) => jobView(site, call, jobId) };
  if (method === "POST" && job[2]) {
    return {
      action: "Dashboard.AbortJob",
      async run(site, call, body) {
        call.require("manage", jobId);
        const reason = body ? String((JSON.parse(body) as { reason?: unknown }).reason ?? "") : "";
        return { status: await site.jobs.abort(jobId, call.caller, reason.slice(0, 500)) };
      },
    };
  }
  return undefined;
}

function readBody(request: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let body = "";
    request.setEncoding("utf8");
    request.on("data", (chunk: string) => {
      body += chunk;
      if (body.length > MAX_BODY_BYTES) {
        reject(new InvalidArgument(`the request body is over ${MAX_BODY_BYTES} bytes`));
        request.destroy();
      }
    });
    request.on("end", () => resolve(body));
    request.on("error", reject);
  });
}

function reply(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { ...SECURITY_HEADERS, "content-type": "application/json; charset=utf-8" });
  response.end(JSON.stringify(body));
}

/** Who is calling, as the admin gate knows peers: over HTTPS with the certificate the handshake verified. */
function peerOf(request: IncomingMessage): Peer {
  const socket = request.socket as TLSSocket;
  const address = `${socket.remoteAddress}:${socket.remotePort}`;
  if (!socket.encrypted) return { address, tls: false };
  const raw = socket.getPeerCertificate()?.raw;
  if (socket.authorized && raw) return { address, tls: true, certificate: new X509Certificate(raw) };
  return { address, tls: true, certificateProblem: raw ? String(socket.authorizationError ?? "not verified") : "no client certificate" };
}

function splitAddress(address: string): { host: string; port: number } {
  const match = /^\[?([^\]]*?)\]?:(\d+)$/.exec(address);
  if (!match) throw new Error(`the dashboard address must read host:port, got ${JSON.stringify(address)}`);
  return { host: match[1]!, port: Number(match[2]) };
}
