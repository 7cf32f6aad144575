// The clients of the scale baseline (bench/lib/raw-heartbeats.ts): CLIENTS raw
// grpc-js streams to PORT, each on its own connection, each sending a
// heartbeat every HEARTBEAT_MS (first at a random offset, as agents start at
// different times).
import { Client, credentials } from "@grpc/grpc-js";
import { HEARTBEAT_PATH, heartbeat, spreadAddress } from "../lib/raw-heartbeats.js";

const count = Number(process.env.CLIENTS);
const intervalMs = Number(process.env.HEARTBEAT_MS);
const identity = (bytes: Buffer) => bytes;
const timers: NodeJS.Timeout[] = [];
const clients = Array.from({ length: count }, (_, index) => {
  const client = new Client(spreadAddress(index, Number(process.env.PORT)), credentials.createInsecure());
  const call = client.makeBidiStreamRequest(HEARTBEAT_PATH, identity, identity);
  call.on("data", () => undefined);
  call.on("error", () => undefined);
  const first = setTimeout(() => {
    call.write(heartbeat());
    timers.push(setInterval(() => call.write(heartbeat()), intervalMs));
  }, Math.random() * intervalMs);
  timers.push(first);
  return { client, call };
});
console.log("ready");
process.stdin
  .on("end", () => {
    timers.forEach((timer) => clearTimeout(timer));
    for (const { client, call } of clients) {
      call.end();
      client.close();
    }
    process.exit(0);
  })
  .resume();
