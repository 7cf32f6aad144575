import type { UploadProgress } from "../session-client/artifacts.js";

/**
 * Shows artifact uploads on stderr (stdout carries only results): a bar
 * redrawn in place on a terminal, one line per finished (or resumed) upload
 * otherwise, so logs and CI keep a record without a flood.
 */
export class UploadView {
  private startedAt = new Map<string, { at: number; from: number }>();
  private lastDraw = 0;

  private constructor(private readonly live: ((text: string) => void) & { done(): void; clear(): void } | undefined) {}

  static async create(): Promise<UploadView> {
    return new UploadView(process.stderr.isTTY ? (await import("log-update")).createLogUpdate(process.stderr) : undefined);
  }

  update(progress: UploadProgress): void {
    const key = `${progress.sha256}:${progress.attempt}`;
    if (!this.startedAt.has(key)) {
      this.startedAt.set(key, { at: Date.now(), from: progress.resumedFrom });
      if (!this.live && progress.attempt > 1) process.stderr.write(`resuming ${progress.path} at ${bytes(progress.resumedFrom)} of ${bytes(progress.totalBytes)} (attempt ${progress.attempt})\n`);
    }
    const start = this.startedAt.get(key)!;
    const seconds = (Date.now() - start.at) / 1000;
    const rate = seconds > 0 ? (progress.sentBytes - start.from) / seconds : 0;
    if (progress.done) {
      const how = progress.resumedFrom === progress.totalBytes ? "already on the site" : `${seconds.toFixed(1)} s, ${bytes(rate)}/s`;
      const line = `uploaded ${progress.path} (${bytes(progress.totalBytes)}, sha256 ${progress.sha256.slice(0, 12)}…): ${how}`;
      if (this.live) {
        this.live(line);
        this.live.done();
      } else process.stderr.write(`${line}\n`);
      return;
    }
    if (!this.live || Date.now() - this.lastDraw < 100) return;
    this.lastDraw = Date.now();
    const share = progress.sentBytes / progress.totalBytes;
    const width = 30;
    const filled = Math.round(share * width);
    this.live(`uploading ${progress.path} [${"#".repeat(filled)}${" ".repeat(width - filled)}] ${(share * 100).toFixed(0).padStart(3)}%  ${bytes(progress.sentBytes)}/${bytes(progress.totalBytes)}  ${bytes(rate)}/s`);
  }
}

/** "1.5 GiB", "320.0 MiB", "12 B". */
function bytes(count: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = count;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value.toFixed(0)} ${units[0]}` : `${value.toFixed(1)} ${units[unit]}`;
}
