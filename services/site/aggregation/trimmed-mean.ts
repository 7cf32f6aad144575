import { type AggregatorContext, RobustAggregator } from "./robust-aggregator.js";

/** Up to this many values per coordinate are sorted by insertion (fastest for a handful); more by the typed array's sort. */
const INSERTION_SORT_MAX = 32;

/**
 * Coordinate-wise trimmed mean: for each weight, the clients' values are
 * sorted, the `trim(n)` lowest and highest dropped, and the rest averaged.
 * The median is the trimmed mean that keeps only the middle one (odd n) or
 * two (even n) values. Tolerates up to trim(n) clients (median: fewer than
 * n / 2) sending anything at all, in every coordinate.
 *
 * Cost beside the weighted mean: n results on disk (or in memory when
 * inline) until the round ends, a chunk of every result in memory at once
 * (32 MiB together; 64 KiB each beyond 512 results), and a sort of n values
 * per coordinate.
 */
export class TrimmedMean extends RobustAggregator {
  constructor(
    context: AggregatorContext,
    name: string,
    private readonly trim: (count: number) => number,
  ) {
    super(context, name);
  }

  protected async aggregate(outputs: Float32Array[]): Promise<void> {
    const count = this.results.count;
    const trimmed = this.trim(count);
    const kept = count - 2 * trimmed;
    if (kept < 1) throw new Error(`${this.name}: trimming ${trimmed} values from each end of ${count} results leaves none; trim less or wait for more clients`);
    this.logger.info({ aggregator: this.name, clients: this.clients, trimmedEachEnd: trimmed }, "aggregating per coordinate");
    const column = new Float64Array(count);
    await this.results.forEachChunk((tensor, first, rows) => {
      const output = outputs[tensor]!;
      const length = rows[0]!.length;
      for (let element = 0; element < length; element++) {
        for (let row = 0; row < count; row++) column[row] = rows[row]![element]!;
        sortValues(column);
        let sum = 0;
        for (let index = trimmed; index < count - trimmed; index++) sum += column[index]!;
        output[first + element] = sum / kept;
      }
    });
  }
}

function sortValues(values: Float64Array): void {
  if (values.length > INSERTION_SORT_MAX) {
    values.sort();
    return;
  }
  for (let index = 1; index < values.length; index++) {
    const value = values[index]!;
    let at = index - 1;
    for (; at >= 0 && values[at]! > value; at--) values[at + 1] = values[at]!;
    values[at + 1] = value;
  }
}
