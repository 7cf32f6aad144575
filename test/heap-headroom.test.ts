import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Session } from "../services/session-client/index.js";
import { encodeSafetensors } from "../services/shared/safetensors.js";
import { float32Tensor } from "../services/shared/tensor.js";
import { CampfireProcess } from "./helpers/cli.js";
import { tempDir, until, waitForJob } from "./helpers/job-site.js";

// --heap-headroom-mb (services/shared/memory.ts tuneHeapGrowth) on a real
// `campfire site` moving models to and from real agent processes: V8's full
// collections, as the site's /metrics counts them, with V8's own heap growth
// (--heap-headroom-mb 0) and with the default headroom, two sites side by side.

const MODEL_MIB = 64;
const AGENTS = ["a", "b", "c"];

/** A trainer that returns the model it was given, plus 1 everywhere, in arrays of its own. */
const TRAINER = `export default function train(task) {
  const tensors = task.data.tensors.map((tensor) => {
    const values = new Float32Array(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength / 4).map((value) => value + 1);
    return { ...tensor, data: new Uint8Array(values.buffer) };
  });
  return { data: { kind: 1, tensors, values: undefined, meta: {} }, takeOwnership: true };
}`;

const cleanups: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

function sample(text: string, name: string, labels: string): number | undefined {
  const line = text.split("\n").find((candidate) => candidate.startsWith(`${name}{${labels}} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}

/** Runs a 3-round FedAvg job of a MODEL_MIB model with the AGENTS on a site started with `siteArgs`; the site's full collections during the job. */
async function fullCollectionsOfAJob(dir: string, siteArgs: string[]): Promise<number> {
  const site = await CampfireProcess.site(["--data-dir", join(dir, `site${siteArgs.join("")}`), "--metrics", "127.0.0.1:0", ...siteArgs]);
  cleanups.push(() => site.process.kill());
  const metricsPort = Number((await site.process.waitForLog((record) => record.msg === "metrics listening")).port);
  const majors = async () => {
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    return sample(text, "nodejs_gc_duration_seconds_count", 'kind="major"') ?? 0;
  };
  const session = new Session({ site: site.address, callTimeoutMs: 60_000 });
  cleanups.push(async () => session.close());
  const agents = AGENTS.map((client) => CampfireProcess.start(["agent", "--site", site.address, "--client", client, "--trainer", join(dir, "trainer.mjs")]));
  for (const agent of agents) cleanups.push(() => agent.kill());
  await until("the agents to connect", async () => (await session.getSystemInfo()).clients.length === AGENTS.length, 20_000);
  const before = await majors();
  const jobId = await session.submitJob(join(dir, "job"));
  const meta = await waitForJob(session, jobId, (current) => current.endTime !== undefined, 120_000);
  expect(meta.endReason).toBe("the workflow completed");
  const counted = (await majors()) - before;
  await Promise.all(agents.map((agent) => agent.kill()));
  await site.process.kill();
  return counted;
}

describe("campfire site --heap-headroom-mb", () => {
  it("spares the site most of V8's full collections while it moves models in chunks", async () => {
    const dir = await tempDir();
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    await writeFile(join(dir, "trainer.mjs"), TRAINER);
    const elements = (MODEL_MIB * 1024 * 1024) / 4 / 4;
    const model = Array.from({ length: 4 }, (_, layer) => float32Tensor(`layer${layer}`, [elements], new Float32Array(elements).fill(layer)));
    await mkdir(join(dir, "job", "app", "config"), { recursive: true });
    await mkdir(join(dir, "job", "app", "custom"), { recursive: true });
    await writeFile(join(dir, "job", "meta.json"), JSON.stringify({ name: "headroom", deploy_map: { app: ["@ALL"] }, min_clients: AGENTS.length }));
    await writeFile(join(dir, "job", "app", "config", "config_fed_server.json"), JSON.stringify({ workflow: "fedavg", args: { num_rounds: 3, initial_model: "custom/initial.safetensors" } }));
    await writeFile(join(dir, "job", "app", "config", "config_fed_client.json"), "{}");
    await writeFile(join(dir, "job", "app", "custom", "initial.safetensors"), encodeSafetensors(model));

    // Side by side, so that whatever else loads the machine loads both alike: V8's full collections depend on how
    // fast its helper threads mark, not only on what is allocated.
    const [untuned, tuned] = await Promise.all([fullCollectionsOfAJob(dir, ["--heap-headroom-mb", "0"]), fullCollectionsOfAJob(dir, [])]);
    console.log(`full collections at the site during a 3-round FedAvg job of ${MODEL_MIB} MiB with ${AGENTS.length} agents: ${untuned} with V8's own heap growth, ${tuned} with the default headroom`);
    // Quiet machine: 56-60 against 12-15. In CI's full run, with other suites' processes on the same 2 cores, V8's
    // helper threads mark slowly enough that the untuned site starts fewer (15 against 8 once), hence 1.5x, not 2x.
    expect(untuned).toBeGreaterThanOrEqual(12);
    expect(tuned * 1.5).toBeLessThanOrEqual(untuned);
  }, 240_000);
});
