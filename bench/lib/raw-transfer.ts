import { once } from "node:events";
import { createServer, type Server as NetServer, type Socket } from "node:net";
import { Server, ServerCredentials, type ServerReadableStream, type ServerWritableStream, type sendUnaryData } from "@grpc/grpc-js";
import { ChunkAssembler, chunksOf } from "../../services/shared/payload.js";

/**
 * The baselines of the model transfer: the same bytes moved without Campfire,
 * by raw grpc-js streams of 1 MiB chunks and by plain TCP. Each client
 * downloads `model` whole, then uploads it back; the server assembles every
 * upload into one buffer, as the site does. Clients: bench/peers/raw-transfer.ts.
 */
export const DOWNLOAD_PATH = "/bench.Transfer/Download";
export const UPLOAD_PATH = "/bench.Transfer/Upload";
const identity = (bytes: Buffer) => bytes;
/** Room for a 1 MiB chunk and grpc-js's framing. */
export const TRANSFER_MESSAGE_LIMIT = 2 * 1024 * 1024;

export async function startGrpcTransferServer(model: Buffer): Promise<{ port: number; stop(): void }> {
  const server = new Server({ "grpc.max_receive_message_length": TRANSFER_MESSAGE_LIMIT, "grpc.max_send_message_length": TRANSFER_MESSAGE_LIMIT });
  server.register(
    DOWNLOAD_PATH,
    async (call: ServerWritableStream<Buffer, Buffer>) => {
      for (const chunk of chunksOf(model)) if (!call.write(chunk)) await once(call, "drain");
      call.end();
    },
    identity,
    identity,
    "serverStream",
  );
  server.register(
    UPLOAD_PATH,
    (call: ServerReadableStream<Buffer, Buffer>, callback: sendUnaryData<Buffer>) => {
      const assembler = new ChunkAssembler(model.length);
      call.on("data", (chunk: Buffer) => assembler.add(chunk));
      call.on("end", () => {
        assembler.finish();
        callback(null, Buffer.alloc(1));
      });
    },
    identity,
    identity,
    "clientStream",
  );
  const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))));
  return { port, stop: () => server.forceShutdown() };
}

/** Plain TCP: the server writes the model to each connection, then reads it back whole and answers one byte. */
export async function startTcpTransferServer(model: Buffer): Promise<{ port: number; stop(): void }> {
  const server: NetServer = createServer((socket: Socket) => {
    const received = Buffer.allocUnsafe(model.length);
    let offset = 0;
    socket.on("data", (bytes: Buffer) => {
      bytes.copy(received, offset);
      offset += bytes.length;
      if (offset === model.length) socket.end(Buffer.from([1]));
    });
    socket.on("error", () => socket.destroy());
    socket.write(model);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { port: (server.address() as { port: number }).port, stop: () => server.close() };
}
