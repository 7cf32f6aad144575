import { Server, ServerCredentials, type ServerDuplexStream } from "@grpc/grpc-js";

/**
 * The baseline of the scale benchmark: idle raw grpc-js streams that exchange
 * a heartbeat-sized message at the agents' heartbeat interval, each client
 * on a connection of its own (bench/peers/raw-heartbeats.ts). A message
 * carries its send time (Date.now(), as a double) in its first 8 bytes.
 */
export const HEARTBEAT_PATH = "/bench.Heartbeats/Beat";
/** About the size of a Heartbeat message (sequence and a Timestamp). */
export const HEARTBEAT_BYTES = 16;
const identity = (bytes: Buffer) => bytes;

/** Serves on 0.0.0.0 (clients dial 127.x.y.z to get a connection each); reports each heartbeat's latency in ms and answers it. */
export async function startHeartbeatServer(onLatency: (ms: number) => void): Promise<{ port: number; streams(): number; stop(): void }> {
  const server = new Server();
  let open = 0;
  server.register(
    HEARTBEAT_PATH,
    (call: ServerDuplexStream<Buffer, Buffer>) => {
      open++;
      call.on("data", (message: Buffer) => {
        onLatency(Date.now() - message.readDoubleLE(0));
        call.write(heartbeat());
      });
      call.on("end", () => call.end());
      call.on("close", () => open--);
      call.on("error", () => undefined);
    },
    identity,
    identity,
    "bidi",
  );
  const port = await new Promise<number>((resolve, reject) => server.bindAsync("0.0.0.0:0", ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))));
  return { port, streams: () => open, stop: () => server.forceShutdown() };
}

export function heartbeat(): Buffer {
  const message = Buffer.alloc(HEARTBEAT_BYTES);
  message.writeDoubleLE(Date.now(), 0);
  return message;
}

/** 127.x.y.z for client `index`: a loopback address of its own, so that grpc-js gives it a connection of its own. */
export function spreadAddress(index: number, port: number): string {
  return `127.${Math.floor(index / 254 / 254) + 1}.${Math.floor(index / 254) % 254}.${(index % 254) + 1}:${port}`;
}
