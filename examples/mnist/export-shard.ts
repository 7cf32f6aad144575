// Writes one client's shard of the MNIST example data as a safetensors file,
// for trainers in other languages (clients/python/examples/mnist_agent.py):
//
//   node --import tsx examples/mnist/export-shard.ts --client-index 0 --num-clients 3 --seed 42 --out shard.safetensors
//
// The same shard the TypeScript trainer holds for those settings (data.ts:
// clientData): tensors train_images [n, 784] float32 in [0, 1], train_labels
// [n] uint8, validation_images, validation_labels.
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { DType, type Tensor } from "../../services/shared/tensor.js";
import { encodeSafetensors } from "../../services/shared/safetensors.js";
import { clientData, type Dataset, IMAGE_PIXELS } from "./data.js";

const { values } = parseArgs({
  options: { "client-index": { type: "string" }, "num-clients": { type: "string", default: "3" }, seed: { type: "string", default: "42" }, out: { type: "string" } },
  strict: true,
});
const integer = (name: "client-index" | "num-clients" | "seed", text: string | undefined): number => {
  const value = Number(text);
  if (text === undefined || !Number.isSafeInteger(value) || value < 0) throw new RangeError(`--${name}: ${JSON.stringify(text)} is not a non-negative integer`);
  return value;
};
const numClients = integer("num-clients", values["num-clients"]);
const clientIndex = integer("client-index", values["client-index"]);
if (clientIndex >= numClients) throw new RangeError(`--client-index ${clientIndex} must be below --num-clients ${numClients}`);
if (!values.out) throw new RangeError("--out: the safetensors file to write is required");

const data = clientData(clientIndex, numClients, integer("seed", values.seed));
const tensorsOf = (prefix: string, set: Dataset): Tensor[] => [
  { name: `${prefix}_images`, dtype: DType.D_TYPE_FLOAT32, shape: [set.size, IMAGE_PIXELS], data: Buffer.from(set.images.buffer, set.images.byteOffset, set.images.byteLength) },
  { name: `${prefix}_labels`, dtype: DType.D_TYPE_UINT8, shape: [set.size], data: Buffer.from(set.labels.buffer, set.labels.byteOffset, set.labels.byteLength) },
];
writeFileSync(values.out, encodeSafetensors([...tensorsOf("train", data.train), ...tensorsOf("validation", data.validation)], { favoured_digits: data.favouredDigits.join(",") }));
console.log(`wrote ${values.out}: ${data.train.size} training and ${data.validation.size} validation images of client ${clientIndex} of ${numClients}`);
