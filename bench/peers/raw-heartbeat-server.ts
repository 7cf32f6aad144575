// The scale baseline's server (bench/lib/raw-heartbeats.ts) in a process of
// its own, so that its RSS is its own. "measure <streams> <heartbeat ms>
// <window ms>" waits for that many streams, then prints "level <json>".
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { measureLevel } from "../lib/heartbeat-levels.js";
import { settledRssBytes } from "../lib/process-stats.js";
import { startHeartbeatServer } from "../lib/raw-heartbeats.js";

const latencies: number[] = [];
const server = await startHeartbeatServer((ms) => latencies.push(ms));
const baseRss = settledRssBytes();
console.log(`ready ${server.port}`);
createInterface({ input: process.stdin })
  .on("line", async (line) => {
    const [command, streams, heartbeatMs, windowMs] = line.split(" ").map((word, index) => (index ? Number(word) : word)) as [string, number, number, number];
    if (command !== "measure") return;
    while (server.streams() < streams) await sleep(50);
    console.log(`level ${JSON.stringify(await measureLevel(streams, baseRss, latencies, heartbeatMs, windowMs))}`);
  })
  .on("close", () => {
    server.stop();
    process.exit(0);
  });
