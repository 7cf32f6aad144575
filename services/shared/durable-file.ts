import { randomBytes } from "node:crypto";
import { mkdir, open, rename } from "node:fs/promises";
import { dirname, join } from "node:path";

/** Writes `data` to `path` and fsyncs it. */
export async function writeSynced(path: string, data: Uint8Array | string): Promise<void> {
  const handle = await open(path, "w");
  try {
    await handle.writeFile(data);
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
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const folder = dirname(path);
  await mkdir(folder, { recursive: true });
  const temp = join(folder, `.${randomBytes(6).toString("hex")}.tmp`);
  await writeSynced(temp, data);
  await rename(temp, path);
  await syncDir(folder);
}
