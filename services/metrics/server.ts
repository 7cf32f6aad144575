import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";
import type { TlsKit } from "../security/kit.js";
import type { Logger } from "../shared/logger.js";
import { isLoopbackAddress } from "../site/transport/listen-address.js";

export interface MetricsServerOptions {
  /** host:port to serve /metrics on; port 0 picks one. */
  address: string;
  registry: Registry;
  /**
   * The process's kit. Needed to serve beyond loopback: /metrics is then
   * HTTPS with the kit's certificate, and only callers presenting a
   * certificate of the same project CA (mutual TLS) are answered.
   */
  tls?: TlsKit;
  /** Serve plain HTTP beyond loopback, to anyone who reaches it. */
  insecure?: boolean;
  logger: Logger;
}

/**
 * Serves a registry's metrics at GET /metrics, for Prometheus. The same rule
 * as the site's gRPC port: loopback may be plain HTTP; beyond it, mutual TLS
 * with the project's certificates, or --insecure (warned about at start).
 * What the metrics name (job ids, client names) is the project's business.
 */
export class MetricsServer {
  private constructor(
    private readonly server: Server | HttpsServer,
    readonly port: number,
    readonly tls: boolean,
  ) {}

  static async start(options: MetricsServerOptions): Promise<MetricsServer> {
    const { host, port } = splitAddress(options.address);
    const loopback = isLoopbackAddress(options.address);
    const kit = options.tls?.cert && options.tls.key ? options.tls : undefined;
    if (!loopback && !kit && !options.insecure) {
      throw new Error(
        `refusing to serve metrics on ${options.address} in plain text: they name jobs and clients. Give the process its kit (--tls-dir: /metrics is then served over mutual TLS to holders of the project's certificates), serve them on 127.0.0.1, or pass --insecure if the network itself is protected`,
      );
    }
    const handler = (request: IncomingMessage, response: ServerResponse) => void answer(options.registry, request, response, options.logger);
    const useTls = !loopback && kit !== undefined;
    const server = useTls ? createHttpsServer({ cert: kit.cert, key: kit.key, ca: kit.ca, requestCert: true, rejectUnauthorized: true }, handler) : createHttpServer(handler);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    const bound = (server.address() as AddressInfo).port;
    if (!loopback && !useTls) options.logger.warn({ address: options.address }, "INSECURE: serving metrics beyond loopback in plain text (--insecure)");
    options.logger.info({ address: options.address, port: bound, tls: useTls }, "metrics listening");
    return new MetricsServer(server, bound, useTls);
  }

  /** Serves a renewed certificate from now on (the site's SIGHUP). */
  reload(kit: TlsKit): void {
    if (this.tls && kit.cert && kit.key) (this.server as HttpsServer).setSecureContext({ cert: kit.cert, key: kit.key, ca: kit.ca });
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

async function answer(registry: Registry, request: IncomingMessage, response: ServerResponse, logger: Logger): Promise<void> {
  const path = (request.url ?? "").split("?")[0];
  if (path !== "/metrics") {
    response.writeHead(404, { "content-type": "text/plain" }).end("not found: metrics are at /metrics\n");
    return;
  }
  if (request.method !== "GET" && request.method !== "HEAD") {
    response.writeHead(405, { "content-type": "text/plain", allow: "GET, HEAD" }).end("only GET /metrics\n");
    return;
  }
  try {
    const body = await registry.metrics();
    response.writeHead(200, { "content-type": registry.contentType }).end(request.method === "HEAD" ? undefined : body);
  } catch (error) {
    logger.error({ err: error }, "could not collect metrics");
    response.writeHead(500, { "content-type": "text/plain" }).end("could not collect metrics\n");
  }
}

/** host and port of "host:port" or "[v6]:port". */
function splitAddress(address: string): { host: string; port: number } {
  const match = /^\[?(.*?)\]?:(\d+)$/.exec(address);
  if (!match) throw new Error(`--metrics ${JSON.stringify(address)}: expected host:port, for example 127.0.0.1:9464`);
  return { host: match[1]!, port: Number(match[2]) };
}
