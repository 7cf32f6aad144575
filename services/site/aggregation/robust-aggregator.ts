import { DType, type Tensor } from "../../../gen/campfire/common/v1/tensor.js";
import type { Logger } from "../../shared/logger.js";
import { float32Tensor, float32Values } from "../../shared/tensor.js";
import type { StagedResult } from "../uploads/staged-result.js";
import type { Aggregator, ResultSource } from "./aggregator.js";
import { type Described, KeptResults } from "./kept-results.js";

/**
 * What the robust aggregators share: every result of the round is kept (see
 * KeptResults) and the aggregate is computed from all of them at the end, a
 * coordinate range at a time.
 *
 * Aggregation weights are not used: a client's weight comes from the
 * NUM_STEPS_CURRENT_ROUND it reports itself, so a malicious client would
 * claim a large one. Each result counts as one client.
 */
/** What every aggregator is built with: the model's tensors, buffers to reuse for the aggregate, where to log. */
export interface AggregatorContext {
  template: readonly Described[];
  reuse: readonly Tensor[];
  logger: Logger;
}

export abstract class RobustAggregator implements Aggregator {
  protected readonly results: KeptResults;
  /** Who sent each kept result, in the order they were kept. */
  protected readonly clients: string[] = [];
  protected readonly logger: Logger;
  private readonly reuse: readonly Tensor[];
  private taken = false;

  constructor(
    context: AggregatorContext,
    /** The aggregator's name, in the errors it raises. */
    protected readonly name: string,
  ) {
    this.results = new KeptResults(context.template);
    this.reuse = context.reuse;
    this.logger = context.logger;
  }

  get count(): number {
    return this.results.count;
  }

  /** Keeps the result (checked, copied or hard-linked) before returning: a refusal throws at once. */
  add(tensors: readonly Tensor[], _weight: number, source: ResultSource = {}): Promise<undefined> {
    this.refuseClip(source);
    this.results.add(tensors, source.base);
    this.clients.push(source.client ?? `result ${this.clients.length + 1}`);
    return Promise.resolve(undefined);
  }

  addStaged(staged: StagedResult, _weight: number, source: ResultSource = {}): Promise<undefined> {
    this.refuseClip(source);
    this.results.addStaged(staged, source.base);
    this.clients.push(source.client ?? `result ${this.clients.length + 1}`);
    return Promise.resolve(undefined);
  }

  /** FedAvg refuses central DP with a robust aggregator at submit; this keeps a caller that did not from a DP guarantee that does not hold. */
  addNoise(): void {
    throw new Error(`${this.name}: central DP needs the weighted mean, whose noise is calibrated to a sum of clipped updates`);
  }

  private refuseClip(source: ResultSource): void {
    if (source.clip) this.addNoise();
  }

  async result(): Promise<Tensor[]> {
    if (this.taken) throw new Error("result() was already taken");
    if (this.results.count === 0) throw new Error("no result was aggregated");
    this.taken = true;
    const outputs = this.outputBuffers();
    try {
      await this.aggregate(outputs);
    } finally {
      await this.results.close();
    }
    return this.results.template.map((tensor, index) => float32Tensor(tensor.name, tensor.shape, outputs[index]!));
  }

  release(): void {
    this.results.release();
  }

  /** Writes the aggregate of the kept results into `outputs` (zeroed, one per template tensor). */
  protected abstract aggregate(outputs: Float32Array[]): Promise<void>;

  /** Zeroed buffers for the aggregate: the reusable tensors' where name and size fit, new ones otherwise. */
  private outputBuffers(): Float32Array[] {
    const spare = new Map(this.reuse.filter((tensor) => tensor.dtype === DType.D_TYPE_FLOAT32).map((tensor) => [tensor.name, float32Values(tensor)]));
    return this.results.template.map((tensor, index) => {
      const size = this.results.tensorSizes[index]!;
      const recycled = spare.get(tensor.name);
      return recycled?.length === size ? recycled.fill(0) : new Float32Array(size);
    });
  }
}
