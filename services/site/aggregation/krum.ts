import { type AggregatorContext, RobustAggregator } from "./robust-aggregator.js";

/** How Krum judged a round: each result's score (in the order they arrived) and which it averaged. */
export interface KrumSelection {
  scores: number[];
  selected: number[];
}

/**
 * Krum (Blanchard et al., 2017) and multi-Krum: assuming at most f of the n
 * results are malicious, each result is scored by the sum of squared
 * distances to its n - f - 2 nearest others, and the m best scored are
 * averaged (m = 1: Krum). Needs n > 2f + 2.
 *
 * Two passes over the kept results: the first accumulates all pairwise
 * squared distances a chunk at a time (n^2 numbers, n(n-1)/2 x model work),
 * the second averages the selected results. Memory beside the aggregate: a
 * chunk of every result (32 MiB together; 64 KiB each beyond 512 results) and
 * the n x n distances.
 */
export class Krum extends RobustAggregator {
  /** Set by result(). */
  selection: KrumSelection | undefined;

  constructor(
    context: AggregatorContext,
    private readonly byzantine: number,
    private readonly selectCount: number,
  ) {
    super(context, "krum");
  }

  protected async aggregate(outputs: Float32Array[]): Promise<void> {
    const count = this.results.count;
    if (count <= 2 * this.byzantine + 2) {
      throw new Error(`krum: ${count} results, but byzantine_clients ${this.byzantine} needs more than 2 x ${this.byzantine} + 2 = ${2 * this.byzantine + 2}`);
    }
    if (this.selectCount > count - this.byzantine) {
      throw new Error(`krum: num_selected ${this.selectCount} is more than the ${count - this.byzantine} results left once byzantine_clients ${this.byzantine} are set aside`);
    }
    const distances = await this.pairwiseSquaredDistances(count);
    const scores = krumScores(distances, count, count - this.byzantine - 2);
    const selected = scores
      .map((score, index) => ({ score, index }))
      .sort((a, b) => a.score - b.score || a.index - b.index)
      .slice(0, this.selectCount)
      .map(({ index }) => index)
      .sort((a, b) => a - b);
    this.selection = { scores, selected };
    // The clients left out are the ones to look at: a client left out round after round may be attacking.
    this.logger.info(
      {
        aggregator: "krum",
        selected: selected.map((index) => this.clients[index]),
        leftOut: this.clients.filter((_, index) => !selected.includes(index)),
        scores: Object.fromEntries(scores.map((score, index) => [this.clients[index], score])),
      },
      "krum selected",
    );
    const share = 1 / selected.length;
    await this.results.forEachChunk((tensor, first, rows) => {
      const output = outputs[tensor]!.subarray(first, first + rows[0]!.length);
      for (const row of rows) for (let element = 0; element < output.length; element++) output[element]! += share * row[element]!;
    }, selected);
  }

  /** distances[i * n + j] (i < j): the squared Euclidean distance between results i and j, summed over every chunk of the model. */
  private async pairwiseSquaredDistances(count: number): Promise<Float64Array> {
    const distances = new Float64Array(count * count);
    await this.results.forEachChunk((_, __, rows) => {
      for (let i = 0; i < count; i++) {
        const a = rows[i]!;
        for (let j = i + 1; j < count; j++) {
          const b = rows[j]!;
          let sum = 0;
          for (let element = 0; element < a.length; element++) {
            const difference = a[element]! - b[element]!;
            sum += difference * difference;
          }
          distances[i * count + j]! += sum;
        }
      }
    });
    for (let i = 0; i < count; i++) for (let j = 0; j < i; j++) distances[i * count + j] = distances[j * count + i]!;
    return distances;
  }
}

/** Each result's Krum score: the sum of its `neighbours` smallest squared distances to the others. */
export function krumScores(distances: Float64Array, count: number, neighbours: number): number[] {
  return Array.from({ length: count }, (_, i) => {
    const others = Array.from({ length: count }, (__, j) => distances[i * count + j]!).filter((_distance, j) => j !== i);
    return others
      .sort((a, b) => a - b)
      .slice(0, neighbours)
      .reduce((sum, distance) => sum + distance, 0);
  });
}
