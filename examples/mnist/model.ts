import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import { float32Tensor, float32Values } from "../../services/agent/index.js";
import type { Tensor } from "../../services/shared/tensor.js";
import { type Dataset, IMAGE_PIXELS, NUM_CLASSES } from "./data.js";
import { Random, subSeed } from "./random.js";

/** softmax: multinomial logistic regression (784 -> 10). mlp: 784 -> 64 (ReLU) -> 10. */
export type ModelKind = "softmax" | "mlp";
export const MODEL_KINDS: readonly ModelKind[] = ["softmax", "mlp"];
export const HIDDEN_UNITS = 64;

/** One named parameter; weights are [out, in], row-major, as PyTorch lays out nn.Linear. */
export interface Parameter {
  name: string;
  shape: number[];
  values: Float32Array;
}

export interface Model {
  kind: ModelKind;
  /** In the order parameterShapes gives. */
  params: Parameter[];
}

/** A model that does not match the expected names, shapes or dtype. */
export class ModelMismatch extends Error {
  override name = "ModelMismatch";
}

export function parameterShapes(kind: ModelKind): Array<{ name: string; shape: number[] }> {
  switch (kind) {
    case "softmax":
      return [
        { name: "fc.weight", shape: [NUM_CLASSES, IMAGE_PIXELS] },
        { name: "fc.bias", shape: [NUM_CLASSES] },
      ];
    case "mlp":
      return [
        { name: "fc1.weight", shape: [HIDDEN_UNITS, IMAGE_PIXELS] },
        { name: "fc1.bias", shape: [HIDDEN_UNITS] },
        { name: "fc2.weight", shape: [NUM_CLASSES, HIDDEN_UNITS] },
        { name: "fc2.bias", shape: [NUM_CLASSES] },
      ];
  }
}

export function parseModelKind(text: string): ModelKind {
  if ((MODEL_KINDS as readonly string[]).includes(text)) return text as ModelKind;
  throw new RangeError(`unknown model kind ${JSON.stringify(text)}; expected one of ${MODEL_KINDS.join(", ")}`);
}

/**
 * Fresh parameters. Softmax regression is convex, so zeros are the usual start;
 * the MLP needs random weights to break symmetry: He-uniform for the ReLU
 * layer, Glorot-uniform for the output layer, biases zero.
 */
export function initModel(kind: ModelKind, seed: number): Model {
  const random = new Random(subSeed(seed, "init", kind));
  const params = parameterShapes(kind).map(({ name, shape }) => {
    const values = new Float32Array(shape.reduce((product, size) => product * size, 1));
    if (kind === "mlp" && name.endsWith(".weight")) {
      const [fanOut, fanIn] = shape as [number, number];
      const limit = name === "fc1.weight" ? Math.sqrt(6 / fanIn) : Math.sqrt(6 / (fanIn + fanOut));
      for (let index = 0; index < values.length; index++) values[index] = (random.next() * 2 - 1) * limit;
    }
    return { name, shape, values };
  });
  return { kind, params };
}

export function cloneModel(model: Model): Model {
  return { kind: model.kind, params: model.params.map(({ name, shape, values }) => ({ name, shape: [...shape], values: values.slice() })) };
}

/** The parameters as wire tensors. Views, not copies: do not train the model further while the tensors are in flight. */
export function modelToTensors(model: Model): Tensor[] {
  return model.params.map(({ name, shape, values }) => float32Tensor(name, [...shape], values));
}

/**
 * A model from wire tensors: the kind is the one whose parameter names the
 * tensors carry (or `expected`, which they must then match). The values are
 * copied, so training never writes into a received message's buffer.
 */
