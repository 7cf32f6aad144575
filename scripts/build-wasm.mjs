// Assembles the WebAssembly text under services/ (services/shared/float32-kernels/kernels.wat) into the .wasm
// beside it, which is committed so that neither the site nor its package needs an assembler at run time.
// `--check` assembles into memory and fails when the committed .wasm differs (part of `npm run check`).
import { readFileSync, writeFileSync } from "node:fs";
import wabt from "wabt";

const SOURCES = ["services/shared/float32-kernels/kernels.wat"];
const check = process.argv.includes("--check");
const assembler = await wabt();
let drifted = false;
for (const source of SOURCES) {
  const target = source.replace(/\.wat$/, ".wasm");
  const module = assembler.parseWat(source, readFileSync(source, "utf8"));
  module.validate();
  const { buffer } = module.toBinary({});
  module.destroy();
  if (!check) {
    writeFileSync(target, buffer);
    continue;
  }
  let committed;
  try {
    committed = readFileSync(target);
  } catch {
    committed = undefined;
  }
  if (!committed?.equals(Buffer.from(buffer))) {
    console.error(`${target} differs from what ${source} assembles to: run 'npm run gen' and commit the result.`);
    drifted = true;
  }
}
if (drifted) process.exit(1);
if (check) console.log("the .wasm files match their .wat sources");
