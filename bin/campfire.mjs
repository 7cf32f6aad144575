#!/usr/bin/env node
// The `campfire` command in a checkout: runs the TypeScript sources through tsx, so no build step is needed.
// The installed package's `campfire` is the compiled dist/services/cli/main.js (package.json "bin").
import { register } from "tsx/esm/api";

register();
await import("../services/cli/main.ts");
