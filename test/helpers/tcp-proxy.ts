import { createServer, type Server, Socket } from "node:net";

/**
 * A loopback TCP proxy in front of a site, to cut connections (both sockets
 * destroyed, as when a network drops) or blackhole them (bytes silently
 * swallowed, as when a peer hangs or a route dies without a reset).
 */
export class TcpProxy {
  private readonly pairs = new Set<[Socket, Socket]>();
  private blackholed = false;
  private tripwire: { remaining: number; fire(): void } | undefined;

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(targetPort: number): Promise<TcpProxy> {
    let proxy: TcpProxy | undefined;
    const server = createServer((client) => {
      const upstream = new Socket();
      upstream.connect(targetPort, "127.0.0.1");
      const pair: [Socket, Socket] = [client, upstream];
      proxy!.pairs.add(pair);
      const forward = (from: Socket, to: Socket) =>
        from.on("data", (chunk: Buffer) => {
          if (proxy!.blackholed) return;
          to.write(chunk);
          if (from === client) proxy!.countSent(chunk.length);
        });
      forward(client, upstream);
      forward(upstream, client);
      const close = () => {
        client.destroy();
        upstream.destroy();
        proxy!.pairs.delete(pair);
      };
      client.on("close", close).on("error", close);
      upstream.on("close", close).on("error", close);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    proxy = new TcpProxy(server, typeof address === "object" && address ? address.port : 0);
    return proxy;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Destroys every open connection; new ones are forwarded normally. */
  cut(): void {
    this.blackholed = false;
    for (const [client, upstream] of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
  }

  /** Cuts every connection (as cut()) once `bytes` more have gone from clients to the site, counted over all connections. */
  cutAfter(bytes: number): Promise<void> {
    return new Promise((resolve) => {
      this.tripwire = {
        remaining: bytes,
        fire: () => {
          this.tripwire = undefined;
          this.cut();
          resolve();
        },
      };
    });
  }

  private countSent(bytes: number): void {
    if (!this.tripwire) return;
    this.tripwire.remaining -= bytes;
    if (this.tripwire.remaining <= 0) this.tripwire.fire();
  }

  /** Swallows all bytes in both directions until cut() or restore(). */
  blackhole(): void {
    this.blackholed = true;
  }

  restore(): void {
    this.blackholed = false;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
