import { readFile } from "node:fs/promises";
import { afterEach } from "vitest";
import { DataKind, type AgentTask } from "../../services/agent/index.js";
import type { Trainer } from "../../services/cli/agent-loop.js";
import { decodeSafetensors } from "../../services/shared/safetensors.js";
import { float32Tensor, float32Values } from "../../services/shared/tensor.js";
import { jobDefinition } from "./job-defs.js";
import { hasStatus, JobSite, RunStatus, tempDir, waitForJob } from "./job-site.js";

export const FINISHED = hasStatus(RunStatus.RUN_STATUS_FINISHED_COMPLETED, RunStatus.RUN_STATUS_FINISHED_EXECUTION_EXCEPTION, RunStatus.RUN_STATUS_FAILED_TO_RUN);

/** A one-tensor model "w". */
export const model = (values: number[]) => [float32Tensor("w", [values.length], Float32Array.from(values))];
/** The values of a task's model "w", or [0, 0] when it carries none. */
export const valuesOf = (task: AgentTask) => (task.data.tensors.length ? [...float32Values(task.data.tensors[0]!)] : [0, 0]);
export const readModel = async (path: string) => [...float32Values(decodeSafetensors(await readFile(path)).tensors[0]!)];
export const readLines = async (path: string) => (await readFile(path, "utf8")).trim().split("\n").map((line) => JSON.parse(line));

/**
 * A trainer for workflow tests: "train" adds `shift` to every weight (reporting
 * `steps` as its aggregation weight), "validate" reports accuracy = first weight / 100,
 * "submit_model" returns [shift, shift]; `overrides` replace any task.
 */
export function shiftTrainer(shift: number, steps = 1, overrides: Partial<Record<string, (task: AgentTask) => ReturnType<Trainer>>> = {}): Trainer {
  return (task) => {
    const override = overrides[task.taskName];
    if (override) return override(task);
    if (task.taskName === "validate") return { data: { kind: DataKind.DATA_KIND_METRICS, tensors: [], values: { accuracy: valuesOf(task)[0]! / 100 }, meta: {} } };
    if (task.taskName === "submit_model") return { data: { kind: DataKind.DATA_KIND_WEIGHTS, tensors: model([shift, shift]), values: undefined, meta: {} } };
    return { data: { kind: DataKind.DATA_KIND_WEIGHTS, tensors: model(valuesOf(task).map((value) => value + shift)), values: undefined, meta: { NUM_STEPS_CURRENT_ROUND: steps } } };
  };
}

/** Runs one job of `workflow` per test on a fresh site served by in-process `trainers`; downloads its result. */
export function useWorkflowRuns() {
  let site: JobSite | undefined;
  afterEach(async () => {
    await site?.stop();
    site = undefined;
  });
  return {
    /** The site of the test's latest run. */
    get site(): JobSite | undefined {
      return site;
    },
    async start(): Promise<JobSite> {
      site = await JobSite.start();
      return site;
    },
    async run(workflow: string, args: Record<string, unknown>, trainers: Record<string, Trainer>, files: Record<string, Buffer> = {}) {
      // A test may run several jobs, each on a fresh site.
      await site?.stop();
      site = await JobSite.start();
      for (const [client, trainer] of Object.entries(trainers)) site.serve(client, { trainer });
      await site.connected(...Object.keys(trainers));
      const session = site.session();
      const jobId = await session.submitJobDefinition(jobDefinition({ name: workflow, apps: { app: { server: { workflow, args }, client: {}, files } } }));
      const meta = await waitForJob(session, jobId, FINISHED, 30_000);
      const result = await session.downloadJobResult(jobId, await tempDir());
      return { meta, result, session, jobId };
    },
  };
}
