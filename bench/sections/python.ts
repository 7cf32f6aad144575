// 8. The Python agent (clients/python, campfire.Agent) against the TypeScript
// agent, each echoing every task from a process of its own to a site of its
// own in this process: task throughput with AGENTS agents each keeping a task
// in flight, and a model sent down to one agent and back (the chunked data
// plane both ways). The Python side needs .cache/python (scripts/ensure-tools.sh).
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { type EchoSite, startEchoSite } from "../lib/campfire.js";
import { makeModel, modelBytes, weights } from "../lib/model.js";
import { MiB } from "../lib/process-stats.js";
import { figure, median, progress, runSection } from "../lib/section.js";
import { ratio, throughput } from "../lib/stats.js";

const AGENTS = 4;
const PYTHON = fileURLToPath(new URL("../../.cache/python/bin/python", import.meta.url));
const PEER = fileURLToPath(new URL("../peers/python-echo-agents.py", import.meta.url));
/** glibc keeps large freed buffers for the next round instead of unmapping them (clients/python/README.md, "Large models"). */
const PYTHON_LARGE_MODEL_ENV = { MALLOC_ARENA_MAX: "1", MALLOC_MMAP_THRESHOLD_: "4294967295", MALLOC_TRIM_THRESHOLD_: "4294967295" };

await runSection("Python agent against the TypeScript agent", async ({ quick }) => {
  if (!existsSync(PYTHON)) throw new Error(`${PYTHON} is missing: run scripts/ensure-tools.sh`);
  const durationMs = quick ? 500 : 4_000;
  const repeats = quick ? 1 : 3;
  const size = quick ? 8 * MiB : 256 * MiB;
  const typescript = await startEchoSite(AGENTS);
  // The Python agents run as clients/python/README.md asks for large models (as the TypeScript ones get the CLI's heap headroom).
  const python = await startEchoSite(AGENTS, { agents: { command: [PYTHON, PEER] }, agentEnv: PYTHON_LARGE_MODEL_ENV });
  const tasksPerSecond = (site: EchoSite, ms = durationMs) => throughput(AGENTS, ms, (worker) => site.task(`bench-${worker}`));

  const model = makeModel(size);
  const bytes = modelBytes(model);
  /** Down to the agent and back up. */
  const megabytesPerSecond = (ms: number) => (2 * bytes) / 1e6 / (ms / 1000);
  const transfer = async (site: EchoSite, tensors = model) => {
    const started = performance.now();
    const outcome = await site.task("bench-0", weights(tensors));
    if (modelBytes(outcome.data?.tensors ?? []) !== modelBytes(tensors)) throw new Error("a result came back short");
    return performance.now() - started;
  };

  // Warm both up: connections, payload channels, JIT, allocators.
  for (const site of [typescript, python]) {
    await tasksPerSecond(site, durationMs / 4);
    await transfer(site, makeModel(quick ? MiB : 4 * MiB));
  }
  const runs: Array<{ pythonTasks: number; typescriptTasks: number; pythonMs: number; typescriptMs: number }> = [];
  // Alternating keeps a burst of load from the machine's other users out of one side only.
  for (let repeat = 0; repeat < repeats; repeat++) {
    const typescriptTasks = await tasksPerSecond(typescript);
    const pythonTasks = await tasksPerSecond(python);
    const typescriptMs = await transfer(typescript);
    const pythonMs = await transfer(python);
    runs.push({ pythonTasks: Math.round(pythonTasks), typescriptTasks: Math.round(typescriptTasks), pythonMs: Math.round(pythonMs), typescriptMs: Math.round(typescriptMs) });
    progress(
      `python ${Math.round(pythonTasks)} tasks/s vs typescript ${Math.round(typescriptTasks)}; ${bytes / MiB} MiB down and up: python ${megabytesPerSecond(pythonMs).toFixed(0)} MB/s vs typescript ${megabytesPerSecond(typescriptMs).toFixed(0)} MB/s`,
    );
  }
  await Promise.all([typescript.stop(), python.stop()]);
  return {
    figures: [
      figure(`tasks per second, ${AGENTS} Python agents`, "/s", median(runs.map((run) => run.pythonTasks)), {
        baseline: { name: `${AGENTS} TypeScript agents`, value: median(runs.map((run) => run.typescriptTasks)) },
        ratios: runs.map((run) => ratio(run.pythonTasks, run.typescriptTasks)),
      }),
      figure(`${bytes / MiB} MiB model down and up, Python agent`, "MB/s", median(runs.map((run) => megabytesPerSecond(run.pythonMs))), {
        baseline: { name: "the TypeScript agent", value: median(runs.map((run) => megabytesPerSecond(run.typescriptMs))) },
        ratios: runs.map((run) => ratio(run.typescriptMs, run.pythonMs)),
        target: { ratioAtLeast: 0.7 },
      }),
    ],
    details: { agents: AGENTS, durationMs, modelMiB: bytes / MiB, runs },
  };
});
