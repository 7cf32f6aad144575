import type { z } from "zod";
import { broadcastWorkflow } from "./broadcast.js";
import { crossSiteEvalWorkflow } from "./cross-site-eval.js";
import { cyclicWorkflow } from "./cyclic.js";
import { fedAvgWorkflow } from "./fedavg.js";
import type { Workflow } from "./workflow.js";

/** The workflows a site knows, by the name config_fed_server.json gives ("workflow": "<name>"). */
export class WorkflowRegistry {
  private readonly byName = new Map<string, Workflow>();

  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- each workflow has its own argument type
  constructor(workflows: Iterable<Workflow<any>>) {
    for (const workflow of workflows) {
      if (this.byName.has(workflow.name)) throw new Error(`two workflows are named ${JSON.stringify(workflow.name)}`);
      this.byName.set(workflow.name, workflow as Workflow);
    }
  }

  get(name: string): Workflow | undefined {
    return this.byName.get(name);
  }

  names(): string[] {
    return [...this.byName.keys()].sort();
  }
}

/** The workflows every site has. */
export function builtinWorkflows(): WorkflowRegistry {
  return new WorkflowRegistry([broadcastWorkflow, fedAvgWorkflow, cyclicWorkflow, crossSiteEvalWorkflow]);
}

/**
 * Parses a workflow's arguments with `schema`. Throws an Error whose message
 * names the first bad field and its value, as validateArgs must.
 */
export function parseArgs<T>(schema: z.ZodType<T>, raw: Record<string, unknown>): T {
  const result = schema.safeParse(raw);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const path = issue.path.map(String);
  if (issue.code === "unrecognized_keys") return fail([...path, issue.keys[0]].join(".") + ": is not an argument of this workflow");
  const field = path.join(".");
  let value: unknown = raw;
  for (const key of path) value = value !== null && typeof value === "object" ? (value as Record<string, unknown>)[key] : undefined;
  return fail(`${field}: ${issue.message}, got ${value === undefined ? "nothing" : JSON.stringify(value)}`);
}

function fail(message: string): never {
  throw new Error(message);
}