export function modelFromTensors(tensors: readonly Tensor[], expected?: ModelKind): Model {
  const byName = new Map(tensors.map((tensor) => [tensor.name, tensor]));
  const kind = expected ?? MODEL_KINDS.find((candidate) => parameterShapes(candidate).every(({ name }) => byName.has(name)));
  if (!kind) throw new ModelMismatch(`tensors [${[...byName.keys()].join(", ")}] are not the parameters of any of: ${MODEL_KINDS.join(", ")}`);
  const shapes = parameterShapes(kind);
  if (byName.size !== shapes.length) {
    throw new ModelMismatch(`a ${kind} model has ${shapes.length} tensors (${shapes.map(({ name }) => name).join(", ")}), got ${byName.size}`);
  }
  const params = shapes.map(({ name, shape }) => {
    const tensor = byName.get(name);
    if (!tensor) throw new ModelMismatch(`a ${kind} model needs tensor ${name}`);
    if (tensor.shape.length !== shape.length || tensor.shape.some((size, axis) => size !== shape[axis])) {
      throw new ModelMismatch(`tensor ${name} has shape [${tensor.shape.join(", ")}], a ${kind} model needs [${shape.join(", ")}]`);
    }
    let values: Float32Array;
    try {
      values = float32Values(tensor);
    } catch (error) {
      throw new ModelMismatch((error as Error).message);
    }
    if (values.length !== shape.reduce((product, size) => product * size, 1)) throw new ModelMismatch(`tensor ${name} has ${values.length} values for shape [${shape.join(", ")}]`);
    return { name, shape: [...shape], values: values.slice() };
  });
  return { kind, params };
}

/** The weighted mean of models of one kind (FedAvg's aggregation); weights are typically sample counts. */
export function averageModels(models: readonly Model[], weights: readonly number[]): Model {
  const first = models[0];
  if (!first || models.length !== weights.length) throw new RangeError("averageModels needs one weight per model and at least one model");
  const total = weights.reduce((sum, weight) => sum + weight, 0);
  if (!(total > 0)) throw new RangeError("averageModels needs a positive total weight");
  const result = cloneModel(first);
  result.params.forEach((param, index) => {
    const out = param.values;
    out.fill(0);
    models.forEach((model, which) => {
      if (model.kind !== first.kind) throw new ModelMismatch(`cannot average a ${model.kind} model with a ${first.kind} model`);
      const share = weights[which]! / total;
      const values = model.params[index]!.values;
      for (let i = 0; i < out.length; i++) out[i]! += share * values[i]!;
    });
  });
  return result;
}

export interface Evaluation {
  accuracy: number;
  /** Mean cross-entropy. */
  loss: number;
  samples: number;
}

export interface TrainOptions {
  epochs: number;
  learningRate: number;
  batchSize: number;
  /** Seeds the order of samples in each epoch. */
  seed: number;
  /** Training stops between two minibatches once this fires. */
  signal?: AbortSignal;
  /**
   * FedProx: adds (mu / 2) |w - anchor|^2 to the loss, pulling the local model
   * towards `anchor` (the global model the task carried, same parameters as the model).
   */
  proximal?: { mu: number; anchor: Model };
  onEpoch?: (epoch: number, metrics: Evaluation) => void;
}

export interface TrainReport {
  /** Over the last epoch trained, measured on the fly (before each minibatch's update). */
  loss: number;
  accuracy: number;
  epochs: number;
  /** Samples processed, counting each epoch: the work done, and FedAvg's weight for it. */
  samples: number;
  /** SGD steps (minibatches). */
  steps: number;
  /** True when the signal stopped training before all epochs ran. */
  stopped: boolean;
}

/**
 * Mini-batch SGD on `data`, updating `model` in place. Asynchronous only to
 * give the event loop a turn every few milliseconds: a trainer process must keep
 * heartbeating and must see an abort while it trains. The results do not depend
 * on when those turns happen.
 */
