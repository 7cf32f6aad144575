import { broadcastWorkflow } from "./broadcast.js";
import { crossSiteEvalWorkflow } from "./cross-site-eval.js";
import { cyclicWorkflow } from "./cyclic.js";
import { fedAvgWorkflow } from "./fedavg.js";
import { secureFedAvgWorkflow } from "./secure-fedavg.js";
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
  return new WorkflowRegistry([broadcastWorkflow, fedAvgWorkflow, cyclicWorkflow, crossSiteEvalWorkflow, secureFedAvgWorkflow]);
}
