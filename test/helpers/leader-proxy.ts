import { credentials, Metadata } from "@grpc/grpc-js";
import { createServer, type Server, Socket } from "node:net";
import { HealthCheckResponse_ServingStatus, HealthClient } from "../../gen/grpc/health/v1/health.js";

const AGENT_SERVICE = "campfire.agent.v1.AgentService";

/**
 * One address in front of site replicas, as a Kubernetes Service with a
 * readiness probe on the agent service: it asks each replica's grpc.health.v1
 * every `pollMs` and sends each new connection to the one whose agent service
 * is SERVING (the leader). Connections already open stay where they are, as
 * kube-proxy leaves them: a dead leader's close them, a frozen one's go silent
 * until the agent's heartbeat timeout.
 */
export class LeaderProxy {
  private readonly sockets = new Set<Socket>();
  private readonly health = new Map<number, HealthClient>();
  private leaderPort: number | undefined;
  private readonly waiters = new Set<() => void>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(
    private readonly server: Server,
    readonly port: number,
    private ports: number[],
    private readonly pollMs: number,
  ) {}

  static async start(ports: number[], pollMs = 200): Promise<LeaderProxy> {
    let proxy: LeaderProxy | undefined;
    const server = createServer((client) => void proxy!.route(client));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    proxy = new LeaderProxy(server, typeof address === "object" && address ? address.port : 0, ports, pollMs);
    proxy.poll();
    return proxy;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** The replica port that serves agents now, if any. */
  get leader(): number | undefined {
    return this.leaderPort;
  }

  /** Replaces the replicas behind the proxy (a replica restarted on a new port). */
  setPorts(ports: number[]): void {
    for (const [port, client] of this.health) if (!ports.includes(port)) (client.close(), this.health.delete(port));
    this.ports = ports;
  }

  /** Resolves once a replica other than `not` serves agents (within `timeoutMs`), with its port. */
  async leaderOtherThan(not: number | undefined, timeoutMs = 30_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (this.leaderPort === undefined || this.leaderPort === not) {
      if (Date.now() > deadline) throw new Error(`no replica other than ${String(not)} served agents within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 100);
        this.waiters.add(() => (clearTimeout(timer), resolve()));
      });
    }
    return this.leaderPort;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    for (const socket of this.sockets) socket.destroy();
    for (const client of this.health.values()) client.close();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async route(client: Socket): Promise<void> {
    this.sockets.add(client);
    client.on("close", () => this.sockets.delete(client)).on("error", () => client.destroy());
    const target = await this.leaderOtherThan(undefined, 5_000).catch(() => undefined);
    if (target === undefined || client.destroyed) return void client.destroy();
    const upstream = new Socket();
    this.sockets.add(upstream);
    upstream.connect(target, "127.0.0.1");
    client.pipe(upstream);
    upstream.pipe(client);
    const close = () => {
      client.destroy();
      upstream.destroy();
      this.sockets.delete(upstream);
    };
    client.on("close", close);
    upstream.on("close", close).on("error", close);
  }

  private poll(): void {
    if (this.closed) return;
    void Promise.all(this.ports.map(async (port) => ((await this.serving(port)) ? port : undefined))).then((serving) => {
      this.leaderPort = serving.find((port) => port !== undefined);
      if (this.leaderPort !== undefined) for (const wake of [...this.waiters]) (this.waiters.delete(wake), wake());
      if (!this.closed) this.timer = setTimeout(() => this.poll(), this.pollMs);
    });
  }

  private serving(port: number): Promise<boolean> {
    let client = this.health.get(port);
    if (!client) this.health.set(port, (client = new HealthClient(`127.0.0.1:${port}`, credentials.createInsecure())));
    return new Promise((resolve) =>
      client.check({ service: AGENT_SERVICE }, new Metadata(), { deadline: Date.now() + Math.max(300, this.pollMs) }, (error, response) =>
        resolve(!error && response.status === HealthCheckResponse_ServingStatus.SERVING),
      ),
    );
  }
}
