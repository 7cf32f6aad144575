import { execFile, execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OPEN_SITE_ADMIN, parseTokens } from "../services/site/session/auth.js";
import { DEFAULT_TIMINGS, type SiteServer } from "../services/site/site-server.js";
import { startTestSite } from "./helpers/site.js";

/**
 * docs/grpcurl.md's "A whole job by hand", run as written: the shell blocks of
 * that section, in order, in one bash, with the real grpcurl and jq against a
 * real site (every admin call, a monitor stream followed, an agent exchange over
 * the bidirectional Connect stream fed through a named pipe).
 */

const run = promisify(execFile);
const GRPCURL = fileURLToPath(new URL("../.cache/bin/grpcurl", import.meta.url));
const DOC = fileURLToPath(new URL("../docs/grpcurl.md", import.meta.url));
const SECTION = "## A whole job by hand";
const TOKEN = "s3cret";

function missingTool(): string | undefined {
  if (!existsSync(GRPCURL)) return `${GRPCURL} is missing (scripts/ensure-tools.sh installs it; npm test runs it)`;
  try {
    execFileSync("jq", ["--version"]);
  } catch {
    return "jq is not installed (apt-get install jq); the walkthrough pipes grpcurl's JSON through it";
  }
  return undefined;
}
const missing = missingTool();
if (missing) console.warn(`test/grpcurl-walkthrough.test.ts: skipped, ${missing}`);

/** The section's sh blocks, in order, but the one that starts the site (the test starts its own). */
async function walkthrough(): Promise<string> {
  const doc = await readFile(DOC, "utf8");
  const start = doc.indexOf(SECTION);
  const end = doc.indexOf("\n## ", start + SECTION.length);
  const blocks = [...doc.slice(start, end).matchAll(/```sh\n([\s\S]*?)```/g)].map((match) => match[1]!);
  return blocks.filter((block) => !/^\S*campfire site/m.test(block) && !/ campfire site\b/.test(block)).join("\n");
}

let site: SiteServer;
let scratch: string;
beforeAll(async () => {
  if (missing) return;
  // The agent here is a person at a prompt: the site's real timings (heartbeat timeout 30 s), not the tests' fast ones.
  site = await startTestSite({ tokens: parseTokens(`${TOKEN}=alice:admin`), timings: DEFAULT_TIMINGS });
  scratch = await mkdtemp(join(tmpdir(), "campfire-grpcurl-walkthrough-"));
});
afterAll(async () => {
  await site?.stop(100);
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

describe.skipIf(missing)("docs/grpcurl.md: a whole job by hand", () => {
  it("runs every admin call, follows the monitor stream and answers a task over Connect", async () => {
    const script = await walkthrough();
    expect(script).toContain("AgentService/Connect");
    const { stdout } = await run("bash", ["-eo", "pipefail", "-c", script], {
      timeout: 60_000,
      env: { ...process.env, PATH: `${dirname(GRPCURL)}:${process.env.PATH}`, SITE: `127.0.0.1:${site.port}`, CAMPFIRE_TOKEN: TOKEN, TMPDIR: scratch },
    });
    const lines = stdout.split("\n");
    // The agent's exchange: welcome (protocol 2), the task, the acknowledgement of its result, the job's bye.
    expect(lines).toEqual(expect.arrayContaining(['{"welcome":2}', '{"task":"hello"}', '{"resultAck":"RESULT_DISPOSITION_ACCEPTED"}', '{"bye":"BYE_REASON_JOB_ENDED"}']));
    // The monitor stream: followed to the end, the last message with its return code.
    const monitored = lines.filter((line) => line.startsWith('{"status":')).map((line) => JSON.parse(line) as { status: string; returnCode?: string });
    expect(monitored.at(-1)).toMatchObject({ status: "RUN_STATUS_FINISHED_COMPLETED", returnCode: "MONITOR_RETURN_CODE_JOB_FINISHED" });
    expect(monitored.length).toBeGreaterThan(1);
    // The downloaded result: the file list, and the agent's answer decoded from its chunks.
    expect(stdout).toMatch(/^grpcurl-agent\/result\.json \d+$/m);
    expect(stdout).toMatch(/^job\/meta\.json \d+$/m);
    expect(lines).toContain('{"return_code":"OK","values":{"answer":"hello back"}}');
    expect(stdout).toContain('"status": "RUN_STATUS_FINISHED_ABORTED"');
    // Both jobs deleted: the site holds none.
    expect(site.jobs.list({ allSubmitters: true, namePrefix: "", idPrefix: "", newest: 0, reverse: false }, OPEN_SITE_ADMIN, () => true)).toEqual([]);
  }, 90_000);
});
