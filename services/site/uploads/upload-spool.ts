import { once } from "node:events";
import { createWriteStream, rmSync, truncateSync, type WriteStream } from "node:fs";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import { ExchangeScanner } from "./exchange-scanner.js";
import type { SpareFiles } from "./spare-files.js";
import { StagedResult } from "./staged-result.js";

/** Bytes of an upload queued for the disk before the network is read no further. */
const WRITE_AHEAD_BYTES = 4 * 1024 * 1024;

/**
 * One upload on its way to disk: each chunk is scanned (ExchangeScanner) and
 * appended to a file of its own as it arrives; finish() gives the staged
 * result. The caller stops reading the network while write() says the disk is
 * behind (the promise it returns), so a slow disk holds the agent back
 * through flow control instead of filling memory. With `spares`, the file is
 * a spare one overwritten when there is one, and goes back to them when done.
 */
export class UploadSpool {
  private readonly scanner: ExchangeScanner;
  private readonly file: WriteStream;
  private received = 0;
  private failed: Error | undefined;
  readonly path: string;
  private readonly reused: boolean;

  constructor(
    directory: string,
    readonly size: number,
    private readonly spares?: SpareFiles,
  ) {
    this.scanner = new ExchangeScanner(size);
    const spare = spares?.take(size);
    this.reused = spare !== undefined;
    this.path = spare ?? join(directory, `${randomUUID()}.upload`);
    // Room for a few chunks before write() asks the caller to wait: at the default 16 KiB every chunk would pause the upload.
    this.file = createWriteStream(this.path, { flags: this.reused ? "r+" : "wx", highWaterMark: WRITE_AHEAD_BYTES });
    this.file.on("error", (error) => (this.failed ??= error));
  }

  /** Returns a problem when the chunk overflows the announced size; otherwise a promise when the file is behind (wait for it before reading on). */
  write(chunk: Uint8Array): { problem: string } | Promise<void> | undefined {
    if (this.received + chunk.length > this.size) return { problem: `chunks exceed the announced size of ${this.size} bytes` };
    this.received += chunk.length;
    this.scanner.push(chunk);
    if (this.file.write(chunk)) return undefined;
    // A disk error is kept in `failed` and reported by finish(); the caller just reads on.
    return once(this.file, "drain").then(
      () => undefined,
      () => undefined,
    );
  }

  /**
   * Closes the file and returns the staged result (carrying the scanner's
   * problem, if any), or the problem when fewer bytes came than announced
   * (the file is then dropped). Throws when the disk failed.
   */
  async finish(): Promise<{ staged: StagedResult } | { problem: string }> {
    if (this.received !== this.size) {
      this.abandon();
      return { problem: `received ${this.received} bytes, but ${this.size} were announced` };
    }
    this.file.end();
    await once(this.file, "close").catch(() => undefined);
    if (!this.failed && this.reused) {
      try {
        // A spare file longer than this upload keeps its old tail otherwise.
        truncateSync(this.path, this.size);
      } catch (error) {
        this.failed = error as Error;
      }
    }
    if (this.failed) {
      this.abandon();
      throw this.failed;
    }
    const scanned = this.scanner.finish();
    const dispose = (path: string) => this.dispose(path);
    return { staged: "problem" in scanned ? new StagedResult(this.path, this.size, undefined, scanned.problem, dispose) : new StagedResult(this.path, this.size, scanned.exchange, undefined, dispose) };
  }

  /** Drops the file of an upload that failed or was cut. */
  abandon(): void {
    const remove = () => this.dispose(this.path);
    if (this.file.closed) return remove();
    // Removed once closed: a file still being opened would otherwise appear after the removal.
    this.file.once("close", remove);
    this.file.destroy();
  }

  /** A staging file no longer needed: back to the spares, or removed. */
  private dispose(path: string): void {
    if (this.spares) this.spares.give(path);
    else rmSync(path, { force: true });
  }
}
