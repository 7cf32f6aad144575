import { RE2JS } from "re2js";
import { DType, type Tensor } from "../../gen/campfire/common/v1/tensor.js";
import { float32Tensor, float32Values } from "../shared/tensor.js";
import type { FilterSpec } from "./config.js";
import { GaussianSource } from "./random.js";

/** The base a tensor's update is measured from (the task's tensor of that name), or undefined for base 0. */
export type BaseOf = (tensor: Tensor) => Float32Array | undefined;

/** What the filters of one chain share while it runs. */
export interface ChainState {
  /** The max_norm of the last clip_l2 applied: gaussian_noise's noise_multiplier is relative to it. */
  lastClipNorm: number | undefined;
  /** Added to the result's meta (what gaussian_noise applied, for the site's accountant). */
  meta: Record<string, unknown>;
}

/** A filter that cannot run on this input (gaussian_noise's noise_multiplier with no clip_l2 before it). */
export class FilterFailed extends Error {
  override name = "FilterFailed";
}

/** Whether a filter changes values relative to a base (the others only select tensors). */
export function measuresUpdate(spec: FilterSpec): boolean {
  return spec.name !== "exclude_vars" && spec.name !== "include_vars";
}

/**
 * Runs one built-in filter (semantics: docs/privacy.md, shared with the Python
 * client). The update of a FLOAT32 tensor is float64(value) - float64(base);
 * a changed tensor is rebuilt as float32(base + new update), rounded once, in
 * a new buffer; an unchanged one keeps its buffer. Other dtypes pass through.
 */
export function applyFilter(spec: FilterSpec, tensors: readonly Tensor[], baseOf: BaseOf, state: ChainState): Tensor[] {
  switch (spec.name) {
    case "exclude_vars": {
      const match = fullMatcher(spec.args.patterns);
      return tensors.filter((tensor) => !match(tensor.name));
    }
    case "include_vars": {
      const match = fullMatcher(spec.args.patterns);
      return tensors.filter((tensor) => match(tensor.name));
    }
    case "clip_l2":
      state.lastClipNorm = spec.args.max_norm;
      return clip(tensors, baseOf, spec.args.max_norm, spec.args.per_tensor);
    case "gaussian_noise": {
      const { noise_multiplier: multiplier, seed } = spec.args;
      let stddev = spec.args.stddev;
      if (multiplier !== undefined) {
        if (state.lastClipNorm === undefined) throw new FilterFailed("gaussian_noise: noise_multiplier needs a clip_l2 applied before it in this task's chain");
        stddev = multiplier * state.lastClipNorm;
        state.meta.dp_noise_multiplier = multiplier;
        state.meta.dp_clip_norm = state.lastClipNorm;
      }
      return addNoise(tensors, baseOf, stddev!, GaussianSource.create(seed));
    }
    case "percentile_sparsify":
      return sparsify(tensors, baseOf, spec.args.percentile, spec.args.gamma);
  }
}

/** Whole-name matching in RE2 (linear time; config.ts says why). */
function fullMatcher(patterns: readonly string[]): (name: string) => boolean {
  const expressions = patterns.map((pattern) => RE2JS.compile(pattern));
  return (name) => expressions.some((expression) => expression.matches(name));
}

const isFloat32 = (tensor: Tensor) => tensor.dtype === DType.D_TYPE_FLOAT32;

/** Rebuilds each FLOAT32 tensor for which `update(values, base)` returns new values; the rest keep their buffers. */
function rebuild(tensors: readonly Tensor[], baseOf: BaseOf, update: (values: Float32Array, base: Float32Array | undefined) => Float32Array | undefined): Tensor[] {
  return tensors.map((tensor) => {
    if (!isFloat32(tensor)) return tensor;
    const out = update(float32Values(tensor), baseOf(tensor));
    return out ? float32Tensor(tensor.name, tensor.shape, out) : tensor;
  });
}

/** The squared L2 norm of a tensor's update, summed sequentially in float64 (the order the spec fixes for bit-identity). */
function squaredNorm(values: Float32Array, base: Float32Array | undefined, sum = 0): number {
  for (let index = 0; index < values.length; index++) {
    const update = values[index]! - (base ? base[index]! : 0);
    sum += update * update;
  }
  return sum;
}

/** The scale that brings a norm of sqrt(squared) down to max_norm, or 1 when it is within. */
export function clipScale(squared: number, maxNorm: number): number {
  const norm = Math.sqrt(squared);
  return norm > maxNorm ? maxNorm / norm : 1;
}

function clip(tensors: readonly Tensor[], baseOf: BaseOf, maxNorm: number, perTensor: boolean): Tensor[] {
  let scale = 1;
  if (!perTensor) {
    let squared = 0;
    for (const tensor of tensors) if (isFloat32(tensor)) squared = squaredNorm(float32Values(tensor), baseOf(tensor), squared);
    scale = clipScale(squared, maxNorm);
    if (scale === 1) return [...tensors];
  }
  return rebuild(tensors, baseOf, (values, base) => {
    const s = perTensor ? clipScale(squaredNorm(values, base), maxNorm) : scale;
    if (s === 1) return undefined;
    const out = new Float32Array(values.length);
    for (let index = 0; index < values.length; index++) {
      const from = base ? base[index]! : 0;
      out[index] = from + s * (values[index]! - from);
    }
    return out;
  });
}

function addNoise(tensors: readonly Tensor[], baseOf: BaseOf, stddev: number, normal: GaussianSource): Tensor[] {
  if (stddev === 0) return [...tensors];
  return rebuild(tensors, baseOf, (values, base) => {
    const out = new Float32Array(values.length);
    for (let index = 0; index < values.length; index++) {
      const from = base ? base[index]! : 0;
      out[index] = from + (values[index]! - from + stddev * normal.sample());
    }
    return out;
  });
}

/**
 * Zeroes the update's elements of magnitude below the nearest-rank percentile
 * over every FLOAT32 tensor together. Costs a float64 copy of every element's
 * magnitude (8 bytes per element) and a sort.
 */
function sparsify(tensors: readonly Tensor[], baseOf: BaseOf, percentile: number, gamma: number | undefined): Tensor[] {
  const floats = tensors.filter(isFloat32);
  const count = floats.reduce((total, tensor) => total + tensor.data.length / 4, 0);
  if (count === 0) return [...tensors];
  let threshold = 0;
  if (percentile > 0) {
    const magnitudes = new Float64Array(count);
    let at = 0;
    for (const tensor of floats) {
      const values = float32Values(tensor);
      const base = baseOf(tensor);
      for (let index = 0; index < values.length; index++) magnitudes[at++] = Math.abs(values[index]! - (base ? base[index]! : 0));
    }
    magnitudes.sort();
    threshold = magnitudes[Math.ceil((percentile / 100) * count) - 1]!;
  }
  return rebuild(tensors, baseOf, (values, base) => {
    const out = new Float32Array(values.length);
    for (let index = 0; index < values.length; index++) {
      const from = base ? base[index]! : 0;
      const update = values[index]! - from;
      if (Math.abs(update) < threshold) out[index] = from;
      else out[index] = from + (gamma === undefined ? update : Math.min(gamma, Math.max(-gamma, update)));
    }
    return out;
  });
}
