// The trainer of the large-model bench (`campfire agent --trainer`): "trains"
// by making a new model, every weight of the task's model halved plus 0.25, in
// arrays of its own, as a real trainer's step leaves new weights beside the
// ones it was given. It hands them over with takeOwnership: it never touches
// them again, so the agent may upload them without a copy.
import type { AgentTask } from "../../services/agent/index.js";
import { DataKind, float32Tensor, float32Values } from "../../services/agent/index.js";
import type { TrainerResult } from "../../services/cli/agent-loop.js";

export default function train(task: AgentTask): TrainerResult {
  const tensors = task.data.tensors.map((tensor) => {
    const values = float32Values(tensor);
    const next = new Float32Array(values.length);
    for (let index = 0; index < values.length; index++) next[index] = values[index]! * 0.5 + 0.25;
    return float32Tensor(tensor.name, tensor.shape, next);
  });
  return { data: { kind: DataKind.DATA_KIND_WEIGHTS, tensors, values: undefined, meta: { NUM_STEPS_CURRENT_ROUND: 1 } }, takeOwnership: true };
}
