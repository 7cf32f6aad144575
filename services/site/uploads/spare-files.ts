import { randomUUID } from "node:crypto";
import { renameSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";

/** How long a spare file is kept unused before it is removed, by default: a round's uploads come back within it, a finished job's files go. */
const SPARE_IDLE_MS = 60_000;

/**
 * Staging files kept after their upload was used, for the next uploads to
 * overwrite. Writing into a new file makes the kernel find fresh page-cache
 * pages (measured here: 0.4 GB/s into a new file on ext4 against 5.4 GB/s over
 * an existing file's cached pages), and the site writes every round's results
 * anew: 3 x 256 MiB a round kept a core's worth of kernel time busy. PostgreSQL
 * recycles its WAL segment files for the same reason.
 *
 * A file is kept only while nothing else links it (a robust aggregator
 * hard-links the results it keeps), while the spares fit `room()` bytes (the
 * upload budget left; the payload store shrinks them as uploads are admitted,
 * so spares and uploads together stay within the budget), and for about
 * `idleMs` unused (swept every half of it).
 */
interface Spare {
  path: string;
  size: number;
  keptAt: number;
}

export class SpareFiles {
  private readonly spares: Spare[] = [];
  private sweeper: NodeJS.Timeout | undefined;

  constructor(
    private readonly directory: string,
    private readonly room: () => number,
    private readonly idleMs = SPARE_IDLE_MS,
  ) {}

  /**
   * A spare file for an upload of `size` bytes, renamed to a new staging name
   * (the smallest that holds it, else the largest); undefined when none is kept.
   */
  take(size: number): string | undefined {
    if (this.spares.length === 0) return undefined;
    const fitting = this.spares.filter((spare) => spare.size >= size);
    const chosen = fitting.length ? fitting.reduce((a, b) => (b.size < a.size ? b : a)) : this.spares.reduce((a, b) => (b.size > a.size ? b : a));
    this.forget(chosen);
    const path = join(this.directory, `${randomUUID()}.upload`);
    try {
      renameSync(chosen.path, path);
      return path;
    } catch {
      rmSync(chosen.path, { force: true });
      return undefined;
    }
  }

  /** Removes spares, oldest first, until they take at most `bytes` (an upload being admitted needs the room). */
  shrinkTo(bytes: number): void {
    while (this.spares.length && this.bytes > bytes) this.drop(this.spares[0]!);
  }

  /** Keeps a staging file that is no longer needed for a later upload, or removes it (linked elsewhere, or no room). */
  give(path: string): void {
    let size: number;
    try {
      const stat = statSync(path);
      if (stat.nlink !== 1 || stat.size > this.room()) return rmSync(path, { force: true });
      size = stat.size;
    } catch {
      return rmSync(path, { force: true });
    }
    this.shrinkTo(this.room() - size);
    const spare = { path: join(this.directory, `spare-${randomUUID()}`), size, keptAt: Date.now() };
    try {
      renameSync(path, spare.path);
    } catch {
      return rmSync(path, { force: true });
    }
    this.spares.push(spare);
    this.sweeper ??= setInterval(() => this.sweep(), this.idleMs / 2).unref();
  }

  /** Removes every spare file (the site is stopping). */
  close(): void {
    this.shrinkTo(0);
  }

  /** Bytes the spare files take. */
  get bytes(): number {
    return this.spares.reduce((sum, spare) => sum + spare.size, 0);
  }

  private sweep(): void {
    const now = Date.now();
    for (const spare of [...this.spares]) if (now - spare.keptAt >= this.idleMs) this.drop(spare);
  }

  private drop(spare: Spare): void {
    this.forget(spare);
    rmSync(spare.path, { force: true });
  }

  private forget(spare: Spare): void {
    this.spares.splice(this.spares.indexOf(spare), 1);
    if (this.spares.length === 0 && this.sweeper) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }
}
