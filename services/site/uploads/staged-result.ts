import { closeSync, openSync, readFileSync, readSync, rmSync } from "node:fs";
import type { DataExchange } from "../../../gen/campfire/common/v1/exchange.js";
import { decodeDataExchangeAligned } from "../../shared/payload.js";
import type { ScannedExchange, ScannedTensor } from "./exchange-scanner.js";

/** Bytes read from a staged file at a time by readFloat32: a few chunks, whatever the model's size. */
const READ_BYTES = 4 * 1024 * 1024;

/** The one buffer readFloat32 reads into (it runs synchronously, so never twice at once). */
let readBuffer: Float32Array | undefined;

/**
 * An uploaded result, complete and scanned, staged in a file of its own (the
 * upload's bytes as they came) until a workflow takes it: nothing of it is in
 * memory but its index. A workflow that aggregates reads its tensors a few
 * MiB at a time (readFloat32()); any other gets the whole DataExchange (load()).
 * The file goes with release() or load().
 */
export class StagedResult {
  private released = false;
  private loaded: DataExchange | undefined;

  constructor(
    readonly path: string,
    readonly size: number,
    /** The index, or undefined with `problem` when the upload is not a well-formed DataExchange. */
    readonly exchange: ScannedExchange | undefined,
    readonly problem: string | undefined,
    /** What becomes of the file when released: removed, unless the spool that staged it keeps it for a later upload. */
    private readonly dispose: (path: string) => void = (path) => rmSync(path, { force: true }),
  ) {}

  get tensors(): readonly ScannedTensor[] {
    return this.exchange?.tensors ?? [];
  }

  /**
   * Calls `visit` with consecutive runs of a FLOAT32 tensor's elements (each
   * run's first element index too), read synchronously from the file into one
   * reused aligned buffer: a caller folding them into a sum finishes within one
   * turn of the event loop, so no other result's fold interleaves with it.
   */
  readFloat32(tensor: ScannedTensor, visit: (values: Float32Array, firstElement: number) => void): void {
    if (this.released) throw new Error(`the staged result ${this.path} was released`);
    const buffer = (readBuffer ??= new Float32Array(READ_BYTES / 4));
    const bytes = new Uint8Array(buffer.buffer);
    const file = openSync(this.path, "r");
    try {
      for (let done = 0; done < tensor.length; ) {
        const want = Math.min(bytes.byteLength, tensor.length - done);
        if (readSync(file, bytes, 0, want, tensor.offset + done) !== want) throw new Error(`the staged result ${this.path} is shorter than its index says`);
        visit(buffer.subarray(0, want / 4), done / 4);
        done += want;
      }
    } finally {
      closeSync(file);
    }
  }

  /** The whole result in memory (decoded from the file, which is then given up: see release()). */
  load(): DataExchange {
    if (this.loaded) return this.loaded;
    if (this.released) throw new Error(`the staged result ${this.path} was released`);
    this.loaded = decodeDataExchangeAligned(readFileSync(this.path));
    this.release();
    return this.loaded;
  }

  /** Gives up the file (removed, or kept as a spare for a later upload); idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.dispose(this.path);
  }
}
