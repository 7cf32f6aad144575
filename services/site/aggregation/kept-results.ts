import { copyFileSync, linkSync, rmSync } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import { DType, type Tensor } from "../../../gen/campfire/common/v1/tensor.js";
import { allFinite } from "../../shared/float32-kernels/index.mjs";
import { elementCount, float32Values } from "../../shared/tensor.js";
import type { ScannedTensor } from "../uploads/exchange-scanner.js";
import type { StagedResult } from "../uploads/staged-result.js";
import { ResultRefused } from "../workflows/aggregation.js";

/** What a result's tensor must match before it is kept: the global model's name, dtype and shape. */
export type Described = Pick<Tensor, "name" | "dtype" | "shape">;

/** Bytes read per result per chunk at most, and across all results at most: a chunk of N results fits in a few tens of MiB whatever N. */
const CHUNK_BYTES_PER_RESULT = 4 * 1024 * 1024;
const CHUNK_BYTES_ALL_RESULTS = 32 * 1024 * 1024;
const MIN_CHUNK_ELEMENTS = 16 * 1024;

/** One result kept for the round: its values can be read back a coordinate range at a time. */
interface KeptResult {
  /** Fills `into` with elements [first, first + into.length) of the template's tensor `tensor`, the global model's base added for a WEIGHT_DIFF. */
  read(tensor: number, first: number, into: Float32Array): Promise<void>;
  close(): Promise<void>;
  release(): void;
}

/**
 * Every result of a round, kept until the aggregate is computed: the robust
 * aggregators (median, trimmed mean, Krum) need all of them at once, which a
 * running sum cannot give.
 *
 * An uploaded result stays on disk: its staged file is hard-linked (copied if
 * the file system cannot link) before the workflow releases it, so nothing of
 * it is in memory until the aggregate is computed. An inline result is small
 * (the site refuses inline results over 512 KiB) and is copied into memory.
 *
 * Exactly-once: a result is checked (names, dtypes, shapes, NaN and Infinity)
 * before it is kept, and a refused one leaves nothing behind.
 */
export class KeptResults {
  private readonly kept: KeptResult[] = [];
  private readonly sizes: number[];
  private released = false;

  constructor(readonly template: readonly Described[]) {
    for (const tensor of template) {
      if (tensor.dtype !== DType.D_TYPE_FLOAT32) throw new TypeError(`tensor ${tensor.name}: only FLOAT32 models are aggregated, got ${DType[tensor.dtype]}`);
    }
    this.sizes = template.map((tensor) => elementCount(tensor.shape));
  }

  get count(): number {
    return this.kept.length;
  }

  /** Elements of each of the template's tensors. */
  get tensorSizes(): readonly number[] {
    return this.sizes;
  }

  /** Keeps an inline result; `base` (the task's global model) makes WEIGHT_DIFF tensors whole. Throws ResultRefused, keeping nothing, on any mismatch. */
  add(tensors: readonly Tensor[], base?: ReadonlyMap<string, Float32Array>): void {
    const matched = this.match(tensors).map((tensor) => float32Values(tensor));
    matched.forEach((values, index) => {
      if (!allFinite(values)) throw new ResultRefused(`tensor ${JSON.stringify(this.template[index]!.name)} holds NaN or Infinity`);
    });
    const whole = matched.map((values, index) => {
      const copy = Float32Array.from(values);
      const from = base?.get(this.template[index]!.name);
      if (from) for (let element = 0; element < copy.length; element++) copy[element]! += from[element]!;
      return copy;
    });
    this.kept.push(new InlineResult(whole));
  }

  /** Keeps an uploaded result where it is staged, under a name of its own (the workflow releases the upload's). Throws ResultRefused, keeping nothing, on any mismatch. */
  addStaged(staged: StagedResult, base?: ReadonlyMap<string, Float32Array>): void {
    const matched = this.match(staged.tensors);
    for (const tensor of matched) {
      let finite = tensor.finite;
      if (finite === undefined) {
        finite = true;
        staged.readFloat32(tensor, (values) => (finite &&= allFinite(values)));
      }
      if (!finite) throw new ResultRefused(`tensor ${JSON.stringify(tensor.name)} holds NaN or Infinity`);
    }
    const path = `${staged.path}.kept`;
    try {
      linkSync(staged.path, path);
    } catch {
      copyFileSync(staged.path, path);
    }
    this.kept.push(new StagedFile(path, matched, matched.map((tensor) => base?.get(tensor.name))));
  }

