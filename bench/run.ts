// npm run bench [-- --quick] [-- --only=round-trip,throughput]
// Every benchmark of bench/sections, each beside its baseline measured in the
// same run; prints a table and writes bench/results/latest.json.
import { fileURLToPath } from "node:url";
import { runSuite } from "./lib/section.js";

export const SECTIONS = ["round-trip", "throughput", "transfer", "aggregation", "scale", "recovery"];

const only = process.argv.find((argument) => argument.startsWith("--only="))?.slice("--only=".length).split(",");
const ok = await runSuite(only ?? SECTIONS, { quick: process.argv.includes("--quick"), out: fileURLToPath(new URL("results/latest.json", import.meta.url)) });
process.exit(ok ? 0 : 1);
