// Writes one client's MNIST shard (the same non-IID split examples/mnist/trainer.ts
// trains on) as a safetensors file, for trainers in other languages, such as
// clients/go/cmd/mnist-trainer:
//
//   npx tsx examples/mnist/write-shard.ts --client-index 1 --num-clients 3 --seed 42 --out site-2.safetensors
//
// Tensors: train_images F32 [n, 784] (pixels in [0, 1]), train_labels U8 [n],
// validation_images F32 [m, 784], validation_labels U8 [m].
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { DType } from "../../gen/campfire/common/v1/tensor.js";
import { encodeSafetensors } from "../../services/shared/safetensors.js";
import { float32Tensor, type Tensor } from "../../services/shared/tensor.js";
import { clientData, type Dataset, IMAGE_PIXELS } from "./data.js";

function tensors(prefix: string, data: Dataset): Tensor[] {
  const labels: Tensor = { name: `${prefix}_labels`, dtype: DType.D_TYPE_UINT8, shape: [data.size], data: Buffer.from(data.labels) };
  return [float32Tensor(`${prefix}_images`, [data.size, IMAGE_PIXELS], data.images), labels];
}

const { values } = parseArgs({
  options: { "client-index": { type: "string" }, "num-clients": { type: "string", default: "3" }, seed: { type: "string", default: "42" }, out: { type: "string" } },
});
const index = Number(values["client-index"]);
const clients = Number(values["num-clients"]);
if (!values.out || !Number.isInteger(index) || !Number.isInteger(clients) || index < 0 || index >= clients) {
  console.error("usage: write-shard.ts --client-index <0..n-1> [--num-clients n (3)] [--seed s (42)] --out <file.safetensors>");
  process.exit(2);
}
const { train, validation } = clientData(index, clients, Number(values.seed));
writeFileSync(values.out, encodeSafetensors([...tensors("train", train), ...tensors("validation", validation)]));
console.log(`${values.out}: ${train.size} training and ${validation.size} validation images of client ${index} of ${clients}`);
