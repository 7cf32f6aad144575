import { appendFile, mkdir } from "node:fs/promises";
import { dirname } from "node:path";

/**
 * Appends JSON lines to a file in the background, in order, a batch per
 * write. Lines waiting beyond `maxPending` are dropped and counted: a client
 * that logs faster than the disk takes must not grow the site's memory.
 */
export class LineAppender {
  private pending: string[] = [];
  private writing: Promise<void> = Promise.resolve();
  dropped = 0;

  constructor(
    private readonly path: string,
    private readonly maxPending = 10_000,
  ) {}

  append(line: string): void {
    if (this.pending.length >= this.maxPending) {
      this.dropped++;
      return;
    }
    this.pending.push(line);
    if (this.pending.length === 1) void this.flush();
  }

  /** Resolves once every line appended so far is written. */
  flush(): Promise<void> {
    this.writing = this.writing.then(async () => {
      const lines = this.pending;
      this.pending = [];
      if (!lines.length) return;
      await mkdir(dirname(this.path), { recursive: true });
      await appendFile(this.path, `${lines.join("\n")}\n`);
    });
    return this.writing;
  }
}
