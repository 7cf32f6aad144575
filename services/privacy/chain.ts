import { DataKind, type DataExchange } from "../../gen/campfire/common/v1/exchange.js";
import { DType, type Tensor } from "../../gen/campfire/common/v1/tensor.js";
import { float32Values } from "../shared/tensor.js";
import type { FilterEntry, FilterSpec } from "./config.js";
import { applyFilter, type BaseOf, type ChainState, measuresUpdate } from "./filters.js";

/** The filters of `entries` that apply to task `taskName`, in order (entries in order, filters within each in order). */
export function filtersFor(entries: readonly FilterEntry[], taskName: string): FilterSpec[] {
  return entries.filter((entry) => !entry.tasks || entry.tasks.includes(taskName)).flatMap((entry) => entry.filters);
}

/** Whether running `filters` on a WEIGHTS result needs the task's model (as the base of its update). */
export function needsBase(filters: readonly FilterSpec[]): boolean {
  return filters.some(measuresUpdate);
}

export type Base = ReadonlyMap<string, { shape: readonly number[]; values: Float32Array }>;

/**
 * The task's FLOAT32 tensors as the base of a result's update. `copy`: the
 * agent copies, for its trainer may change the task's buffers in place; the
 * site reads the shared payload, which nobody changes.
 */
export function taskBase(tensors: readonly Tensor[], copy = true): Base {
  return new Map(tensors.filter((tensor) => tensor.dtype === DType.D_TYPE_FLOAT32).map((tensor) => [tensor.name, { shape: tensor.shape, values: copy ? float32Values(tensor).slice() : float32Values(tensor) }]));
}

/**
 * Runs `filters` on `data`: on a DATA_KIND_WEIGHTS result the update is
 * measured from `base` (the task's model; a tensor it lacks, or holds in
 * another shape, counts from 0); on anything else (WEIGHT_DIFF, task data) the
 * tensors are the update. Returns new data (the input is not changed) whose
 * meta lists the filters under "filters_applied" and holds what gaussian_noise
 * applied; `data` itself when no filter applies.
 */
export function runFilters(filters: readonly FilterSpec[], data: DataExchange, base: Base | undefined): DataExchange {
  if (filters.length === 0) return data;
  const weights = data.kind === DataKind.DATA_KIND_WEIGHTS || data.kind === DataKind.DATA_KIND_UNSPECIFIED;
  const baseOf: BaseOf = (tensor) => {
    const from = weights ? base?.get(tensor.name) : undefined;
    return from && from.shape.length === tensor.shape.length && from.shape.every((size, axis) => size === tensor.shape[axis]) ? from.values : undefined;
  };
  const state: ChainState = { lastClipNorm: undefined, meta: {} };
  let tensors: Tensor[] = data.tensors;
  for (const filter of filters) tensors = applyFilter(filter, tensors, baseOf, state);
  const previous = Array.isArray(data.meta?.filters_applied) ? (data.meta.filters_applied as unknown[]) : [];
  return { ...data, tensors, meta: { ...data.meta, ...state.meta, filters_applied: [...previous, ...filters.map((filter) => filter.name)] } };
}