export async function trainLocal(model: Model, data: Dataset, options: TrainOptions): Promise<TrainReport> {
  const { epochs, learningRate, signal } = options;
  const proximal = options.proximal && options.proximal.mu > 0 ? { rate: learningRate * options.proximal.mu, anchor: options.proximal.anchor.params.map((param) => param.values) } : undefined;
  const batchSize = Math.max(1, Math.floor(options.batchSize));
  const net = new Network(model, true);
  const order = new Int32Array(data.size);
  const report: TrainReport = { loss: NaN, accuracy: NaN, epochs: 0, samples: 0, steps: 0, stopped: false };
  let lastTurn = performance.now();
  for (let epoch = 0; epoch < epochs; epoch++) {
    for (let index = 0; index < order.length; index++) order[index] = index;
    new Random(subSeed(options.seed, "epoch", epoch)).shuffle(order);
    let lossSum = 0;
    let correct = 0;
    let seen = 0;
    for (let start = 0; start < data.size; start += batchSize) {
      if (performance.now() - lastTurn > 15) {
        await yieldToEventLoop();
        lastTurn = performance.now();
      }
      if (signal?.aborted) {
        report.stopped = true;
        return report;
      }
      const end = Math.min(data.size, start + batchSize);
      net.zeroGradients();
      for (let row = start; row < end; row++) {
        const sample = order[row]!;
        lossSum += net.forward(data.images, sample * IMAGE_PIXELS, data.labels[sample]);
        if (net.predicted === data.labels[sample]) correct++;
        net.backward(data.labels[sample]!);
      }
      net.step(learningRate / (end - start), proximal);
      seen += end - start;
      report.samples += end - start;
      report.steps++;
    }
    report.epochs = epoch + 1;
    report.loss = lossSum / seen;
    report.accuracy = correct / seen;
    options.onEpoch?.(epoch, { loss: report.loss, accuracy: report.accuracy, samples: seen });
  }
  return report;
}

export function evaluate(model: Model, data: Dataset): Evaluation {
  const net = new Network(model);
  let lossSum = 0;
  let correct = 0;
  for (let sample = 0; sample < data.size; sample++) {
    lossSum += net.forward(data.images, sample * IMAGE_PIXELS, data.labels[sample]);
    if (net.predicted === data.labels[sample]) correct++;
  }
  return { accuracy: data.size ? correct / data.size : NaN, loss: data.size ? lossSum / data.size : NaN, samples: data.size };
}

/** The most likely digit for the image at `offset` in `images` (784 pixels). */
export function predict(model: Model, images: Float32Array, offset = 0): number {
  const net = new Network(model);
  net.forward(images, offset);
  return net.predicted;
}

/**
 * Forward and backward passes over one sample at a time with preallocated
 * scratch. MNIST images are ~80 % zero pixels, so each pass first lists the
 * non-zero pixels and touches only their weight columns: about five times less
 * work than the dense product.
 */
class Network {
  private readonly weights: Float32Array[];
  private readonly gradients: Float32Array[];
  private readonly hidden: number;
  /** The non-zero pixels of the current sample (the first `active` entries): where they are and their values. */
  private readonly pixels = new Int32Array(IMAGE_PIXELS);
  private readonly intensities = new Float64Array(IMAGE_PIXELS);
  private active = 0;
  /** The hidden layer's activations (ReLU output), MLP only. */
  private readonly activation: Float64Array;
  private readonly hiddenGradient: Float64Array;
  /** Softmax probabilities after forward(), output gradient after backward(). */
  private readonly output = new Float64Array(NUM_CLASSES);
  predicted = -1;

  constructor(model: Model, training = false) {
    this.weights = model.params.map((param) => param.values);
    this.gradients = training ? model.params.map((param) => new Float32Array(param.values.length)) : [];
    this.hidden = model.kind === "mlp" ? HIDDEN_UNITS : 0;
    this.activation = new Float64Array(this.hidden);
    this.hiddenGradient = new Float64Array(this.hidden);
  }

