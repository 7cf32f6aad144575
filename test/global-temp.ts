import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * One temporary folder for the whole run, removed at its end: the tests'
 * folders, and those of every process they start (sites, agents, clients),
 * go under it through TMPDIR, so a test that forgets its own clean-up (or is
 * killed before it) leaves nothing behind. Set `CAMPFIRE_KEEP_TEST_TMP=1` to
 * keep it for a look after a failure; its path is printed.
 */
export default function setup(): () => void {
  const root = mkdtempSync(join(tmpdir(), "campfire-tests-"));
  // As /tmp is: the PostgreSQL tests run initdb as the postgres user inside it.
  chmodSync(root, 0o1777);
  process.env.TMPDIR = root;
  return () => {
    if (process.env.CAMPFIRE_KEEP_TEST_TMP === "1") return console.log(`kept the tests' temporary folder: ${root}`);
    rmSync(root, { recursive: true, force: true });
  };
}
