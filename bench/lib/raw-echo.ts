import { Client, credentials, Server, ServerCredentials, type ServerDuplexStream, type ClientDuplexStream } from "@grpc/grpc-js";
import { type Peer, startPeer } from "./peer.js";

/** The baseline: a bidirectional stream that echoes raw bytes, with no protocol of ours on it. */
export const ECHO_PATH = "/bench.Echo/Echo";
const identity = (bytes: Buffer) => bytes;

export async function startEchoServer(address = "127.0.0.1:0"): Promise<{ port: number; stop(): void }> {
  const server = new Server();
  server.register(ECHO_PATH, (call: ServerDuplexStream<Buffer, Buffer>) => {
    call.on("data", (message: Buffer) => call.write(message));
    call.on("end", () => call.end());
  }, identity, identity, "bidi");
  const port = await new Promise<number>((resolve, reject) => server.bindAsync(address, ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))));
  return { port, stop: () => server.forceShutdown() };
}

/** One echo stream: send() resolves with the echo of what it sent (one message in flight per stream). */
export class EchoStream {
  private waiting: { resolve(): void; reject(error: Error): void } | undefined;
  private closed = false;
  private readonly call: ClientDuplexStream<Buffer, Buffer>;

  constructor(client: Client) {
    this.call = client.makeBidiStreamRequest(ECHO_PATH, identity, identity);
    this.call.on("data", () => this.waiting?.resolve());
    // Errors after close() are the peer going away at teardown.
    this.call.on("error", (error: Error) => this.closed || this.waiting?.reject(error));
  }

  send(message: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.call.write(message);
    });
  }

  close(): void {
    this.closed = true;
    this.call.end();
  }
}

export function echoClient(port: number): Client {
  return new Client(`127.0.0.1:${port}`, credentials.createInsecure());
}

/**
 * A client for each of `count` streams: "shared" puts all streams on one HTTP/2
 * connection (grpc-js's default within a process); "own" gives each stream a
 * connection of its own, as Campfire agents have. Close them with closeEchoClients.
 */
export function echoClients(port: number, count: number, connections: "shared" | "own"): Client[] {
  if (connections === "shared") return Array<Client>(count).fill(echoClient(port));
  return Array.from({ length: count }, () => new Client(`127.0.0.1:${port}`, credentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1 }));
}

export function closeEchoClients(clients: Client[]): void {
  new Set(clients).forEach((client) => client.close());
}

/**
 * Echoes per second over one stream per client, each keeping `depth` messages
 * in flight (a new one written as each echo returns): what grpc-js itself can move.
 */
export async function pipelinedEcho(clients: Client[], options: { depth: number; durationMs: number; message: Buffer }): Promise<number> {
  const calls = clients.map((client) => client.makeBidiStreamRequest(ECHO_PATH, identity, identity));
  let echoes = 0;
  const started = performance.now();
  const deadline = started + options.durationMs;
  await Promise.all(
    calls.map(
      (call) =>
        new Promise<void>((resolve, reject) => {
          let inFlight = options.depth;
          call.on("data", () => {
            echoes++;
            if (performance.now() < deadline) call.write(options.message);
            else if (--inFlight === 0) resolve();
          });
          call.on("error", reject);
          for (let index = 0; index < options.depth; index++) call.write(options.message);
        }),
    ),
  );
  const perSecond = echoes / ((performance.now() - started) / 1000);
  calls.forEach((call) => call.end());
  return perSecond;
}

/** The echo server in a process of its own (as Campfire agents are), and a client of it here. */
export async function startRawEcho(): Promise<{ port: number; client: Client; peer: Peer; stop(): Promise<void> }> {
  const peer = await startPeer("echo-server");
  const port = Number(peer.readyLine.split(" ")[1]);
  const client = echoClient(port);
  return {
    port,
    client,
    peer,
    stop: async () => {
      client.close();
      await peer.stop();
    },
  };
}
