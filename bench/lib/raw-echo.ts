import { Client, credentials, Server, ServerCredentials, type ServerDuplexStream, type ClientDuplexStream } from "@grpc/grpc-js";

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
