import type { DownloadProgress } from "../session-client/session.js";

/** How far one file's transfer has come (a result file downloading, or an artifact upload, which also knows its digest). */
export type TransferProgress = DownloadProgress & { sha256?: string };

/** Files below this get no line of their own off a terminal: a result has many small files. */
const QUIET_BELOW_BYTES = 1024 * 1024;

/**
 * Shows transfers on stderr (stdout carries only results): a bar with speed
 * and ETA redrawn in place on a terminal, one line per finished (or resumed)
 * large file otherwise, so logs and CI keep a record without a flood.
 */
export class TransferView {
  private readonly startedAt = new Map<string, { at: number; from: number }>();
  private lastDraw = 0;

  private constructor(
    private readonly verbs: { doing: string; done: string },
    private readonly live: (((text: string) => void) & { done(): void; clear(): void }) | undefined,
  ) {}

  static async create(direction: "upload" | "download"): Promise<TransferView> {
    const verbs = direction === "upload" ? { doing: "uploading", done: "uploaded" } : { doing: "downloading", done: "downloaded" };
    return new TransferView(verbs, process.stderr.isTTY ? (await import("log-update")).createLogUpdate(process.stderr) : undefined);
  }

  update(progress: TransferProgress): void {
    const key = `${progress.path}:${progress.attempt}`;
    if (!this.startedAt.has(key)) {
      this.startedAt.set(key, { at: Date.now(), from: progress.resumedFrom });
      if (!this.live && progress.attempt > 1) process.stderr.write(`resuming ${progress.path} at ${bytes(progress.resumedFrom)} of ${bytes(progress.totalBytes)} (attempt ${progress.attempt})\n`);
    }
    const start = this.startedAt.get(key)!;
    const seconds = (Date.now() - start.at) / 1000;
    const rate = seconds > 0 ? (progress.bytes - start.from) / seconds : 0;
    if (progress.done) {
      if (!this.live && progress.totalBytes < QUIET_BELOW_BYTES) return;
      const how = progress.resumedFrom === progress.totalBytes ? "already on the site" : `${seconds.toFixed(1)} s, ${bytes(rate)}/s`;
      const digest = progress.sha256 ? `, sha256 ${progress.sha256.slice(0, 12)}…` : "";
      const line = `${this.verbs.done} ${progress.path} (${bytes(progress.totalBytes)}${digest}): ${how}`;
      if (this.live) {
        this.live(line);
        this.live.done();
      } else process.stderr.write(`${line}\n`);
      return;
    }
    if (!this.live || Date.now() - this.lastDraw < 100) return;
    this.lastDraw = Date.now();
    const share = progress.totalBytes ? progress.bytes / progress.totalBytes : 1;
    const width = 30;
    const filled = Math.round(share * width);
    const eta = rate > 0 ? `ETA ${clock((progress.totalBytes - progress.bytes) / rate)}` : "ETA -";
    this.live(
      `${this.verbs.doing} ${progress.path} [${"#".repeat(filled)}${" ".repeat(width - filled)}] ${(share * 100).toFixed(0).padStart(3)}%  ${bytes(progress.bytes)}/${bytes(progress.totalBytes)}  ${bytes(rate)}/s  ${eta}`,
    );
  }
}

/** "1:05", "12:00:03". */
function clock(seconds: number): string {
  const s = Math.ceil(seconds);
  const parts = [Math.floor(s / 3600), Math.floor(s / 60) % 60, s % 60];
  return (parts[0] ? parts : parts.slice(1)).map((part, index) => (index === 0 ? String(part) : String(part).padStart(2, "0"))).join(":");
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