  /** Computes the class probabilities; returns the cross-entropy for `label` (0 when no label is given). */
  forward(images: Float32Array, offset: number, label?: number): number {
    const pixels = this.pixels;
    const intensities = this.intensities;
    let active = 0;
    for (let pixel = 0; pixel < IMAGE_PIXELS; pixel++) {
      const value = images[offset + pixel]!;
      if (value !== 0) {
        pixels[active] = pixel;
        intensities[active++] = value;
      }
    }
    this.active = active;

    const output = this.output;
    if (this.hidden === 0) {
      this.affineSparse(this.weights[0]!, this.weights[1]!, output, NUM_CLASSES);
    } else {
      const activation = this.activation;
      this.affineSparse(this.weights[0]!, this.weights[1]!, activation, this.hidden);
      for (let unit = 0; unit < this.hidden; unit++) if (activation[unit]! < 0) activation[unit] = 0;
      const w2 = this.weights[2]!;
      const b2 = this.weights[3]!;
      for (let out = 0; out < NUM_CLASSES; out++) {
        let sum = b2[out]!;
        const row = out * this.hidden;
        for (let unit = 0; unit < this.hidden; unit++) sum += w2[row + unit]! * activation[unit]!;
        output[out] = sum;
      }
    }

    let max = -Infinity;
    let best = 0;
    for (let out = 0; out < NUM_CLASSES; out++) {
      if (output[out]! > max) {
        max = output[out]!;
        best = out;
      }
    }
    this.predicted = best;
    const labelLogit = label === undefined ? 0 : output[label]! - max;
    let total = 0;
    for (let out = 0; out < NUM_CLASSES; out++) total += output[out] = Math.exp(output[out]! - max);
    for (let out = 0; out < NUM_CLASSES; out++) output[out]! /= total;
    // -log softmax in log-sum-exp form: finite even when the label's probability underflows.
    return label === undefined ? 0 : Math.log(total) - labelLogit;
  }

  /** Adds the gradient for the sample of the last forward() to the accumulated one. */
  backward(label: number): void {
    const output = this.output;
    output[label]! -= 1;
    if (this.hidden === 0) {
      this.accumulateSparse(this.gradients[0]!, this.gradients[1]!, output, NUM_CLASSES);
      return;
    }
    const w2 = this.weights[2]!;
    const g2 = this.gradients[2]!;
    const gb2 = this.gradients[3]!;
    const activation = this.activation;
    const hiddenGradient = this.hiddenGradient;
    hiddenGradient.fill(0);
    for (let out = 0; out < NUM_CLASSES; out++) {
      const delta = output[out]!;
      gb2[out]! += delta;
      const row = out * this.hidden;
      for (let unit = 0; unit < this.hidden; unit++) {
        g2[row + unit]! += delta * activation[unit]!;
        hiddenGradient[unit]! += delta * w2[row + unit]!;
      }
    }
    for (let unit = 0; unit < this.hidden; unit++) if (activation[unit]! <= 0) hiddenGradient[unit] = 0;
    this.accumulateSparse(this.gradients[0]!, this.gradients[1]!, hiddenGradient, this.hidden);
  }

  zeroGradients(): void {
    for (const gradient of this.gradients) gradient.fill(0);
  }

  /** w -= rate * g for every parameter; with `proximal`, also w -= proximal.rate * (w - anchor), the proximal term's gradient step. */
  step(rate: number, proximal?: { rate: number; anchor: Float32Array[] }): void {
    this.weights.forEach((weights, index) => {
      const gradient = this.gradients[index]!;
      const anchor = proximal?.anchor[index];
      if (!anchor) {
        for (let i = 0; i < weights.length; i++) weights[i]! -= rate * gradient[i]!;
        return;
      }
      for (let i = 0; i < weights.length; i++) weights[i]! -= rate * gradient[i]! + proximal.rate * (weights[i]! - anchor[i]!);
    });
  }

  /** out = W x + b over the active pixels, W being [rows, 784]. */
  private affineSparse(weight: Float32Array, bias: Float32Array, out: Float64Array, rows: number): void {
    const pixels = this.pixels;
    const intensities = this.intensities;
    const active = this.active;
    for (let row = 0; row < rows; row++) {
      const base = row * IMAGE_PIXELS;
      let sum = bias[row]!;
      for (let k = 0; k < active; k++) sum += weight[base + pixels[k]!]! * intensities[k]!;
      out[row] = sum;
    }
  }

  /** gW += delta x^T and gb += delta over the active pixels. */
  private accumulateSparse(gradWeight: Float32Array, gradBias: Float32Array, delta: Float64Array, rows: number): void {
    const pixels = this.pixels;
    const intensities = this.intensities;
    const active = this.active;
    for (let row = 0; row < rows; row++) {
      const d = delta[row]!;
      gradBias[row]! += d;
      if (d === 0) continue;
      const base = row * IMAGE_PIXELS;
      for (let k = 0; k < active; k++) gradWeight[base + pixels[k]!]! += d * intensities[k]!;
    }
  }
}
