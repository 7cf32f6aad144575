// The trainer of the large-model bench (`campfire agent --trainer`): trivial
// training, one pass over the weights. It updates the task's model in place
// (every weight halved plus 0.25), as an optimizer step updates parameters,
// and hands the tensors back with takeOwnership: no copy of the model is made
// on either side of the trainer, and the agent reuses the memory for the next
// round's download. (A trainer that makes new arrays instead costs each agent
// another model of memory and its page faults: about 1 s of CPU per GiB.)
import type { AgentTask } from "../../services/agent/index.js";
import { DataKind, float32Tensor, float32Values } from "../../services/agent/index.js";
import type { TrainerResult } from "../../services/cli/agent-loop.js";

export default function train(task: AgentTask): TrainerResult {
  const tensors = task.data.tensors.map((tensor) => {
    const values = float32Values(tensor);
    for (let index = 0; index < values.length; index++) values[index] = values[index]! * 0.5 + 0.25;
    return float32Tensor(tensor.name, tensor.shape, values);
  });
  return { data: { kind: DataKind.DATA_KIND_WEIGHTS, tensors, values: undefined, meta: { NUM_STEPS_CURRENT_ROUND: 1 } }, takeOwnership: true };
}
