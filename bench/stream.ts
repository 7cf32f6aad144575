// npm run bench:stream [-- --quick]
// The exchange's own benchmarks (task round trip and throughput) without the
// rest of the suite; writes bench/results/stream.json.
import { fileURLToPath } from "node:url";
import { runSuite } from "./lib/section.js";

const ok = await runSuite(["round-trip", "throughput"], { quick: process.argv.includes("--quick"), out: fileURLToPath(new URL("results/stream.json", import.meta.url)) });
process.exit(ok ? 0 : 1);