  /** The result's tensors in the template's order; refuses a missing, extra or misshapen tensor before anything is read. */
  private match<T extends Described>(tensors: readonly T[]): T[] {
    if (this.released) throw new Error("the round's results were already aggregated");
    const byName = new Map(tensors.map((tensor) => [tensor.name, tensor]));
    const ordered = this.template.map((expected) => {
      const tensor = byName.get(expected.name);
      const name = JSON.stringify(expected.name);
      // The weighted mean averages each tensor over the results holding it; a median or a distance needs them all.
      if (!tensor) throw new ResultRefused(`tensor ${name} is missing (the robust aggregators take only results with every tensor)`);
      if (tensor.dtype !== DType.D_TYPE_FLOAT32) throw new ResultRefused(`tensor ${name} is ${DType[tensor.dtype]}, expected D_TYPE_FLOAT32`);
      if (tensor.shape.join() !== expected.shape.join()) {
        throw new ResultRefused(`tensor ${name} has shape [${tensor.shape.join(", ")}], expected [${expected.shape.join(", ")}]`);
      }
      byName.delete(expected.name);
      return tensor;
    });
    if (byName.size) throw new ResultRefused(`unexpected tensor ${JSON.stringify(byName.keys().next().value)}`);
    return ordered;
  }

  /**
   * Visits the model a coordinate range at a time: for each tensor and range,
   * `rows[r]` holds the range's values of result `which[r]` (default: every
   * result, in the order they were kept). Memory: one buffer of
   * which.length x chunk elements, reused; each range is read from every file
   * before the visit. Yields to the event loop between ranges.
   */
  async forEachChunk(visit: (tensor: number, first: number, rows: Float32Array[]) => void, which: readonly number[] = this.kept.map((_, index) => index)): Promise<void> {
    if (this.released) throw new Error("the round's results were already released");
    const chunk = Math.max(MIN_CHUNK_ELEMENTS, Math.min(CHUNK_BYTES_PER_RESULT, Math.floor(CHUNK_BYTES_ALL_RESULTS / Math.max(1, which.length))) >> 2);
    // A reduce, not Math.max(...sizes): a result may hold 100,000 tensors, more arguments than a call takes.
    const largest = Math.min(chunk, this.sizes.reduce((most, size) => Math.max(most, size), 0));
    const buffer = new Float32Array(which.length * largest);
    for (const [tensor, size] of this.sizes.entries()) {
      for (let first = 0; first < size; first += chunk) {
        const length = Math.min(chunk, size - first);
        const rows = which.map((_, row) => buffer.subarray(row * largest, row * largest + length));
        await Promise.all(which.map((result, row) => this.kept[result]!.read(tensor, first, rows[row]!)));
        visit(tensor, first, rows);
      }
    }
  }

  /** Closes the files opened to read the kept results. */
  async close(): Promise<void> {
    await Promise.all(this.kept.map((result) => result.close()));
  }

  /** Removes every kept file; idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    for (const result of this.kept) result.release();
  }
}

class InlineResult implements KeptResult {
  constructor(private readonly tensors: Float32Array[]) {}

  async read(tensor: number, first: number, into: Float32Array): Promise<void> {
    into.set(this.tensors[tensor]!.subarray(first, first + into.length));
  }

  async close(): Promise<void> {}

  release(): void {}
}

class StagedFile implements KeptResult {
  private handle: Promise<FileHandle> | undefined;

  constructor(
    private readonly path: string,
    private readonly tensors: readonly ScannedTensor[],
    private readonly bases: ReadonlyArray<Float32Array | undefined>,
  ) {}

  async read(tensor: number, first: number, into: Float32Array): Promise<void> {
    const file = await (this.handle ??= open(this.path, "r"));
    const bytes = new Uint8Array(into.buffer, into.byteOffset, into.byteLength);
    const { bytesRead } = await file.read(bytes, 0, bytes.length, this.tensors[tensor]!.offset + first * 4);
    if (bytesRead !== bytes.length) throw new Error(`the kept result ${this.path} is shorter than its index says`);
    const base = this.bases[tensor];
    if (base) for (let element = 0; element < into.length; element++) into[element]! += base[first + element]!;
  }

  async close(): Promise<void> {
    const handle = this.handle;
    this.handle = undefined;
    if (handle) await (await handle).close();
  }

  release(): void {
    rmSync(this.path, { force: true });
  }
}
