// The clients of the model-transfer baselines (bench/lib/raw-transfer.ts), in
// their own process as Campfire agents are. On "go <grpc|tcp> <port> <bytes>",
// CLIENTS clients at once each download <bytes> whole and upload them back,
// then it prints "done". Commands: "reset-peak", "peak-rss".
import { once } from "node:events";
import { connect } from "node:net";
import { createInterface } from "node:readline";
import { Client, credentials } from "@grpc/grpc-js";
import { ChunkAssembler, chunksOf } from "../../services/shared/payload.js";
import { DOWNLOAD_PATH, TRANSFER_MESSAGE_LIMIT, UPLOAD_PATH } from "../lib/raw-transfer.js";
import { peakRssBytes, resetPeakRss } from "../lib/process-stats.js";
import { DEFAULT_HEAP_HEADROOM_MB, tuneHeapGrowth } from "../../services/shared/memory.js";

// The same V8 tuning as the campfire agent processes the baseline stands for (services/shared/memory.ts).
tuneHeapGrowth(DEFAULT_HEAP_HEADROOM_MB * 1024 * 1024);

const clients = Number(process.env.CLIENTS ?? 4);
const identity = (bytes: Buffer) => bytes;

async function overGrpc(port: number, bytes: number): Promise<void> {
  // A channel of its own per client, as each agent has its own payload connection.
  const client = new Client(`127.0.0.1:${port}`, credentials.createInsecure(), {
    "grpc.max_receive_message_length": TRANSFER_MESSAGE_LIMIT,
    "grpc.max_send_message_length": TRANSFER_MESSAGE_LIMIT,
    "grpc.use_local_subchannel_pool": 1,
  });
  const assembler = new ChunkAssembler(bytes);
  for await (const chunk of client.makeServerStreamRequest(DOWNLOAD_PATH, identity, identity, Buffer.alloc(0))) assembler.add(chunk as Buffer);
  const model = (assembler.finish() as { bytes: Buffer }).bytes;
  await new Promise<void>((resolve, reject) => {
    const call = client.makeClientStreamRequest(UPLOAD_PATH, identity, identity, (error) => (error ? reject(error) : resolve()));
    void (async () => {
      for (const chunk of chunksOf(model)) if (!call.write(chunk)) await once(call, "drain");
      call.end();
    })();
  });
  client.close();
}

async function overTcp(port: number, bytes: number): Promise<void> {
  const socket = connect(port, "127.0.0.1");
  const model = Buffer.allocUnsafe(bytes);
  let offset = 0;
  const acknowledged = new Promise<void>((resolve, reject) => {
    socket.on("error", reject);
    socket.on("data", (data: Buffer) => {
      if (offset === bytes) return resolve();
      data.copy(model, offset);
      offset += data.length;
      if (offset === bytes) socket.write(model);
    });
  });
  await acknowledged;
  socket.destroy();
}

createInterface({ input: process.stdin }).on("line", async (line) => {
  const [command, mode, port, bytes] = line.split(" ");
  if (command === "reset-peak") return resetPeakRss();
  if (command === "peak-rss") return console.log(`peak-rss ${peakRssBytes()}`);
  if (command !== "go") return;
  const transfer = mode === "tcp" ? overTcp : overGrpc;
  await Promise.all(Array.from({ length: clients }, () => transfer(Number(port), Number(bytes))));
  console.log("done");
}).on("close", () => process.exit(0));
console.log("ready");
