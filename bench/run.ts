// npm run bench [-- --quick] [--only=round-trip,throughput] [--out=file.json]
// Every benchmark of bench/sections, each beside its baseline measured in the
// same run; prints a table and writes bench/results/latest.json (or --out).
import { fileURLToPath } from "node:url";
import { runSuite, SECTIONS } from "./lib/section.js";

const option = (name: string) => process.argv.find((argument) => argument.startsWith(`--${name}=`))?.slice(name.length + 3);
const ok = await runSuite(option("only")?.split(",") ?? SECTIONS, {
  quick: process.argv.includes("--quick"),
  out: option("out") ?? fileURLToPath(new URL("results/latest.json", import.meta.url)),
});
process.exit(ok ? 0 : 1);
