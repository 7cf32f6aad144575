import { randomBytes } from "node:crypto";
import { mkdir, open, rename } from "node:fs/promises";
import { dirname, join } from "node:path";

/** What a durable file holds: text, bytes, or bytes in pieces written one after another (a model, without joining it first). */
export type FileContent = Uint8Array | string | readonly Uint8Array[];

/** Writes `data` to `path` and fsyncs it. */
export async function writeSynced(path: string, data: FileContent): Promise<void> {
  const handle = await open(path, "w");
  try {
    if (typeof data === "string" || data instanceof Uint8Array) await handle.writeFile(data);
    // writeFile() from a handle appends at its position and loops until every byte is written (a single write() may write fewer).
    else for (const piece of data) await handle.writeFile(piece);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** fsyncs a folder, so that renames and creations in it survive a crash or power cut. */
export async function syncDir(path: string): Promise<void> {
  const handle = await open(path, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Replaces `path` with `data` atomically: a reader (or a site restarting after
 * SIGKILL) sees the old content or the new, never a torn file.
 */
export async function writeFileAtomic(path: string, data: FileContent): Promise<void> {
  const folder = dirname(path);
  await mkdir(folder, { recursive: true });
  const temp = join(folder, `.${randomBytes(6).toString("hex")}.tmp`);
  await writeSynced(temp, data);
  await rename(temp, path);
  await syncDir(folder);
}
