import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import type { ArtifactRef } from "../../gen/campfire/admin/v1/job.js";
import { CHUNK_BYTES } from "../shared/payload.js";

/**
 * App files at least this large travel as artifacts (UploadArtifact, then a
 * reference in the job) rather than inside the job message: the job stays
 * small, and a file may exceed the 2 GB a message can hold.
 */
export const ARTIFACT_THRESHOLD_BYTES = 1024 * 1024;

/** Bytes to upload as an artifact: their digest and size, and a way to read them from any offset. */
export interface ArtifactSource {
  /** The app file's path, for progress and errors. */
  path: string;
  ref: ArtifactRef;
  /** The bytes from `offset` on, in chunks of at most CHUNK_BYTES. */
  chunks(offset: number): AsyncIterable<Uint8Array> | Iterable<Uint8Array>;
}

/** A file on disk: hashed once, read as it is sent (never held whole). */
export async function fileSource(path: string, localPath: string): Promise<ArtifactSource> {
  const size = (await stat(localPath)).size;
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(localPath, { highWaterMark: CHUNK_BYTES })) hash.update(chunk as Buffer);
  return {
    path,
    ref: { sha256: hash.digest("hex"), sizeBytes: size },
    chunks: (offset) => (offset >= size ? [] : createReadStream(localPath, { start: offset, highWaterMark: CHUNK_BYTES })),
  };
}

/** Bytes in memory (a definition built in code): sent as views, not copies. */
export function bytesSource(path: string, bytes: Uint8Array): ArtifactSource {
  return {
    path,
    ref: { sha256: createHash("sha256").update(bytes).digest("hex"), sizeBytes: bytes.length },
    *chunks(offset) {
      for (let at = offset; at < bytes.length; at += CHUNK_BYTES) yield bytes.subarray(at, Math.min(bytes.length, at + CHUNK_BYTES));
    },
  };
}

/** Where an artifact upload stands, for progress bars: `sentBytes` counts from the start of the artifact (a resume starts past 0). */
export interface UploadProgress {
  path: string;
  sha256: string;
  totalBytes: number;
  sentBytes: number;
  /** Where the current attempt started: what the site already held. */
  resumedFrom: number;
  /** 1 for the first attempt; more after a dropped connection. */
  attempt: number;
  /** The site holds the whole artifact (uploaded now, or before). */
  done: boolean;
}
