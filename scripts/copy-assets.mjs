// Part of `npm run build`: copies the files under services/ that tsc does not compile (a web
// page's HTML, CSS and browser JavaScript, read at run time beside their module) into dist/services/,
// so the installed package and the image find them where the sources do.
import { cpSync, statSync } from "node:fs";

const compiledOrDocs = (path) => path.endsWith(".ts") || path.endsWith(".md");
cpSync("services", "dist/services", { recursive: true, filter: (path) => statSync(path).isDirectory() || !compiledOrDocs(path) });
